"""DTS: Draft-and-Target Sampling (training-free speculative sampling with one model).

A coarse Euler trajectory (the *draft*, stride `draft_stride` on the fine sigma grid) runs ahead for up to
`chunk` steps; then every drafted segment is re-solved at once from its draft starting point with the fine
stride `target_stride` (the *target*, one batched model call per fine sub-step). The first draft state that
lies further than the round's threshold from its target is rejected; sampling resumes from that target state.
Sequential model calls per round: K drafts + ceil(draft_stride / target_stride) target sub-steps, instead of
K * draft_stride / target_stride for plain Euler on the target grid. docs/dts.md, "Exact semantics", states
every rule.

Plain torch, k-diffusion conventions: `model(x, sigma_vector [B], **extra_args)` returns the denoised
estimate D(x, sigma); sigmas are noise levels (not timesteps x1000), a decreasing 1-D tensor.
"""
import math
import time

import torch
from tqdm.auto import trange

from .schedules import check_noise_levels

METRICS = ("l2", "rms")


def check_options(sigmas=None, *, draft_stride=10, target_stride=2, chunk=6, threshold=10.0, increment=1.5,
                  metric="l2", max_parallel=None):
    """Raise ValueError/TypeError naming the first bad input. `sigmas` may be None (checked later)."""
    for name, value in (("draft_stride", draft_stride), ("target_stride", target_stride), ("chunk", chunk)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an integer (got {value!r})")
        if value < 1:
            raise ValueError(f"{name} must be >= 1 (got {value})")
    if target_stride > draft_stride:
        raise ValueError(f"target_stride must be <= draft_stride (got target_stride {target_stride} > "
                         f"draft_stride {draft_stride}): the target verifies the draft with smaller steps")
    for name, value in (("threshold", threshold), ("increment", increment)):
        value = float(value)
        if math.isnan(value) or value < 0:
            raise ValueError(f"{name} must be a number >= 0 (got {value})")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS} (got {metric!r})")
    if max_parallel is not None:
        if isinstance(max_parallel, bool) or not isinstance(max_parallel, int) or max_parallel < 1:
            raise ValueError(f"max_parallel must be None (no cap) or an integer >= 1 (got {max_parallel!r})")
    if sigmas is not None:
        check_noise_levels(sigmas)


def euler_step(x, denoised, sigma, sigma_next):
    """One Euler step of the probability-flow ODE, per sample.

    x, denoised: [n, ...]; sigma, sigma_next: [n]. Where sigma_next == 0 the step lands on `denoised` exactly.
    """
    shape = (-1,) + (1,) * (x.ndim - 1)
    sigma, sigma_next = sigma.reshape(shape), sigma_next.reshape(shape)
    stepped = x + (sigma_next - sigma) * (x - denoised) / sigma
    return torch.where(sigma_next == 0, denoised, stepped)


def draft_target_distance(draft, target, metric="l2"):
    """Per-sample distance [n] (float32) between two batches [n, ...].

    l2: the L2 norm of the sample's whole difference tensor (the paper's choice; grows with resolution and frames).
    rms: l2 / sqrt(values per sample), a per-value root mean square that means the same at any size.
    """
    l2 = (draft - target).flatten(1).float().norm(dim=1)
    if metric == "l2":
        return l2
    if metric == "rms":
        return l2 / math.sqrt(draft[0].numel())
    raise ValueError(f"metric must be one of {METRICS} (got {metric!r})")


def target_grid_steps(num_steps, draft_stride, target_stride):
    """Model calls plain Euler needs on the target grid DTS approximates (each draft segment cut by target_stride)."""
    full, rest = divmod(num_steps, draft_stride)
    return full * math.ceil(draft_stride / target_stride) + math.ceil(rest / target_stride)


