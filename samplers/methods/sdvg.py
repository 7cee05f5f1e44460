"""SDVG: speculative block-autoregressive video generation (a small causal drafter, a reward router, a large target).

Per block k (docs/sdvg.md, "Exact semantics"):
1. unless block k is forced to the target (k = 0 with `force_target_first_block`) or tau = +inf, the drafter
   proposes x0_d with its own few steps (`generate_block`);
2. x0_d is decoded with the decoder's streaming state (without advancing it) and the router scores every new frame;
   the block score is `aggregate(scores, aggregation)` (min by default: a block is as good as its worst frame);
3. score >= tau: x0_d is committed. Otherwise the target generates x0_t with its own steps and x0_t is committed.
   Committing means: the decoder advances its streaming state with the committed block, whose decoded frames go
   to the output (and to the decoded pixel buffer), and each runner commits under its protocol: self_forcing
   appends the block's K/V (t = 0 on the clean latents), krea_realtime rebuilds its cache from K context latents
   (`recompute_context`: the oldest one re-encoded by the encoder from the oldest frame of the pixel buffer).
   A krea_realtime runner does so only right before it generates a block, and a self_forcing target commits the
   blocks it skipped right before it generates again, in one forward (`BlockLoop`): an accepted block costs the
   target nothing. Every call is counted per model and kind, with the DiT FLOPs (`sdvg_stats`).

Baselines from the same code path: tau = +inf is target-only (the drafter and router are never called), tau = -inf
is draft-only (the router is skipped; block 0 still comes from the target when forced). In those two modes the
model that will never be asked again does not commit either (its cache would not be read).

Noise comes from a source the caller can replace: `noise(block_index, model_name)` returns `draw(step, shape)`,
the tensor for the block's start (step 0) and for each re-noising (step j). The default, `seeded_noise(seed)`,
gives every (block, model) pair its own torch.Generator seeded from (seed, block index, model name), so a seed gives
the same video whatever the accept decisions were, and a block that the target regenerates uses the same target
noise as in the target-only run.

The five protocols:
- runner (drafter, target): `predict(block [B,C,F,H,W], sigma[, timestep]) -> v`, `commit(clean_blocks [B,C,nF,H,W])`
  (n >= 1 blocks at once; krea_realtime: `commit(clean_blocks, context)`), attributes `committed_frames`, optional
  `protocol` (default "self_forcing") and `context_frames`, optional `forwards` / `forward_flops` for the FLOPs
  (CausalWanRunner, already `reset()` with the text context);
- decoder: `decode(latent_block) -> (frames [n,H,W,3] float 0..1, pending_state)`; `advance(pending_state)`;
- encoder (krea_realtime only): `encode(frame [H,W,3] float 0..1) -> [1, C, 1, h, w]`, the frame encoded on its own
  as a first frame, in the models' latent space;
- router: `score(frames, prompt) -> [n]` per-frame scores.
"""
import hashlib
import math
import time
from contextlib import contextmanager

import torch

from ..models.causal_runner import pixel_buffer_frames, recompute_context
from .schedules import SELF_FORCING_SIGMAS, check_block_schedule
from .timing import timed

MODEL_NAMES = ("drafter", "target")
# Mode as a user picks it (the node's widget values) -> tau override; the stats name each mode by its key in
# MODE_NAMES.
MODE_TAU = {"speculative": None, "target only": math.inf, "draft only": -math.inf}
MODE_NAMES = {"speculative": "speculative", "target only": "target_only", "draft only": "draft_only"}


def mode_of(tau):
    """The mode a tau runs: "target only" (+inf), "draft only" (-inf) or "speculative"."""
    return {math.inf: "target only", -math.inf: "draft only"}.get(tau, "speculative")


