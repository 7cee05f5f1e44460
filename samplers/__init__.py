"""The methods in plain torch. Nothing here imports ComfyUI."""
