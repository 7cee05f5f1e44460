"""The eager reference of the SDVG block loop: the order `speculative_generate` ran before the target became lazy
(every model that will predict again commits right after every block: a self_forcing runner appends the block, a
krea_realtime runner rebuilds its cache). The lazy loop must give the same latents and frames, bit for bit where the
issue asks for it (tests/plain_torch/test_sdvg_lazy.py). Kept here, in the tests, not in the product.
"""
import torch

from samplers.methods.schedules import SELF_FORCING_SIGMAS, check_block_schedule
from samplers.methods.sdvg import (aggregate, check_run, generate_block, parts_needed, protocol_of, seeded_noise)
from samplers.methods.timing import timed
from samplers.models.causal_runner import pixel_buffer_frames, recompute_context


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


def eager_speculative_generate(drafter, target, decoder, router, prompt, *, num_blocks, block_shape, tau=-0.7,
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

    if stats is not None:  # the decisions only: the product's statistics are the lazy loop's
        stats.update(blocks=records)
    latent = torch.cat(latents, dim=2)
    return latent, (torch.cat(frames_out, dim=0) if frames_out else None)
