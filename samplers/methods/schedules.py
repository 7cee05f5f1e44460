"""Sigma conventions, one validator each, and the schedules the references use.

- Noise levels (k-diffusion, DTS): a 1-D tensor `s[0] > s[1] > ... > s[N] >= 0`, ComfyUI's SIGMAS.
- Flow-matching block sigmas (SDVG): one model call per sigma, each in (0, 1] and strictly decreasing; a trailing
  0 (ComfyUI-style schedules end with it) is dropped, since the last call's x0 is the block. Timestep = sigma x 1000.
- Block schedules (SDVG, `BlockSchedule`): per model call the sigma that turns the flow prediction into x0 (and
  re-noises before that call) and the timestep the model is given. They differ only where a reference says so:
  Krea's last step runs the model at timestep 0 but converts with sigma 0.00498 (its scheduler's nearest entry).
"""
import math
from typing import NamedTuple, Optional

import torch


def flow_scheduler_table(shift=5.0, num_train_timesteps=1000):
    """(sigmas, timesteps) [1000] float32 of Self-Forcing's / Krea's FlowMatchScheduler(shift, sigma_min 0,
    extra_one_step) after set_timesteps(1000, training=True): s_i = linspace(1, 0, 1001)[i], sigma_i = shift s_i /
    (1 + (shift - 1) s_i), t_i = 1000 sigma_i, all in float32 as the references compute them."""
    s = torch.linspace(1.0, 0.0, num_train_timesteps + 1, dtype=torch.float32)[:-1]
    sigmas = shift * s / (1 + (shift - 1) * s)
    return sigmas, sigmas * num_train_timesteps


def scheduler_sigma(timestep):
    """The sigma the references use for a model timestep: the table entry whose timestep is nearest (so timestep 0
    gives 0.004980080295354128, not 0)."""
    sigmas, timesteps = flow_scheduler_table()
    return float(sigmas[int(torch.argmin((timesteps.double() - float(timestep)).abs()))])


class BlockSchedule(NamedTuple):
    """One block's steps: sigmas[j] (x0 = x - sigmas[j] v, re-noising to sigmas[j] before step j >= 1) and the
    model's timestep input at step j (x1000 units; None = 1000 x sigma, computed in float32 as the runner does)."""
    sigmas: tuple
    timesteps: Optional[tuple] = None


_TABLE_SIGMAS, _TABLE_TIMESTEPS = flow_scheduler_table()
# Both references take table entries 0, 250, 500, 750 (Self-Forcing's warped [1000, 750, 500, 250]; Krea's 5-point
# linspace 1000 .. 0 turned into table indices, followed by an appended timestep 0).
_WARPED = (0, 250, 500, 750)
# Self-Forcing's four denoising steps: the float32 table values 1, 0.9375, 0.8333333134651184, 0.625.
SELF_FORCING_SIGMAS = tuple(float(_TABLE_SIGMAS[i]) for i in _WARPED)
# Krea realtime's five steps: timesteps 1000, 937.5, 833.33.., 625, 0; the last one converts with sigma 0.00498.
KREA_REALTIME_SCHEDULE = BlockSchedule(SELF_FORCING_SIGMAS + (scheduler_sigma(0.0),),
                                       tuple(float(_TABLE_TIMESTEPS[i]) for i in _WARPED) + (0.0,))
SCHEDULES = {"self_forcing": BlockSchedule(SELF_FORCING_SIGMAS), "krea_realtime": KREA_REALTIME_SCHEDULE}


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


def check_block_schedule(schedule, name="schedule"):
    """A BlockSchedule from a preset name (a key of SCHEDULES), a BlockSchedule, or sigmas (numbers or text, see
    check_flow_sigmas; timestep = 1000 x sigma). Errors start with `name`."""
    if isinstance(schedule, str) and schedule.strip() in SCHEDULES:
        return SCHEDULES[schedule.strip()]
    if isinstance(schedule, BlockSchedule):
        sigmas = check_flow_sigmas(schedule.sigmas, name)
        if len(sigmas) != len(schedule.sigmas):
            raise ValueError(f"{name}: a BlockSchedule's sigmas must not end with 0 (got {list(schedule.sigmas)})")
        if schedule.timesteps is None:
            return BlockSchedule(tuple(sigmas))
        timesteps = [float(t) for t in schedule.timesteps]
        if len(timesteps) != len(sigmas) or not all(math.isfinite(t) and 0.0 <= t <= 1000.0 for t in timesteps):
            raise ValueError(f"{name}: expected one timestep in [0, 1000] per sigma, got {timesteps} for {sigmas}")
        if any(b > a for a, b in zip(timesteps, timesteps[1:])):
            raise ValueError(f"{name}: timesteps must not increase, got {timesteps}")
        return BlockSchedule(tuple(sigmas), tuple(timesteps))
    return BlockSchedule(tuple(check_flow_sigmas(schedule, name)))
