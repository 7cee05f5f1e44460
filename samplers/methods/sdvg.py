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

Baselines from the same code path: tau = +inf is target-only (the drafter and router are never called), tau = -inf
is draft-only (the router is skipped; block 0 still comes from the target when forced). In those two modes the
model that will never be asked again does not commit either (its cache would not be read).

Noise comes from a source the caller can replace: `noise(block_index, model_name)` returns `draw(step, shape)`,
the tensor for the block's start (step 0) and for each re-noising (step j). The default, `seeded_noise(seed)`,
gives every (block, model) pair its own torch.Generator seeded from (seed, block index, model name), so a seed gives
the same video whatever the accept decisions were, and a block that the target regenerates uses the same target
noise as in the target-only run.

The five protocols:
- runner (drafter, target): `predict(block [B,C,F,H,W], sigma[, timestep]) -> v`, `commit(clean_block)` (krea_realtime:
  `commit(clean_block, context)`), attributes `committed_frames`, optional `protocol` (default "self_forcing") and
  `context_frames` (CausalWanRunner, already `reset()` with the text context);
- decoder: `decode(latent_block) -> (frames [n,H,W,3] float 0..1, pending_state)`; `advance(pending_state)`;
- encoder (krea_realtime only): `encode(frame [H,W,3] float 0..1) -> [1, C, 1, h, w]`, the frame encoded on its own
  as a first frame, in the models' latent space;
- router: `score(frames, prompt) -> [n]` per-frame scores.
"""
import hashlib
import math
import time

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


def krea_context(latents, pixel_buffer, size, block_frames, encoder, clock, check_interrupt):
    """Krea's recompute context of `size` latent frames for the committed `latents` (a list of blocks), by
    `recompute_context`'s rule; when that needs it, the oldest frame of the decoded pixel buffer (a buffer of
    1 + 4 (size - 1) frames, fewer while the video is shorter) is re-encoded, timed as "reencode"."""
    oldest = pixel_buffer[-min(pixel_buffer_frames(size), len(pixel_buffer))] if pixel_buffer else None

    def encode_oldest():
        check_interrupt()
        with timed(clock, "reencode"):
            return encoder.encode(oldest)

    return recompute_context(torch.cat(latents, dim=2), size, block_frames, encode_oldest)


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
    0..1 or None). stats: a dict, cleared and filled by `sdvg_stats` (see there).
    """
    tau = float(tau)
    block_shape = check_run(drafter, target, decoder, router, tau, num_blocks, block_shape, force_target_first_block,
                            encoder)
    drafter_sigmas = check_block_schedule(drafter_sigmas, "drafter_sigmas")
    target_sigmas = check_block_schedule(target_sigmas, "target_sigmas")
    noise = seeded_noise(seed) if noise is None else noise
    needed = parts_needed(tau, force_target_first_block)
    # Krea's decoded pixel buffer: the last frames of the committed video, as many as the largest K needs.
    buffer_frames = max([pixel_buffer_frames(runner.context_frames) for runner in (drafter, target)
                         if runner is not None and protocol_of(runner) == "krea_realtime"], default=0)
    pixel_buffer = []

    def check_interrupt():
        if interrupt is not None:
            interrupt()

    def generate(runner, name, index, sigmas, clock):
        with timed(clock, name):
            return generate_block(runner, block_shape, sigmas, noise(index, name), check_interrupt)

    def decode(block, clock, key):
        check_interrupt()
        with timed(clock, key):
            return decoder.decode(block)

    started = time.perf_counter()
    latents, frames_out, records, clocks = [], [], [], []
    for index in range(num_blocks):
        clock, record = {}, dict(index=index, source="target", drafted=False, score=None, accepted=False)
        committed = frames = pending = None
        if needed["drafter"] and not (index == 0 and force_target_first_block):
            record["drafted"] = True
            draft = generate(drafter, "drafter", index, drafter_sigmas, clock)
            if needed["router"]:
                draft_frames, draft_pending = decode(draft, clock, "draft_decode")
                check_interrupt()
                with timed(clock, "router"):
                    record["score"] = aggregate(router.score(draft_frames, prompt), aggregation)
                if record["score"] >= tau:
                    committed, frames, pending = draft, draft_frames, draft_pending
            else:  # draft only
                committed = draft
            record["accepted"] = committed is not None
            record["source"] = "drafter" if committed is not None else "target"
        if committed is None:
            committed = generate(target, "target", index, target_sigmas, clock)
        if decoder is not None:
            if frames is None:
                frames, pending = decode(committed, clock, "decode")
            decoder.advance(pending)
            if buffer_frames:
                pixel_buffer = (pixel_buffer + list(frames))[-buffer_frames:]
        latents.append(committed)
        # Commit to every model that will predict again (not after the last block).
        contexts = {}  # K -> Krea recompute context, shared by both models
        for name, runner in (("drafter", drafter), ("target", target)):
            if needed[f"commit_{name}"] and index + 1 < num_blocks:
                check_interrupt()
                options = {}
                if protocol_of(runner) == "krea_realtime":
                    size = runner.context_frames
                    if size not in contexts:
                        contexts[size] = krea_context(latents, pixel_buffer, size, block_shape[2], encoder, clock,
                                                      check_interrupt)
                    options = dict(context=contexts[size])
                with timed(clock, f"{name}_commit"):
                    runner.commit(committed, **options)
        if frames is not None:
            frames_out.append(frames)
        records.append(record)
        clocks.append(clock)
        if callback is not None:
            callback(dict(block=index, num_blocks=num_blocks, x0=committed, frames=frames, accepted=record["accepted"],
                          score=record["score"]))

    filled = sdvg_stats(records, clocks, time.perf_counter() - started, tau=tau, aggregation=aggregation,
                        target_steps=len(target_sigmas.sigmas),
                        target_reencodes=target is not None and protocol_of(target) == "krea_realtime")
    if stats is not None:
        stats.clear()
        stats.update(filled)
    latent = torch.cat(latents, dim=2)
    return latent, (torch.cat(frames_out, dim=0) if frames_out else None)