def format_stats(stats):
    """One console line summarising a run's `stats` dict (as filled by sample_dts)."""
    accepted = ",".join(str(a) for a in stats["accepted"])
    line = (f"DTS: {stats['fine_steps']} fine steps, strides {stats['draft_stride']}/{stats['target_stride']}, "
            f"chunk {stats['chunk']}: {stats['rounds']} rounds, {stats['calls']} sequential model calls "
            f"(target grid alone: {stats['target_grid_calls']}), {stats['evals']} evaluations, "
            f"drafts accepted per round [{accepted}], {stats['seconds']:.2f} s")
    if not stats.get("parallel_target", True):
        reasons = stats.get("sequential_target_reasons") or []
        line += "; target positions one at a time" + (f" ({', '.join(reasons)})" if reasons else "")
    return line


# --- the three phases of a round ---------------------------------------------------------------------------------

def check_finite(state, phase, sigmas, start, end):
    """Stop, naming the model call, its sigma and its fine step, when a step start -> end left NaN or inf in
    `state`: a distance to a non-finite state is NaN, which no threshold rejects."""
    if not bool(torch.isfinite(state).all()):
        raise FloatingPointError(
            f"DTS: the model's {phase} step at sigma {float(sigmas[start]):g} (fine step {start} of {len(sigmas) - 1}, "
            f"to step {end}) gave a non-finite state (NaN or inf). Check the model and its precision (fp16 "
            "overflow?) and the schedule (every sigma finite).")


def draft(evaluate, x, sigmas, grid):
    """Sequential coarse Euler steps from x along the fine positions `grid` [p, q1, ..., qK]: [x, d1, ..., dK]."""
    ones = x.new_ones([x.shape[0]])
    states = [x]
    for k in range(len(grid) - 1):
        sigma, sigma_next = sigmas[grid[k]] * ones, sigmas[grid[k + 1]] * ones
        states.append(euler_step(states[k], evaluate(states[k], sigma), sigma, sigma_next))
        check_finite(states[-1], "draft", sigmas, grid[k], grid[k + 1])
    return states


def verify(evaluate, starts, sigmas, grid, target_stride, group_size):
    """Re-solve every segment grid[k] -> grid[k + 1] from starts[k] with stride `target_stride`, all segments in
    one batched call per sub-step (at most `group_size` segments per call; None: all).

    Returns (targets [t1, ..., tK], denoised estimates that led to each)."""
    batch = starts[0].shape[0]
    ones = starts[0].new_ones([batch])
    count = len(starts)
    targets, positions, denoised_at = list(starts), list(grid[:count]), [None] * count
    while True:
        active = [k for k in range(count) if positions[k] < grid[k + 1]]
        if not active:
            return targets, denoised_at
        size = len(active) if group_size is None else group_size
        for first in range(0, len(active), size):
            group = active[first:first + size]
            nexts = [min(positions[k] + target_stride, grid[k + 1]) for k in group]
            states = torch.cat([targets[k] for k in group])
            sigma = torch.cat([sigmas[positions[k]] * ones for k in group])
            sigma_next = torch.cat([sigmas[n] * ones for n in nexts])
            denoised = evaluate(states, sigma)
            stepped = euler_step(states, denoised, sigma, sigma_next)
            for slot, (k, n) in enumerate(zip(group, nexts)):
                targets[k] = stepped[slot * batch:(slot + 1) * batch]
                check_finite(targets[k], "target", sigmas, positions[k], n)
                denoised_at[k] = denoised[slot * batch:(slot + 1) * batch]
                positions[k] = n


def accept(drafts, targets, tau, metric):
    """How many segments the batch advances: up to and including the first one some sample rejects (distance
    > tau), else all. Returns (advance, accepted drafts, per-segment distances: max over the batch)."""
    distances = [draft_target_distance(d, t, metric) for d, t in zip(drafts[1:], targets)]
    rejected = [bool((d > tau).any()) for d in distances]
    advance = rejected.index(True) + 1 if any(rejected) else len(targets)
    accepted = advance - 1 if rejected[advance - 1] else advance
    return advance, accepted, [float(d.max()) for d in distances]