def parts_needed(tau, force_target_first_block=True):
    """Which of drafter, target, router and decoder a run calls, and which models commit (predict again):
    {"drafter", "target", "router", "decoder", "commit_drafter", "commit_target"} -> bool. The one place that
    decides it, for the loop and for the node that loads the models."""
    mode = mode_of(tau)
    scores = mode == "speculative"
    return dict(drafter=mode != "target only", target=mode != "draft only" or force_target_first_block,
                router=scores, decoder=scores, commit_drafter=mode != "target only",
                commit_target=mode != "draft only")


def aggregate(scores, how="min"):
    """Aggregate per-frame scores `[F]` into one block score (a Python float).

    how: "min" (the paper: a block is as good as its worst frame), "mean", or "quantile:q" with q in [0, 1].
    """
    scores = torch.as_tensor(scores, dtype=torch.float64).flatten()
    if scores.numel() == 0:
        raise ValueError("aggregate: scores is empty; expected at least one frame score")
    if how == "min":
        return float(scores.min())
    if how == "mean":
        return float(scores.mean())
    if isinstance(how, str) and how.startswith("quantile:"):
        try:
            q = float(how.split(":", 1)[1])
        except ValueError:
            q = float("nan")
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"aggregation {how!r}: expected 'quantile:q' with q in [0, 1]")
        return float(torch.quantile(scores, q))
    raise ValueError(f"aggregation {how!r}: expected 'min', 'mean' or 'quantile:q'")


def check_aggregation(how):
    """Raise ValueError unless `how` is an aggregation `aggregate` understands; return it."""
    aggregate([0.0], how)
    return how


def quantile_aggregation(q):
    """The aggregation string for the q-quantile, e.g. quantile_aggregation(0.1) == 'quantile:0.1'."""
    if not (isinstance(q, (int, float)) and math.isfinite(q) and 0.0 <= q <= 1.0):
        raise ValueError(f"quantile: expected a number in [0, 1], got {q!r}")
    return f"quantile:{float(q):g}"


def block_generator(seed, block_index, model):
    """A CPU torch.Generator for one (block, model) pair; model is "drafter" or "target"."""
    if model not in MODEL_NAMES:
        raise ValueError(f"model must be one of {MODEL_NAMES} (got {model!r})")
    digest = hashlib.sha256(f"sdvg:{int(seed)}:{int(block_index)}:{model}".encode()).digest()
    return torch.Generator(device="cpu").manual_seed(int.from_bytes(digest[:8], "little") & (2 ** 63 - 1))


def generator_noise(generator):
    """draw(step, shape): successive standard normal draws of a CPU torch.Generator (the step is not used)."""
    return lambda step, shape: torch.randn(shape, generator=generator)


def seeded_noise(seed):
    """The default noise source: noise(block_index, model) -> draw, one `block_generator` per (block, model)."""
    return lambda block_index, model: generator_noise(block_generator(seed, block_index, model))


def generate_block(runner, shape, sigmas, noise, interrupt=None):
    """Few-step flow-matching generation of one block attending to the runner's cache.

    shape: (B, C, F, H, W); sigmas: a schedule `check_block_schedule` accepts (decreasing noise levels in (0, 1], a
    trailing 0 ignored, or a BlockSchedule with the model's timesteps); noise: `draw(step, shape)` (or a CPU
    torch.Generator). x = sigmas[0] * draw(0); at step j the model predicts v (at timestep t_j, default
    1000 sigma_j), x0 = x - sigma_j * v; before step j + 1 the state is re-noised with fresh noise,
    x = (1 - sigma_(j+1)) * x0 + sigma_(j+1) * draw(j + 1) (ComfyUI's `lcm` rule, Self-Forcing's and Krea's
    inference). Returns the last x0 [B, C, F, H, W] float32 (on the runner's device). Commits nothing.
    """
    schedule = check_block_schedule(sigmas)
    sigmas, timesteps = schedule.sigmas, schedule.timesteps
    draw = generator_noise(noise) if isinstance(noise, torch.Generator) else noise
    device = getattr(runner, "device", None)
    x = sigmas[0] * draw(0, shape).to(device)
    x0 = None
    for index, sigma in enumerate(sigmas):
        if interrupt is not None:
            interrupt()
        if timesteps is None:
            v = runner.predict(x, sigma).float()
        else:
            v = runner.predict(x, sigma, timesteps[index]).float()
        x0 = x - sigma * v
        if index + 1 < len(sigmas):
            next_sigma = sigmas[index + 1]
            x = (1.0 - next_sigma) * x0 + next_sigma * draw(index + 1, shape).to(device)
    return x0