def _mean(values):
    return sum(values) / len(values) if values else 0.0


def sdvg_stats(records, clocks, seconds, *, tau, aggregation, target_steps, target_reencodes=False):
    """A run's statistics, built in one place.

    "blocks": per block index, source ("drafter" | "target"), drafted, score, accepted, drafter_seconds,
    router_seconds, target_seconds, decode_seconds (a model's seconds include its commit); "acceptance_rate"
    (accepted / drafted blocks; 0.0 when nothing was drafted), "drafted_blocks", "accepted_blocks", "seconds" (wall
    time of the whole loop), "estimated_target_only_seconds", "estimated_speedup", "num_blocks", "tau" (a float,
    +-inf for the baselines), "mode" ("speculative", "target_only", "draft_only"), "aggregation".

    Estimated target-only time = num_blocks x (mean seconds of the target generating a block + mean seconds to
    decode a committed block) + (num_blocks - 1) x mean seconds of a target commit (the target commits every block
    but the last, whoever generated it; when no commit was timed, e.g. draft-only, one commit counts as one target
    step). A krea_realtime target's commit is its cache recompute, and its re-encodes (`target_reencodes`) count
    too: every re-encode timed in this run (the same ones a target-only run makes). That is what a target-only run
    does, timed in this run, so no second run is needed; it is None when the target generated no block (then the
    speed-up is None too). Time spent loading models inside the runners' calls is included.
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
        if target_reencodes:
            estimate += sum(timings("reencode"))
    drafted = sum(block["drafted"] for block in blocks)
    accepted = sum(block["accepted"] for block in blocks)
    return dict(blocks=blocks, num_blocks=num_blocks, tau=tau, mode=MODE_NAMES[mode_of(tau)], aggregation=aggregation,
                drafted_blocks=drafted, accepted_blocks=accepted, acceptance_rate=accepted / drafted if drafted else 0.0,
                seconds=seconds, estimated_target_only_seconds=estimate,
                estimated_speedup=estimate / seconds if estimate is not None and seconds > 0 else None)
