"""Plain torch, never ComfyUI: `methods/` holds DTS and SDVG, `models/` the networks they run."""