def protocol_of(runner):
    return getattr(runner, "protocol", "self_forcing")


def check_run(drafter, target, decoder, router, tau, num_blocks, block_shape, force_target_first_block,
              encoder=None):
    """Raise ValueError naming the first input a run cannot use; returns block_shape as a tuple of ints."""
    if math.isnan(tau):
        raise ValueError("tau must be a number or +-inf (got NaN)")
    if not isinstance(num_blocks, int) or num_blocks < 1:
        raise ValueError(f"num_blocks must be a positive integer (got {num_blocks!r})")
    block_shape = tuple(int(s) for s in block_shape)
    if len(block_shape) != 5:
        raise ValueError(f"block_shape must be (B, C, F, H, W) (got {block_shape})")
    needed = parts_needed(tau, force_target_first_block)
    if needed["decoder"] and decoder is None:
        raise ValueError("decoder is None: the router scores decoded frames, so a finite tau needs a decoder")
    if needed["router"] and router is None:
        raise ValueError("router is None: a finite tau needs a router to score the drafts")
    for name, runner in (("drafter", drafter), ("target", target)):
        if runner is None:
            if needed[name]:
                raise ValueError(f"{name} is None but this tau / force_target_first_block needs it")
            continue
        if getattr(runner, "committed_frames", 0) != 0:
            raise ValueError(f"{name} runner already holds {runner.committed_frames} committed frames: call "
                             "reset(context) before speculative_generate")
        frames_per_block = getattr(runner, "frames_per_block", block_shape[2])
        if frames_per_block != block_shape[2]:
            raise ValueError(f"{name} runner has frames_per_block {frames_per_block} but block_shape has F = "
                             f"{block_shape[2]}")
        if protocol_of(runner) == "krea_realtime" and needed[f"commit_{name}"]:
            reencodes = (num_blocks - 2) * frames_per_block >= runner.context_frames
            if reencodes and (decoder is None or encoder is None):
                raise ValueError(f"{name} runs the krea_realtime protocol, which re-encodes a decoded frame: it needs "
                                 "a decoder and an encoder")
            if block_shape[0] != 1:
                raise ValueError(f"{name}: the krea_realtime protocol runs batch 1 (got block_shape {block_shape})")
    return block_shape


# What a non-finite value most likely means, per model (the named error of `check_finite`).
LIKELY_CAUSES = {
    "drafter": "NaN or inf in the CONDITIONING (the prompt's text embeddings), the model overflowing in fp16 (load it "
               "in bf16 or fp32), or a broken checkpoint",
    "decoder": "a latent out of the VAE's range (a diverged block) or the VAE overflowing in fp16 (run it in bf16 or "
               "fp32)",
    "router": "the router's model or its precision (fp16 overflow), or frames it cannot read",
}
LIKELY_CAUSES["target"] = LIKELY_CAUSES["drafter"]


def check_finite(value, block, model, what):
    """Stop with an error naming the block, the model (drafter / target / decoder / router), what it gave and the
    likely cause, when `value` (a tensor or a float) holds NaN or inf: a NaN draft scores NaN, which no tau accepts
    or rejects meaningfully, and a NaN block poisons every later one through the caches."""
    finite = math.isfinite(value) if isinstance(value, float) else bool(torch.isfinite(value).all())
    if not finite:
        raise FloatingPointError(f"SDVG: block {block}: the {model} gave a non-finite {what} (NaN or inf). Likely "
                                 f"cause: {LIKELY_CAUSES[model]}.")


COST_MODELS = ("drafter", "target", "decoder", "router")


