"""Sigma conventions, one validator each, and the schedules the references use.

- Noise levels (k-diffusion, DTS): a 1-D tensor `s[0] > s[1] > ... > s[N] >= 0`, ComfyUI's SIGMAS.
- Flow-matching block sigmas (SDVG): one model call per sigma, each in (0, 1] and strictly decreasing; a trailing
  0 (ComfyUI-style schedules end with it) is dropped, since the last call's x0 is the block. Timestep = sigma x 1000.
"""
import math

import torch

# Self-Forcing's four denoising steps (its timesteps 1000, 937.5, 833.3, 625 divided by 1000).
SELF_FORCING_SIGMAS = (1.0, 0.9375, 0.8333, 0.625)


def check_noise_levels(sigmas, name="sigmas"):
    """Raise ValueError naming `name` unless `sigmas` is a 1-D, strictly decreasing tensor of >= 2 values >= 0."""
    if not torch.is_tensor(sigmas) or sigmas.ndim != 1:
        raise ValueError(f"{name} must be a 1-D tensor of noise levels "
                         f"(got {type(sigmas).__name__} with shape {tuple(getattr(sigmas, 'shape', ()))})")
    if len(sigmas) < 2:
        raise ValueError(f"{name} must hold at least 2 values (a start and an end), got {len(sigmas)}")
    steps_down = sigmas[1:] < sigmas[:-1]
    if not bool(steps_down.all()):
        i = int((~steps_down).nonzero()[0])
        raise ValueError(f"{name} must be strictly decreasing ({name}[{i}] = {float(sigmas[i]):g}, "
                         f"{name}[{i + 1}] = {float(sigmas[i + 1]):g})")
    if float(sigmas[-1]) < 0:
        raise ValueError(f"{name} must be >= 0 (last value {float(sigmas[-1]):g})")


def check_flow_sigmas(sigmas, name="sigmas"):
    """Validate SDVG block sigmas (numbers, or a text "1.0, 0.9375, ..."); return them as a list of floats without
    a trailing 0. Errors start with `name`."""
    if isinstance(sigmas, str):
        pieces = [piece.strip() for piece in sigmas.replace("\n", ",").split(",") if piece.strip()]
        try:
            sigmas = [float(piece) for piece in pieces]
        except ValueError:
            raise ValueError(f"{name}: expected comma-separated numbers, got {sigmas!r}") from None
    sigmas = [float(s) for s in sigmas]
    while len(sigmas) > 1 and sigmas[-1] == 0.0:
        sigmas.pop()
    if not sigmas:
        raise ValueError(f"{name}: expected sigmas such as {', '.join(map(str, SELF_FORCING_SIGMAS))}, got an empty "
                         "list")
    if not all(math.isfinite(s) and 0.0 < s <= 1.0 for s in sigmas):
        raise ValueError(f"{name}: every sigma must be in (0, 1], got {sigmas}")
    if any(b >= a for a, b in zip(sigmas, sigmas[1:])):
        raise ValueError(f"{name}: sigmas must be strictly decreasing, got {sigmas}")
    return sigmas
