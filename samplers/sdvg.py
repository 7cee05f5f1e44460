"""SDVG: speculative block-autoregressive video generation (a small causal drafter, a reward router, a large target).

Per block k (DESIGN.md, "SDVG: exact semantics"):
1. unless block k is forced to the target (k = 0 with `force_target_first_block`) or tau = +inf, the drafter
   proposes x0_d with its own few steps (`generate_block`);
2. x0_d is decoded with the decoder's streaming state (without advancing it) and the router scores every new frame;
   the block score is `aggregate(scores, aggregation)` (min by default: a block is as good as its worst frame);
3. score >= tau: x0_d is committed. Otherwise the target generates x0_t with its own steps and x0_t is committed.
   Committing means: both runners append the block's K/V (t = 0 on the clean latents) and the decoder advances its
   streaming state with the committed block, whose decoded frames go to the output.

Baselines from the same code path: tau = +inf is target-only (the drafter and router are never called), tau = -inf
is draft-only (the router is skipped; block 0 still comes from the target when forced). In those two modes the
model that will never be asked again does not commit either (its cache would not be read).

Noise: every (block, model) pair has its own torch.Generator seeded from (seed, block index, model name), so a seed
gives the same video whatever the accept decisions were, and a block that the target regenerates uses the same
target noise as in the target-only run.

The four protocols:
- runner (drafter, target): `predict(block [B,C,F,H,W], sigma) -> v`, `commit(clean_block)`, attribute
  `committed_frames` (CausalWanRunner, already `reset()` with the text context);
- decoder: `decode(latent_block) -> (frames [n,H,W,3] float 0..1, pending_state)`; `advance(pending_state)`;
- router: `score(frames, prompt) -> tensor [n]`.
"""
import hashlib
import math
import time

import torch

from .reward import aggregate

SELF_FORCING_SIGMAS = (1.0, 0.9375, 0.8333, 0.625)
MODEL_NAMES = ("drafter", "target")


def block_generator(seed, block_index, model):
    """A CPU torch.Generator for one (block, model) pair; model is "drafter" or "target"."""
    if model not in MODEL_NAMES:
        raise ValueError(f"model must be one of {MODEL_NAMES} (got {model!r})")
    digest = hashlib.sha256(f"sdvg:{int(seed)}:{int(block_index)}:{model}".encode()).digest()
    return torch.Generator(device="cpu").manual_seed(int.from_bytes(digest[:8], "little") & (2 ** 63 - 1))


def _check_sigmas(sigmas, name):
    sigmas = [float(s) for s in sigmas]
    while len(sigmas) > 1 and sigmas[-1] == 0.0:  # ComfyUI-style schedules end with 0: the last x0 is the output
        sigmas.pop()
    if not sigmas or any(not 0.0 < s <= 1.0 for s in sigmas):
        raise ValueError(f"{name} must be a non-empty list of sigmas in (0, 1] (got {sigmas})")
    if any(b >= a for a, b in zip(sigmas, sigmas[1:])):
        raise ValueError(f"{name} must be strictly decreasing (got {sigmas})")
    return sigmas


def generate_block(runner, shape, sigmas, generator, interrupt=None):
    """Few-step flow-matching generation of one block attending to the runner's committed frames.

    shape: (B, C, F, H, W); sigmas: decreasing noise levels in (0, 1] (a trailing 0 is ignored); generator: CPU
    torch.Generator for the noise. x = sigmas[0] * eps; at each sigma s the model predicts v, x0 = x - s * v; before
    the next sigma s' the state is re-noised with fresh noise, x = (1 - s') * x0 + s' * eps (ComfyUI's `lcm` rule,
    Self-Forcing's inference). Returns the last x0 [B, C, F, H, W] float32 (on the runner's device). Commits nothing.
    """
    sigmas = _check_sigmas(sigmas, "sigmas")
    device = getattr(runner, "device", None)
    x = sigmas[0] * torch.randn(shape, generator=generator).to(device)
    x0 = None
    for index, sigma in enumerate(sigmas):
        if interrupt is not None:
            interrupt()
        v = runner.predict(x, sigma).float()
        x0 = x - sigma * v
        if index + 1 < len(sigmas):
            next_sigma = sigmas[index + 1]
            x = (1.0 - next_sigma) * x0 + next_sigma * torch.randn(shape, generator=generator).to(device)
    return x0