def add_cost(costs, model, kind, calls, flops=None, **counts):
    """costs[model][kind] += calls (and flops, None when the model does not report them; and any other counts)."""
    entry = costs[model].setdefault(kind, dict(calls=0, flops=None))
    entry["calls"] += calls
    if flops is not None:
        entry["flops"] = (entry["flops"] or 0) + flops
    for key, value in counts.items():
        entry[key] = entry.get(key, 0) + value


def target_only_costs(target, num_blocks, steps):
    """What a target-only run of `num_blocks` blocks costs the target: "forwards" (sequential calls: `steps` per
    block and one commit or rebuild before every block after the first), "flops" (None unless the runner reports
    FLOPs, as CausalWanRunner does) and "reencodes" (krea_realtime: blocks whose rebuild re-encodes a frame)."""
    krea = target is not None and protocol_of(target) == "krea_realtime"
    frames = getattr(target, "frames_per_block", 0)
    reencodes = sum((k - 1) * frames >= target.context_frames for k in range(1, num_blocks)) if krea else 0
    flops = None
    if all(hasattr(target, name) for name in ("visible_frames", "forward_flops", "tokens_per_frame")):
        per_frame, block = target.tokens_per_frame, frames * target.tokens_per_frame
        flops = 0
        for k in range(num_blocks):
            seen = target.visible_frames(k) * per_frame
            flops += steps * target.forward_flops(block, seen + block)
            if k and krea:  # the rebuild over the K' context frames
                flops += target.forward_flops(seen, seen, head=False)
            elif k:  # the commit of block k - 1, attending to what block k - 1 saw
                flops += target.forward_flops(block, target.visible_frames(k - 1) * per_frame + block, head=False)
    return dict(forwards=num_blocks * steps + max(num_blocks - 1, 0), flops=flops, reencodes=int(reencodes))


