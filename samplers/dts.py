"""DTS: Draft-and-Target Sampling (training-free speculative sampling with one model).

A coarse Euler trajectory (the *draft*, stride `draft_stride` on the fine sigma grid) runs ahead for up to
`chunk` steps; then every drafted segment is re-solved at once from its draft starting point with the fine
stride `target_stride` (the *target*, one batched model call per fine sub-step). The first draft state that
lies further than the round's threshold from its target is rejected; sampling resumes from that target state.
Sequential model calls per round: K drafts + ceil(draft_stride / target_stride) target sub-steps, instead of
K * draft_stride / target_stride for plain Euler on the target grid. See DESIGN.md, "DTS: exact semantics".

Plain torch, k-diffusion conventions: `model(x, sigma_vector [B], **extra_args)` returns the denoised
estimate D(x, sigma); sigmas are noise levels (not timesteps x1000), a decreasing 1-D tensor.
"""
import math
import time

import torch

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
        if not torch.is_tensor(sigmas) or sigmas.ndim != 1:
            raise ValueError("sigmas must be a 1-D tensor of noise levels "
                             f"(got {type(sigmas).__name__} with shape {tuple(getattr(sigmas, 'shape', ()))})")
        if len(sigmas) < 2:
            raise ValueError(f"sigmas must hold at least 2 values (a start and an end), got {len(sigmas)}")
        steps_down = sigmas[1:] < sigmas[:-1]
        if not bool(steps_down.all()):
            i = int((~steps_down).nonzero()[0])
            raise ValueError(f"sigmas must be strictly decreasing (sigmas[{i}] = {float(sigmas[i]):g}, "
                             f"sigmas[{i + 1}] = {float(sigmas[i + 1]):g})")
        if float(sigmas[-1]) < 0:
            raise ValueError(f"sigmas must be >= 0 (last value {float(sigmas[-1]):g})")


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


def _progress_bar(total, disable):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is optional outside ComfyUI
        return None
    return tqdm(total=total, disable=disable)


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
    check_options(sigmas, draft_stride=draft_stride, target_stride=target_stride, chunk=chunk, threshold=threshold,
                  increment=increment, metric=metric, max_parallel=max_parallel)
    extra_args = {} if extra_args is None else extra_args
    started = time.perf_counter()
    num_steps = len(sigmas) - 1
    batch = x.shape[0]
    ones = x.new_ones([batch])
    group_size = 1 if not parallel_target else max_parallel  # draft states per target call; None: all
    calls = evals = 0
    accepted_per_round, drafted_per_round, thresholds, positions, distances = [], [], [], [], []

    def evaluate(states, sigma_vector):
        nonlocal calls, evals
        if interrupt is not None:
            interrupt()
        calls += 1
        evals += states.shape[0]
        return model(states, sigma_vector, **extra_args)

    progress = _progress_bar(num_steps, disable)
    position, round_index = 0, 0
    while position < num_steps:
        # Draft: sequential coarse steps from the accepted state.
        grid = [position]
        while len(grid) <= chunk and grid[-1] < num_steps:
            grid.append(min(grid[-1] + draft_stride, num_steps))
        num_drafts = len(grid) - 1
        drafts = [x]
        for k in range(num_drafts):
            sigma, sigma_next = sigmas[grid[k]] * ones, sigmas[grid[k + 1]] * ones
            drafts.append(euler_step(drafts[k], evaluate(drafts[k], sigma), sigma, sigma_next))

        # Target: every segment re-solved with the fine stride, all segments in one call per sub-step.
        targets = drafts[:num_drafts]
        target_positions = grid[:num_drafts]
        target_denoised = [None] * num_drafts
        while True:
            active = [k for k in range(num_drafts) if target_positions[k] < grid[k + 1]]
            if not active:
                break
            size = len(active) if group_size is None else group_size
            for start in range(0, len(active), size):
                group = active[start:start + size]
                nexts = [min(target_positions[k] + target_stride, grid[k + 1]) for k in group]
                states = torch.cat([targets[k] for k in group])
                sigma = torch.cat([sigmas[target_positions[k]] * ones for k in group])
                sigma_next = torch.cat([sigmas[n] * ones for n in nexts])
                denoised = evaluate(states, sigma)
                stepped = euler_step(states, denoised, sigma, sigma_next)
                for slot, (k, n) in enumerate(zip(group, nexts)):
                    targets[k] = stepped[slot * batch:(slot + 1) * batch]
                    target_denoised[k] = denoised[slot * batch:(slot + 1) * batch]
                    target_positions[k] = n

        # Accept: the batch advances to the first segment that some sample rejects (inclusive), else all.
        # Round 0 skips the increment so that an infinite increment does not give 0 * inf = nan.
        tau = float(threshold) + (round_index * float(increment) if round_index else 0.0)
        round_distances = [draft_target_distance(drafts[k + 1], targets[k], metric) for k in range(num_drafts)]
        rejected = [bool((d > tau).any()) for d in round_distances]
        advance = rejected.index(True) + 1 if any(rejected) else num_drafts
        x = targets[advance - 1]
        position = grid[advance]

        accepted_per_round.append(advance - 1 if rejected[advance - 1] else advance)
        drafted_per_round.append(num_drafts)
        thresholds.append(tau)
        positions.append(position)
        distances.append([float(d.max()) for d in round_distances])
        if progress is not None:
            progress.update(position - grid[0])
        if callback is not None:
            callback({'x': x, 'i': position - 1, 'sigma': sigmas[position], 'sigma_hat': sigmas[position],
                      'denoised': target_denoised[advance - 1], 'position': position})
        round_index += 1

    if progress is not None:
        progress.close()
    if stats is not None:
        stats.update(
            calls=calls, evals=evals, rounds=round_index, accepted=accepted_per_round, drafted=drafted_per_round,
            thresholds=thresholds, positions=positions, distances=distances, fine_steps=num_steps,
            target_grid_calls=target_grid_steps(num_steps, draft_stride, target_stride),
            draft_stride=draft_stride, target_stride=target_stride, chunk=chunk, threshold=float(threshold),
            increment=float(increment), metric=metric, max_parallel=max_parallel,
            parallel_target=bool(parallel_target), batch=batch, seconds=time.perf_counter() - started)
    return x