def _mean(values):
    return sum(values) / len(values) if values else 0.0


def _json_number(value):
    """Stats go to the browser as JSON, which has no infinities."""
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def speculative_generate(drafter, target, decoder, router, prompt, *, num_blocks, block_shape, tau=-0.7,
                         drafter_sigmas=SELF_FORCING_SIGMAS, target_sigmas=SELF_FORCING_SIGMAS, seed=0,
                         force_target_first_block=True, aggregation="min", interrupt=None, callback=None, stats=None):
    """Generate `num_blocks` blocks speculatively.

    drafter / target: runners already reset() with the text context (same frames_per_block and latent size).
    decoder: streaming decoder (see the module docstring), or None for latents only (then tau must be +-inf and
    the returned frames are None). router: per-frame scorer (unused when tau is +-inf; may then be None).
    block_shape: (B, C, F, H, W) of one latent block. tau: accept a draft when its aggregated score >= tau.
    Returns (latent [B, C, num_blocks * F, H, W] float32, frames [N, H, W, 3] float 0..1 or None).

    stats (dict, filled in): "blocks" (per block: index, source "drafter"|"target", drafted, score, accepted,
    drafter_seconds, router_seconds, target_seconds, decode_seconds; a model's seconds include its commit),
    "acceptance_rate" (accepted / drafted blocks; 0.0 when nothing was drafted), "drafted_blocks",
    "accepted_blocks", "seconds" (wall time of the whole loop), "estimated_target_only_seconds" and
    "estimated_speedup" (see below), "num_blocks", "tau" (a number, or "inf" / "-inf"), "mode" ("speculative",
    "target_only", "draft_only"), "aggregation".

    Estimated target-only time = num_blocks x (mean seconds of the target generating a block + mean seconds to
    decode a committed block) + (num_blocks - 1) x mean seconds of a target commit (the target commits every block
    but the last, whoever generated it; when no commit was timed, e.g. draft-only, one commit counts as one target
    step). That is what a target-only run does, timed in this run, so no second run is needed; it is None when the
    target generated no block (then the speed-up is None too). Time spent loading models inside the runners' calls
    is included.
    """
    tau = float(tau)
    if math.isnan(tau):
        raise ValueError("tau must be a number or +-inf (got NaN)")
    if not isinstance(num_blocks, int) or num_blocks < 1:
        raise ValueError(f"num_blocks must be a positive integer (got {num_blocks!r})")
    block_shape = tuple(int(s) for s in block_shape)
    if len(block_shape) != 5:
        raise ValueError(f"block_shape must be (B, C, F, H, W) (got {block_shape})")
    drafter_sigmas = _check_sigmas(drafter_sigmas, "drafter_sigmas")
    target_sigmas = _check_sigmas(target_sigmas, "target_sigmas")
    target_only, draft_only = tau == math.inf, tau == -math.inf
    if decoder is None and not (target_only or draft_only):
        raise ValueError("decoder is None: the router scores decoded frames, so a finite tau needs a decoder")
    if router is None and not (target_only or draft_only):
        raise ValueError("router is None: a finite tau needs a router to score the drafts")
    for name, runner in (("drafter", drafter), ("target", target)):
        if runner is None:
            if (name == "drafter" and not target_only) or (name == "target" and (not draft_only or
                                                                                  force_target_first_block)):
                raise ValueError(f"{name} is None but this tau / force_target_first_block needs it")
            continue
        if getattr(runner, "committed_frames", 0) != 0:
            raise ValueError(f"{name} runner already holds {runner.committed_frames} committed frames: call "
                             "reset(context) before speculative_generate")
        frames_per_block = getattr(runner, "frames_per_block", block_shape[2])
        if frames_per_block != block_shape[2]:
            raise ValueError(f"{name} runner has frames_per_block {frames_per_block} but block_shape has F = "
                             f"{block_shape[2]}")
    use_drafter = not target_only
    use_target = not draft_only
    mode = "target_only" if target_only else "draft_only" if draft_only else "speculative"

    def check_interrupt():
        if interrupt is not None:
            interrupt()

    stats = {} if stats is None else stats
    stats.clear()
    stats.update(blocks=[], num_blocks=num_blocks, tau=_json_number(tau), mode=mode, aggregation=aggregation)
    latents, frames_out = [], []
    committed_decode_seconds, target_generation_seconds, target_commit_seconds = [], [], []
    started = time.perf_counter()

    for index in range(num_blocks):
        record = dict(index=index, source="target", drafted=False, score=None, accepted=False, drafter_seconds=0.0,
                      router_seconds=0.0, target_seconds=0.0, decode_seconds=0.0)
        drafted = use_drafter and not (index == 0 and force_target_first_block)
        committed = frames = pending = None
        if drafted:
            record["drafted"] = True
            tick = time.perf_counter()
            draft = generate_block(drafter, block_shape, drafter_sigmas, block_generator(seed, index, "drafter"),
                                   check_interrupt)
            record["drafter_seconds"] += time.perf_counter() - tick
            if draft_only:
                committed = draft
            else:
                check_interrupt()
                tick = time.perf_counter()
                draft_frames, draft_pending = decoder.decode(draft)
                record["decode_seconds"] += time.perf_counter() - tick
                check_interrupt()
                tick = time.perf_counter()
                score = aggregate(router.score(draft_frames, prompt), aggregation)
                record["router_seconds"] += time.perf_counter() - tick
                record["score"] = score
                if score >= tau:
                    committed, frames, pending = draft, draft_frames, draft_pending
            if committed is not None:
                record["accepted"] = True
                record["source"] = "drafter"
        if committed is None:
            tick = time.perf_counter()
            committed = generate_block(target, block_shape, target_sigmas, block_generator(seed, index, "target"),
                                       check_interrupt)
            target_generation_seconds.append(time.perf_counter() - tick)
            record["target_seconds"] += target_generation_seconds[-1]
        if frames is None and decoder is not None:
            check_interrupt()
            tick = time.perf_counter()
            frames, pending = decoder.decode(committed)
            elapsed = time.perf_counter() - tick
            record["decode_seconds"] += elapsed
            committed_decode_seconds.append(elapsed)
        elif decoder is not None:
            # The accepted draft was decoded once for the router; that decode is the committed block's decode.
            committed_decode_seconds.append(record["decode_seconds"])
        if decoder is not None:
            decoder.advance(pending)
        # Commit to every model that will predict again: both, except in the baselines and after the last block.
        if use_drafter and index + 1 < num_blocks:
            check_interrupt()
            tick = time.perf_counter()
            drafter.commit(committed)
            record["drafter_seconds"] += time.perf_counter() - tick
        if use_target and index + 1 < num_blocks:
            check_interrupt()
            tick = time.perf_counter()
            target.commit(committed)
            target_commit_seconds.append(time.perf_counter() - tick)
            record["target_seconds"] += target_commit_seconds[-1]
        latents.append(committed)
        if frames is not None:
            frames_out.append(frames)
        stats["blocks"].append(record)
        if callback is not None:
            callback(dict(block=index, num_blocks=num_blocks, x0=committed, frames=frames, accepted=record["accepted"],
                          score=record["score"]))

    seconds = time.perf_counter() - started
    drafted_blocks = sum(1 for r in stats["blocks"] if r["drafted"])
    accepted_blocks = sum(1 for r in stats["blocks"] if r["accepted"])
    estimate = None
    if target_generation_seconds:
        generation = _mean(target_generation_seconds)
        # A commit is one forward pass; without a measured one, count it as one denoising step.
        commit = _mean(target_commit_seconds) if target_commit_seconds else generation / len(target_sigmas)
        estimate = num_blocks * (generation + _mean(committed_decode_seconds)) + (num_blocks - 1) * commit
    stats.update(drafted_blocks=drafted_blocks, accepted_blocks=accepted_blocks,
                 acceptance_rate=accepted_blocks / drafted_blocks if drafted_blocks else 0.0, seconds=seconds,
                 estimated_target_only_seconds=estimate,
                 estimated_speedup=estimate / seconds if estimate is not None and seconds > 0 else None)
    latent = torch.cat(latents, dim=2)
    return latent, (torch.cat(frames_out, dim=0) if frames_out else None)