class BlockLoop:
    """The state of one `speculative_generate` run and its phases (generate, draft, decode, commit), each a small
    method: the committed latents and frames, Krea's decoded pixel buffer, per model the committed blocks it has not
    committed yet, the recompute contexts of the current history, per block a clock, and the run's costs.

    Laziness (docs/sdvg.md, "Which model commits when"): a krea_realtime runner's cache is a function of the
    committed latents and the pixel buffer, so it is rebuilt only right before that runner generates a block, from
    the history as it then is (exactly what an eager rebuild after the last committed block computed); a
    self_forcing target keeps the blocks it did not generate and commits them in one forward right before it
    generates again. A self_forcing drafter commits every block at once (it drafts most blocks anyway)."""

    def __init__(self, runners, decoder, encoder, block_shape, noise, interrupt, needed):
        self.runners, self.decoder, self.encoder, self.needed = runners, decoder, encoder, needed
        self.block_shape, self.noise, self.interrupt = block_shape, noise, interrupt
        # Krea's decoded pixel buffer: the last frames of the committed video, as many as the largest K needs.
        self.buffer_frames = max([pixel_buffer_frames(runner.context_frames) for runner in runners.values()
                                  if runner is not None and protocol_of(runner) == "krea_realtime"], default=0)
        self.latents, self.frames, self.pixel_buffer, self.contexts = [], [], [], {}
        self.uncommitted = {name: [] for name in runners}
        self.clocks, self.costs = [], {model: {} for model in COST_MODELS}

    def check_interrupt(self):
        if self.interrupt is not None:
            self.interrupt()

    @contextmanager
    def call(self, clock_key, model, kind, runner=None, calls=1):
        """Check Cancel, time the call into this block's clock and count it in costs[model][kind]: the runner's
        own forwards (CausalWanRunner.forwards, with their FLOPs) when it lists them, else `calls` calls."""
        self.check_interrupt()
        log = getattr(runner, "forwards", None)
        since = len(log) if isinstance(log, list) else None
        with timed(self.clocks[-1], clock_key):
            yield
        if since is None:
            add_cost(self.costs, model, kind, calls)
        else:
            add_cost(self.costs, model, kind, len(log) - since,
                     sum(runner.forward_flops(n, m, head=head) for n, m, head in log[since:]))

    def lazy(self, name):
        return name == "target" or protocol_of(self.runners[name]) == "krea_realtime"

    def generate(self, name, index, sigmas):
        """The runner `name` generates block `index` (its few steps), after committing what it has not yet."""
        self.catch_up(name)
        runner = self.runners[name]
        with self.call(name, name, "generate", runner, calls=len(sigmas.sigmas)):
            block = generate_block(runner, self.block_shape, sigmas, self.noise(index, name), self.check_interrupt)
        check_finite(block, index, name, "block")
        return block

    def draft(self, index, sigmas, router, prompt, aggregation, tau):
        """The drafter proposes block `index`; with a router, its decoded frames are scored. Returns ((latent,
        frames, pending decode) to commit, or None when rejected; the score, or None when not scored)."""
        latent = self.generate("drafter", index, sigmas)
        if router is None:  # draft only
            return (latent, None, None), None
        frames, pending = self.decode(index, latent, "draft_decode")
        with self.call("router", "router", "frames"):
            score = aggregate(router.score(frames, prompt), aggregation)
        add_cost(self.costs, "router", "frames", 0, frames=len(frames))
        check_finite(score, index, "router", "score")
        return ((latent, frames, pending) if score >= tau else None), score

    def decode(self, index, latent, clock_key):
        """Decode a block with the streaming state, without advancing it: (frames, pending state)."""
        with self.call(clock_key, "decoder", "decode"):
            frames, pending = self.decoder.decode(latent)
        check_finite(frames, index, "decoder", "frame")
        return frames, pending

    def commit(self, latent, frames, pending, last):
        """Block `latent` joins the video: the decoder advances (its frames go to the output and the pixel buffer);
        each model that will predict again gets it now (eager) or before its next block (lazy). Returns frames."""
        if self.decoder is not None:
            if frames is None:
                frames, pending = self.decode(len(self.latents), latent, "decode")
            self.decoder.advance(pending)
            self.frames.append(frames)
            if self.buffer_frames:
                self.pixel_buffer = (self.pixel_buffer + list(frames))[-self.buffer_frames:]
        self.latents.append(latent)
        self.contexts = {}  # K -> Krea's recompute context of this history, shared by both models
        for name, runner in self.runners.items():
            if runner is not None and self.needed[f"commit_{name}"] and not last:
                self.uncommitted[name].append(latent)
                if not self.lazy(name):
                    self.catch_up(name)
        return frames

    def catch_up(self, name):
        """Commit to runner `name` every block committed since its last commit: one call (self_forcing: the
        blocks' K/V; krea_realtime: the cache rebuilt from the history as it is now)."""
        blocks, runner = self.uncommitted[name], self.runners[name]
        if not blocks:
            return
        options, kind = {}, "commit"
        if protocol_of(runner) == "krea_realtime":
            options, kind = dict(context=self.krea_context(runner.context_frames)), "rebuild"
        with self.call(f"{name}_commit", name, kind, runner):
            runner.commit(torch.cat(blocks, dim=2), **options)
        self.uncommitted[name] = []

    def krea_context(self, size):
        """Krea's recompute context of `size` latent frames for the committed latents, by `recompute_context`'s
        rule; when that needs it, the oldest frame of the decoded pixel buffer (1 + 4 (size - 1) frames, fewer
        while the video is shorter) is re-encoded, timed as "reencode"."""
        if size not in self.contexts:
            oldest = self.pixel_buffer[-min(pixel_buffer_frames(size), len(self.pixel_buffer))] \
                if self.pixel_buffer else None

            def encode_oldest():
                with self.call("reencode", "decoder", "reencode"):
                    encoded = self.encoder.encode(oldest)
                check_finite(encoded, len(self.latents), "decoder", "re-encoded frame")
                return encoded

            self.contexts[size] = recompute_context(torch.cat(self.latents, dim=2), size, self.block_shape[2],
                                                    encode_oldest)
        return self.contexts[size]


