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
    auto = stats.get("auto")
    if auto:
        chosen = f"DTS, chunk {auto['chunks'][-1]}" if auto["choice"] == "dts" else "plain Euler"
        line += f"; auto: {chosen} ({auto['reason']})"
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


# --- auto mode: measure the hardware, choose the chunk or plain Euler ----------------------------------------------

AUTO_BUDGET = 0.05  # at most this share of plain Euler's (estimated) time is spent on measuring probes
AUTO_MARGIN = 0.10  # DTS is chosen only when its expected time is this much below plain Euler's
AUTO_REMEMBERED = 3  # a batch size measured in this many earlier runs (auto_memory) is not probed again
AUTO_REMEMBER_LAST = 9  # cost ratios kept per batch size in auto_memory


class AutoPlanner:
    """What auto mode measures and decides (plain arithmetic; sample_dts feeds it the timed model calls).

    Costs are kept per call size m (draft positions in one call, batch m * B): c(m) is the median of the timed
    calls of that size. A size not measured is interpolated linearly between measured sizes and extrapolated
    in proportion beyond the largest (c(m) = c(M) * m / M: batching is assumed to stop helping there).

    The plan for a round starting at an accepted position: plain Euler over one draft segment while c(1) is being
    measured (the first segment, `n = ceil(draft_stride / target_stride)` single calls: useful work), then at most
    two discarded probe calls (2 positions, then the largest chunk allowed) as long as their estimated cost fits
    in AUTO_BUDGET of plain Euler's whole run, then a choice. Expected seconds per draft segment:
    plain Euler `n * c(1)`; DTS with chunk K `(K * c(1) + n * ceil(K / g) * c(g)) / E[advance]`, g = min(K, cap),
    E[advance] = 1 + p + ... + p^(K-1) with p the observed share of judged drafts accepted (1 before any
    round; a round that rejects counts its rejected draft as judged, Laplace-style: (accepted + 1) / (judged + 1),
    counting the drafts of earlier runs with the same options when the memory holds them).
    DTS is chosen when its best K is AUTO_MARGIN below plain Euler; otherwise, and whenever a later round's
    re-plan says so, plain Euler runs for the rest of the grid (once chosen, for good). While no draft has been
    judged (p is only its prior), the round has chunk 2: if its drafts are rejected, it loses at most two draft
    calls and the second position of n target calls. A one-at-a-time target
    (K calls per sub-step of batch B) can never beat plain Euler, so it is never chosen.

    memory: what earlier runs of the same model and input shape measured (sample_dts's auto_memory), or None:
    {"cost_ratios": {size m: [c(m) / c(1)]}, "acceptance": {options: [accepted, judged]}}. A size with
    AUTO_REMEMBERED ratios there is not probed: c(m) = c(1) x their median (c(1) is always this run's own). The
    drafts judged in earlier runs with the same `options` (strides, threshold, increment, metric) count in p.
    `remember()` adds this run's measurements.
    """

    def __init__(self, *, num_steps, draft_stride, target_stride, chunk, max_parallel, parallel_target, memory=None,
                 options=None):
        self.per_segment = math.ceil(draft_stride / target_stride)
        self.euler_calls = target_grid_steps(num_steps, draft_stride, target_stride)
        self.chunk_cap = chunk
        self.group_cap = chunk if max_parallel is None else min(chunk, max_parallel)
        self.parallel_target = parallel_target
        self.samples = {}  # call size m -> [seconds]
        self.memory = memory
        self.options = options
        self.used_memory = set()  # call sizes whose cost came from the memory in some decision
        self.accepted = 0
        self.judged = 0
        self.probe_seconds = 0.0
        self.probe_calls = 0
        self.choice = None  # None (measuring), "dts" or "euler"
        self.reason = ""
        self.chunks = []  # chunk of every DTS round
        self.euler_segments = 0
        self.expected = {}

    def observe(self, size, seconds):
        self.samples.setdefault(size, []).append(float(seconds))

    def remembered(self):
        """{size: median cost ratio} of the sizes this run takes from earlier runs instead of probing."""
        if not self.memory:
            return {}
        return {m: sorted(r)[len(r) // 2] for m, r in self.memory.get("cost_ratios", {}).items()
                if len(r) >= AUTO_REMEMBERED and m not in self.samples}

    def known(self):
        """{size: seconds} measured in this run, plus the remembered sizes scaled by this run's c(1)."""
        known = {m: sorted(v)[len(v) // 2] for m, v in self.samples.items() if v}
        if 1 in known:
            known.update({m: known[1] * ratio for m, ratio in self.remembered().items()})
        return known

    def remember(self):
        """Add this run's measured cost ratios c(m) / c(1) (the last AUTO_REMEMBER_LAST per size) and its judged
        drafts to the memory."""
        if self.memory is None:
            return
        if self.judged:
            counts = self.memory.setdefault("acceptance", {}).setdefault(self.options, [0, 0])
            counts[0] += self.accepted
            counts[1] += self.judged
        if 1 not in self.samples:
            return
        single = self.cost(1)
        for m, seconds in self.samples.items():
            if m != 1 and seconds and single > 0:
                ratios = self.memory.setdefault("cost_ratios", {}).setdefault(m, [])
                ratios.append(sorted(seconds)[len(seconds) // 2] / single)
                del ratios[:-AUTO_REMEMBER_LAST]

    def cost(self, size):
        """Estimated seconds of a call holding `size` draft positions (None when nothing is measured)."""
        known = self.known()
        if not known:
            return None
        if size in known:
            return known[size]
        below = [m for m in known if m < size]
        above = [m for m in known if m > size]
        if below and above:
            lo, hi = max(below), min(above)
            return known[lo] + (known[hi] - known[lo]) * (size - lo) / (hi - lo)
        if below:
            top = max(below)
            return known[top] * size / top
        return known[min(above)]  # smaller than every measured size: at least as cheap, assume no cheaper

    def earlier_drafts(self):
        """(accepted, judged) drafts of earlier runs with the same options, from the memory."""
        return tuple((self.memory or {}).get("acceptance", {}).get(self.options, (0, 0)))

    def acceptance(self):
        accepted, judged = self.earlier_drafts()
        return (self.accepted + accepted + 1) / (self.judged + judged + 1)

    def dts_seconds(self, chunk):
        """Expected seconds per draft segment of DTS with this chunk."""
        group = min(chunk, self.group_cap)
        p = self.acceptance()
        advance = sum(p ** k for k in range(chunk))
        round_seconds = chunk * self.cost(1) + self.per_segment * math.ceil(chunk / group) * self.cost(group)
        return round_seconds / advance

    def next_probe(self):
        """The size of the next probe call, or None (measured enough, or the budget does not allow it)."""
        if (self.choice is not None or 1 not in self.samples or self.group_cap < 2 or self.per_segment < 2
                or not self.parallel_target):
            return None
        budget = AUTO_BUDGET * self.euler_calls * self.cost(1)
        known = self.known()
        for size in sorted({2, self.group_cap}):
            if size in known:
                continue
            if len(known) == 2 and self.cost(2) >= 2 * (1 - AUTO_MARGIN) * self.cost(1):
                return None  # a second position costs about a second call: batching cannot pay
            if self.probe_seconds + self.cost(size) <= budget:
                return size
            return None
        return None

    def decide(self):
        """Choose (and record) "dts" with a chunk, or "euler". Returns the chunk, or None for plain Euler."""
        if self.choice == "euler":
            return None
        if not self.parallel_target:
            return self.fall_back("the target must run one draft position per call here, and a one-at-a-time "
                                  "target never beats plain Euler")
        if self.per_segment < 2 or self.chunk_cap < 2:
            return self.fall_back("draft_stride / target_stride or chunk leave nothing to batch")
        if len(self.known()) < 2:
            return self.fall_back("the measuring budget did not allow a batched probe call")
        euler = self.per_segment * self.cost(1)
        options = {chunk: self.dts_seconds(chunk) for chunk in range(2, self.chunk_cap + 1)}
        # the largest chunk among (numerically) tied ones: a larger batch is what gets measured next
        fastest = min(options.values())
        best = max(chunk for chunk, seconds in options.items() if seconds <= fastest * (1 + 1e-9))
        self.expected = dict(euler=euler, dts=options[best], chunk=best)
        remembered = self.remembered()
        self.used_memory.update(remembered)
        ratios = ", ".join(f"{m}: {self.cost(m) / self.cost(1):.2f}" for m in sorted(self.known()))
        if remembered:
            ratios += f" ({', '.join(str(m) for m in sorted(remembered))} remembered from earlier runs)"
        if options[best] > (1 - AUTO_MARGIN) * euler:
            return self.fall_back(f"batched calls cost {ratios} single calls; the best chunk {best} would take "
                                  f"{options[best] / euler:.2f}x plain Euler's time per segment (acceptance "
                                  f"{self.acceptance():.2f})")
        self.choice = "dts"
        self.reason = (f"batched calls cost {ratios} single calls; chunk {best} expected at "
                       f"{options[best] / euler:.2f}x plain Euler's time per segment (acceptance "
                       f"{self.acceptance():.2f})")
        if self.judged_so_far() == 0:  # p is only the prior: measure it with the cheapest round first
            self.reason += "; a first round of chunk 2 measures the acceptance"
            return 2
        return best

    def judged_so_far(self):
        """Drafts judged in this run and, with the same options, in the earlier runs of the memory."""
        return self.judged + self.earlier_drafts()[1]

    def fall_back(self, reason):
        self.choice = "euler"
        self.reason = "plain Euler on the target grid: " + reason
        return None

    def stats(self):
        if self.choice is None:  # the schedule ended inside the measuring segment
            self.fall_back("the schedule ended within the first (measuring) draft segment")
        known = {m: self.cost(m) for m in sorted(self.known())}
        return dict(choice=self.choice, reason=self.reason, chunks=list(self.chunks),
                    remembered=sorted(self.used_memory),
                    euler_segments=self.euler_segments, probe_calls=self.probe_calls,
                    probe_seconds=self.probe_seconds, acceptance=self.acceptance(),
                    call_seconds={str(m): c for m, c in known.items()},
                    cost_ratios={str(m): c / known[1] for m, c in known.items()} if 1 in known else {},
                    expected=dict(self.expected))


def euler_segment(evaluate, x, sigmas, start, end, target_stride):
    """Plain Euler from fine position `start` to `end` with stride target_stride, one call per step (exactly
    the target of one segment with one draft position per call: what threshold 0 gives). Returns (x, denoised)."""
    targets, denoised = verify(evaluate, [x], sigmas, [start, end], target_stride, 1)
    return targets[0], denoised[0]


def probe(evaluate, x, sigmas, position, size):
    """A discarded batched call: `size` copies of x at the current sigma (measures what batching costs)."""
    states = torch.cat([x] * size)
    evaluate(states, sigmas[position] * states.new_ones([states.shape[0]]))


def timed_model(model, planner, clock, batch):
    """`model`, reporting every call's seconds and size (draft positions = call batch / batch) to the planner."""
    if planner is None:
        return model

    def call(states, sigma_vector, **extra_args):
        before = clock()
        out = model(states, sigma_vector, **extra_args)
        planner.observe(states.shape[0] // batch, clock() - before)
        return out

    return call


def auto_plan(planner, evaluate, x, sigmas, position, draft_stride, target_stride, clock):
    """Auto mode before a round: probe while measuring, then choose. Returns (chunk, x, position, denoised):
    chunk None when plain Euler was run over one draft segment (x, position, denoised: where it ended)."""
    if planner.choice is None and 1 in planner.samples:
        size = planner.next_probe()
        while size is not None:
            spent = clock()
            probe(evaluate, x, sigmas, position, size)
            planner.probe_calls += 1
            planner.probe_seconds += clock() - spent
            size = planner.next_probe()
    chunk = planner.decide() if 1 in planner.samples else None
    if chunk is not None:
        planner.chunks.append(chunk)
        return chunk, x, position, None
    end = min(position + draft_stride, len(sigmas) - 1)
    x, denoised = euler_segment(evaluate, x, sigmas, position, end, target_stride)
    planner.euler_segments += 1
    return None, x, end, denoised


def dts_round(evaluate, x, sigmas, position, chunk, rounds, options, parallel_target):
    """One round from the accepted state (position, x): draft up to `chunk` coarse steps, verify every segment in
    batched target calls, accept up to the first rejection. Appends the round to `rounds` (accepted, drafted,
    thresholds, positions, distances). Returns (x, position, the target's denoised estimate that led there,
    accepted drafts, judged drafts)."""
    num_steps = len(sigmas) - 1
    grid = [position]
    while len(grid) <= chunk and grid[-1] < num_steps:
        grid.append(min(grid[-1] + options["draft_stride"], num_steps))
    drafts = draft(evaluate, x, sigmas, grid)
    targets, denoised = verify(evaluate, drafts[:-1], sigmas, grid, options["target_stride"],
                               1 if not parallel_target else options["max_parallel"])
    # Round 0 skips the increment so that an infinite increment does not give 0 * inf = nan.
    round_index = len(rounds["positions"])
    tau = float(options["threshold"]) + (round_index * float(options["increment"]) if round_index else 0.0)
    advance, accepted, distances = accept(drafts, targets, tau, options["metric"])
    for key, value in zip(rounds, (accepted, len(targets), tau, grid[advance], distances)):
        rounds[key].append(value)
    return targets[advance - 1], grid[advance], denoised[advance - 1], accepted, advance


@torch.no_grad()
def sample_dts(model, x, sigmas, extra_args=None, callback=None, disable=None, *, draft_stride=10, target_stride=2,
               chunk=6, threshold=10.0, increment=1.5, metric="l2", max_parallel=None, parallel_target=True,
               stats=None, interrupt=None, auto=False, clock=None, auto_memory=None):
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
    auto: measure while sampling what a batched target call costs against a single one and run DTS with the
        chunk (at most `chunk`) that minimises the expected wall time, or plain Euler on the target grid (exactly
        the threshold-0 result) when batching does not pay (AutoPlanner says how). stats["auto"] says what it
        chose and why. clock: the time source auto mode measures with (default time.perf_counter).
    auto_memory: a dict the caller keeps per model (e.g. for a server's lifetime) in which auto mode keeps, per
        input shape, dtype and device, the batched-call cost ratios it measured (once a batch size has been
        measured in AUTO_REMEMBERED runs, later runs take its median instead of probing it again) and how many
        drafts were accepted per option set (later runs start from that acceptance instead of assuming 1).
    callback({'x', 'i', 'sigma', 'sigma_hat', 'denoised', 'position'}) once per round: i = new accepted position
        - 1 (monotone, ends at N - 1 as k-diffusion's last step), x the accepted state at sigma = sigmas[position],
        denoised the target's last estimate that led there.
    """
    options = dict(draft_stride=draft_stride, target_stride=target_stride, chunk=chunk, threshold=threshold,
                   increment=increment, metric=metric, max_parallel=max_parallel)
    check_options(sigmas, **options)
    extra_args = {} if extra_args is None else extra_args
    clock = time.perf_counter if clock is None else clock
    started = clock()
    num_steps = len(sigmas) - 1
    counts = dict(calls=0, evals=0)
    rounds = dict(accepted=[], drafted=[], thresholds=[], positions=[], distances=[])
    memory = None
    if auto and auto_memory is not None:
        memory = auto_memory.setdefault((tuple(x.shape), str(x.dtype), str(x.device)), {})
    planner = AutoPlanner(num_steps=num_steps, draft_stride=draft_stride, target_stride=target_stride, chunk=chunk,
                          max_parallel=max_parallel, parallel_target=parallel_target, memory=memory,
                          options=(draft_stride, target_stride, float(threshold), float(increment), metric)
                          ) if auto else None
    model = timed_model(model, planner, clock, x.shape[0])

    def evaluate(states, sigma_vector):
        if interrupt is not None:
            interrupt()
        counts["calls"] += 1
        counts["evals"] += states.shape[0]
        return model(states, sigma_vector, **extra_args)

    progress = trange(num_steps, disable=disable)
    position = 0
    round_chunk = chunk
    while position < num_steps:
        start = position
        if planner is not None:  # auto: measure, then DTS with the chosen chunk or plain Euler over one segment
            round_chunk, x, position, denoised = auto_plan(planner, evaluate, x, sigmas, position, draft_stride,
                                                           target_stride, clock)
        if round_chunk is not None:
            x, position, denoised, accepted, judged = dts_round(evaluate, x, sigmas, position, round_chunk, rounds,
                                                                options, parallel_target)
            if planner is not None:
                planner.accepted += accepted
                planner.judged += judged
        progress.update(position - start)
        if callback is not None:
            callback({'x': x, 'i': position - 1, 'sigma': sigmas[position], 'sigma_hat': sigmas[position],
                      'denoised': denoised, 'position': position})
    progress.close()
    if stats is not None:
        stats.update(counts, **rounds, rounds=len(rounds["positions"]), fine_steps=num_steps,
                     target_grid_calls=target_grid_steps(num_steps, draft_stride, target_stride),
                     **dict(options, threshold=float(threshold), increment=float(increment)),
                     parallel_target=bool(parallel_target), batch=x.shape[0], seconds=clock() - started)
        if planner is not None:
            stats["auto"] = planner.stats()
    if planner is not None:
        planner.remember()
    return x