@torch.no_grad()
def sample_dts(model, x, sigmas, extra_args=None, callback=None, disable=None, *, draft_stride=10, target_stride=2,
               chunk=6, threshold=10.0, increment=1.5, metric="l2", max_parallel=None, parallel_target=True,
               stats=None, interrupt=None):
    """Draft-and-Target Sampling on the fine sigma grid `sigmas` [N + 1]; returns the final x (shape of x).

    model(x [n, ...], sigma [n], **extra_args) -> denoised estimate [n, ...]. Target calls hold several draft
    states of the batch at once (n = K * B) with per-sample sigmas, so extra_args must not carry tensors with
    batch B, unless parallel_target=False.

    draft_stride, target_stride: steps of the fine grid per draft step / per target step (1 <= target <= draft).
    chunk: draft steps per round. threshold, increment: round r accepts a draft state when its distance to the
        target state is <= threshold + r * increment. metric: "l2" (paper) or "rms" (l2 / sqrt(values per sample)).
    max_parallel: at most this many draft states per target call (the batch is split; the result is the same).
    parallel_target=False: every target call holds one draft state (batch B, one sigma), for models whose
        conditioning reads only the first sigma of a batch.
    stats: a dict that receives calls (sequential model calls), evals (per-sample evaluations), rounds,
        accepted (draft states accepted per round), drafted (per round), thresholds (per round), positions
        (accepted fine position after each round), distances (per round, per draft state, max over the batch),
        fine_steps (N), target_grid_calls, the options, seconds.
    interrupt: called with no argument before every model call; raise from it to cancel.
    callback({'x', 'i', 'sigma', 'sigma_hat', 'denoised', 'position'}) once per round: i = new accepted position
        - 1 (monotone, ends at N - 1 as k-diffusion's last step), x the accepted state at sigma = sigmas[position],
        denoised the target's last estimate that led there.
    """
    options = dict(draft_stride=draft_stride, target_stride=target_stride, chunk=chunk, threshold=threshold,
                   increment=increment, metric=metric, max_parallel=max_parallel)
    check_options(sigmas, **options)
    extra_args = {} if extra_args is None else extra_args
    started = time.perf_counter()
    num_steps = len(sigmas) - 1
    counts = dict(calls=0, evals=0)
    rounds = dict(accepted=[], drafted=[], thresholds=[], positions=[], distances=[])

    def evaluate(states, sigma_vector):
        if interrupt is not None:
            interrupt()
        counts["calls"] += 1
        counts["evals"] += states.shape[0]
        return model(states, sigma_vector, **extra_args)

    progress = trange(num_steps, disable=disable)
    position = 0
    while position < num_steps:
        grid = [position]
        while len(grid) <= chunk and grid[-1] < num_steps:
            grid.append(min(grid[-1] + draft_stride, num_steps))
        drafts = draft(evaluate, x, sigmas, grid)
        targets, denoised = verify(evaluate, drafts[:-1], sigmas, grid, target_stride,
                                   1 if not parallel_target else max_parallel)
        # Round 0 skips the increment so that an infinite increment does not give 0 * inf = nan.
        round_index = len(rounds["positions"])
        tau = float(threshold) + (round_index * float(increment) if round_index else 0.0)
        advance, accepted, distances = accept(drafts, targets, tau, metric)
        x, position = targets[advance - 1], grid[advance]
        for key, value in zip(rounds, (accepted, len(targets), tau, position, distances)):
            rounds[key].append(value)
        progress.update(position - grid[0])
        if callback is not None:
            callback({'x': x, 'i': position - 1, 'sigma': sigmas[position], 'sigma_hat': sigmas[position],
                      'denoised': denoised[advance - 1], 'position': position})
    progress.close()
    if stats is not None:
        stats.update(counts, **rounds, rounds=len(rounds["positions"]), fine_steps=num_steps,
                     target_grid_calls=target_grid_steps(num_steps, draft_stride, target_stride),
                     **dict(options, threshold=float(threshold), increment=float(increment)),
                     parallel_target=bool(parallel_target), batch=x.shape[0], seconds=time.perf_counter() - started)
    return x