def speculative_generate(drafter, target, decoder, router, prompt, *, num_blocks, block_shape, tau=-0.7,
                         drafter_sigmas=SELF_FORCING_SIGMAS, target_sigmas=SELF_FORCING_SIGMAS, seed=0,
                         force_target_first_block=True, aggregation="min", interrupt=None, callback=None, stats=None,
                         encoder=None, noise=None):
    """Generate `num_blocks` blocks speculatively.

    drafter / target: runners already reset() with the text context (same frames_per_block and latent size).
    decoder: streaming decoder (see the module docstring), or None for latents only (then tau must be +-inf, no
    runner may be krea_realtime beyond its first re-encode, and the returned frames are None). router: per-frame
    scorer (unused when tau is +-inf; may then be None). encoder: for krea_realtime runners (module docstring).
    block_shape: (B, C, F, H, W) of one latent block. tau: accept a draft when its aggregated score >= tau.
    drafter_sigmas / target_sigmas: schedules (`check_block_schedule`). noise: the noise source (module docstring;
    default `seeded_noise(seed)`). Returns (latent [B, C, num_blocks * F, H, W] float32, frames [N, H, W, 3] float
    0..1 or None). stats: a dict, cleared and filled by `sdvg_stats` (see there). A non-finite block, frame,
    re-encoding or score raises FloatingPointError naming the block and the model (`check_finite`).
    """
    tau = float(tau)
    block_shape = check_run(drafter, target, decoder, router, tau, num_blocks, block_shape, force_target_first_block,
                            encoder)
    drafter_sigmas = check_block_schedule(drafter_sigmas, "drafter_sigmas")
    target_sigmas = check_block_schedule(target_sigmas, "target_sigmas")
    needed = parts_needed(tau, force_target_first_block)
    loop = BlockLoop(dict(drafter=drafter, target=target), decoder, encoder, block_shape,
                     seeded_noise(seed) if noise is None else noise, interrupt, needed)
    started = time.perf_counter()
    records = []
    for index in range(num_blocks):
        loop.clocks.append({})
        record = dict(index=index, source="target", drafted=False, score=None, accepted=False)
        kept = None
        if needed["drafter"] and not (index == 0 and force_target_first_block):
            kept, record["score"] = loop.draft(index, drafter_sigmas, router if needed["router"] else None, prompt,
                                               aggregation, tau)
            record.update(drafted=True, accepted=kept is not None, source="drafter" if kept else "target")
        if kept is None:
            kept = (loop.generate("target", index, target_sigmas), None, None)
        frames = loop.commit(*kept, last=index + 1 == num_blocks)
        records.append(record)
        if callback is not None:
            callback(dict(block=index, num_blocks=num_blocks, x0=kept[0], frames=frames, accepted=record["accepted"],
                          score=record["score"]))

    target_only = target_only_costs(target, num_blocks, len(target_sigmas.sigmas))
    filled = sdvg_stats(records, loop.clocks, time.perf_counter() - started, tau=tau, aggregation=aggregation,
                        target_steps=len(target_sigmas.sigmas), target_reencodes=target_only["reencodes"],
                        costs=loop.costs, target_only=target_only)
    if stats is not None:
        stats.clear()
        stats.update(filled)
    latent = torch.cat(loop.latents, dim=2)
    return latent, (torch.cat(loop.frames, dim=0) if loop.frames else None)


def _mean(values):
    return sum(values) / len(values) if values else 0.0


def cost_totals(costs, target_only):
    """The FLOPs and target-call summary of a run's costs (docs/sdvg.md, "Costs"): "flops" {"drafter", "target",
    "total"} (DiT FLOPs; None for a model whose runner does not report them), "target_forwards" (sequential target
    calls), "target_forwards_saved" (a target-only run's minus this run's), "estimated_target_only_flops",
    "flops_speedup" (that over this run's total; None when either is unknown)."""
    def model_flops(model):
        values = [entry["flops"] for entry in costs[model].values()]
        return None if any(value is None for value in values) else sum(values)

    flops = dict(drafter=model_flops("drafter"), target=model_flops("target"))
    flops["total"] = None if None in flops.values() else flops["drafter"] + flops["target"]
    target_forwards = sum(entry["calls"] for entry in costs["target"].values())
    estimate = target_only["flops"]
    return dict(costs=costs, flops=flops, target_forwards=target_forwards,
                target_forwards_saved=target_only["forwards"] - target_forwards,
                estimated_target_only_flops=estimate,
                flops_speedup=estimate / flops["total"] if estimate is not None and flops["total"] else None)


def sdvg_stats(records, clocks, seconds, *, tau, aggregation, target_steps, target_reencodes=0, costs=None,
               target_only=None):
    """A run's statistics, built in one place.

    "blocks": per block index, source ("drafter" | "target"), drafted, score, accepted, drafter_seconds,
    router_seconds, target_seconds, decode_seconds (a model's seconds include its commits); "acceptance_rate"
    (accepted / drafted blocks; 0.0 when nothing was drafted), "drafted_blocks", "accepted_blocks", "seconds" (wall
    time of the whole loop), "estimated_target_only_seconds", "estimated_speedup", "num_blocks", "tau" (a float,
    +-inf for the baselines), "mode" ("speculative", "target_only", "draft_only"), "aggregation"; with `costs` and
    `target_only` (`target_only_costs`) also the keys of `cost_totals`.

    Estimated target-only time = num_blocks x (mean seconds of the target generating a block + mean seconds to
    decode a committed block) + (num_blocks - 1) x mean seconds of a target commit (a target-only run commits or
    rebuilds before every block but the first; when no commit was timed, e.g. draft-only or every draft accepted,
    one commit counts as one target step) + `target_reencodes` (the re-encodes a target-only run makes) x mean
    seconds of a re-encode timed in this run (none timed: not counted). That is what a target-only run does, timed
    in this run, so no second run is needed; it is None when the target generated no block (then the speed-up is
    None too). Time spent loading models inside the runners' calls is included.
    """
    blocks = [dict(record, drafter_seconds=clock.get("drafter", 0.0) + clock.get("drafter_commit", 0.0),
                   router_seconds=clock.get("router", 0.0),
                   target_seconds=clock.get("target", 0.0) + clock.get("target_commit", 0.0),
                   decode_seconds=clock.get("draft_decode", 0.0) + clock.get("decode", 0.0))
              for record, clock in zip(records, clocks)]

    def timings(key):
        return [clock[key] for clock in clocks if key in clock]

    # A kept draft was decoded once for the router: that decode is its committed decode.
    committed_decodes = [clock.get("decode", clock.get("draft_decode")) for clock in clocks
                         if "decode" in clock or "draft_decode" in clock]
    num_blocks = len(blocks)
    generation = timings("target")
    estimate = None
    if generation:
        commits = timings("target_commit")
        commit = _mean(commits) if commits else _mean(generation) / target_steps
        estimate = num_blocks * (_mean(generation) + _mean(committed_decodes)) + (num_blocks - 1) * commit
        estimate += int(target_reencodes) * _mean(timings("reencode"))
    drafted = sum(block["drafted"] for block in blocks)
    accepted = sum(block["accepted"] for block in blocks)
    filled = dict(blocks=blocks, num_blocks=num_blocks, tau=tau, mode=MODE_NAMES[mode_of(tau)],
                  aggregation=aggregation, drafted_blocks=drafted, accepted_blocks=accepted,
                  acceptance_rate=accepted / drafted if drafted else 0.0, seconds=seconds,
                  estimated_target_only_seconds=estimate,
                  estimated_speedup=estimate / seconds if estimate is not None and seconds > 0 else None)
    if costs is not None and target_only is not None:
        filled.update(cost_totals(costs, target_only))
    return filled
