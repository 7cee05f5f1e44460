"""Streaming decode of a Wan 2.1 latent video, block by block, with ComfyUI's Wan VAE.

The first latent frame of a video decodes to 1 frame, every later latent frame to 4; decoding a whole latent
`[B, C, T, h, w]` gives `1 + 4 * (T - 1)` frames. SDVG decodes each drafted block to score it, and keeps or throws
the draft away. `WanStreamingDecoder` decodes a block from the state left by the committed blocks and returns the
new state separately ("pending"); only `advance(pending)` makes it the decoder's state, so a rejected draft leaves
no trace. Decoding the committed blocks one after another gives the frames of one decode of the whole latent video.

The causal decode itself is the pack's own (samplers/models/wan_vae_decode.py), run over the loaded VAE's modules
and weights: ComfyUI's private cache helpers and cache rules for the Wan VAE changed in v0.18.1 and may change
again, its state-dict names did not. ComfyUI's out-of-memory fallback to tiled decoding does not apply here (a
block is 3 latent frames, decoded one latent frame at a time).
"""
from dataclasses import dataclass

import torch

from ...samplers.models.wan_vae_decode import decode_frames


@dataclass
class PendingDecodeState:
    """The VAE's causal state after decoding one block; `advance()` makes it the decoder's state.

    state: the causal decode's state (samplers/models/wan_vae_decode.py), a new dict per decode.
    base_latent_frames: latent frames committed when the block was decoded (the state it continued from).
    latent_frames: latent frames in the block.
    """
    state: dict
    base_latent_frames: int
    latent_frames: int


class WanStreamingDecoder:
    """Decodes latent blocks of one video in order, keeping the Wan VAE's causal state across committed blocks.

    vae: a ComfyUI `VAE` (comfy.sd.VAE) holding the Wan 2.1 VAE (`comfy.ldm.wan.vae.WanVAE`).
    process_latent_out: maps the diffusion model's latent space to the VAE's (a model's
        `model.model.process_latent_out`, i.e. the Wan21 latent format's mean/std un-normalisation); identity if None.

    The caller brings the VAE onto its device before `decode` (nodes/glue/placement.py).

    decode(latent_block) -> (frames, pending): frames `[B * n, H, W, 3]` float 0..1 on ComfyUI's intermediate device
    (batch-major, as VAEDecode flattens a video batch), n = 1 + 4 * (F - 1) for the first block, else 4 * F.
    advance(pending): commit the block that `pending` came from.
    """

    def __init__(self, vae, process_latent_out=None):
        import comfy.ldm.wan.vae

        first_stage_model = getattr(vae, "first_stage_model", None)
        if type(first_stage_model) is not comfy.ldm.wan.vae.WanVAE:
            raise ValueError(
                "vae: expected the Wan 2.1 VAE (16 latent channels, comfy.ldm.wan.vae.WanVAE), got "
                f"{type(first_stage_model).__name__}")
        self.vae = vae
        self.process_latent_out = process_latent_out if process_latent_out is not None else (lambda latent: latent)
        self.state = None  # None until the first block is committed: the video's start
        self.committed_latent_frames = 0

    @property
    def latent_channels(self):
        return self.vae.latent_channels

    @torch.no_grad()
    def decode(self, latent_block):
        """latent_block `[B, C, F, h, w]` (diffusion model's latent space) -> (frames `[B*n, H, W, 3]`, pending)."""
        if latent_block.ndim != 5 or latent_block.shape[1] != self.latent_channels:
            raise ValueError(
                f"latent_block: expected [B, {self.latent_channels}, F, h, w], got {list(latent_block.shape)}")
        vae = self.vae
        samples = self.process_latent_out(latent_block).to(device=vae.device, dtype=vae.vae_dtype)
        pixels, state = decode_frames(vae.first_stage_model, samples, self.state)
        pixels = vae.process_output(pixels.to(vae.output_device).float())  # [B, 3, n, H, W]
        frames = pixels.movedim(1, -1)  # [B, n, H, W, 3]
        frames = frames.reshape(-1, *frames.shape[-3:])
        return frames, PendingDecodeState(state, self.committed_latent_frames, latent_block.shape[2])

    def advance(self, pending):
        """Make the state after `pending`'s block the decoder's state (call only for committed blocks)."""
        if pending.base_latent_frames != self.committed_latent_frames:
            raise ValueError(
                f"pending: this block was decoded after {pending.base_latent_frames} committed latent frames, but "
                f"{self.committed_latent_frames} are committed now; decode it again from the current state")
        self.state = pending.state
        self.committed_latent_frames += pending.latent_frames


class WanFrameEncoder:
    """Krea's re-encode: one decoded frame encoded on its own, as the first frame of a video, by ComfyUI's VAE.

    vae: a ComfyUI `VAE` holding the Wan 2.1 VAE. process_latent_in: maps the VAE's latent space to the diffusion
    model's (a model's `model.model.process_latent_in`); identity if None.

    encode(frame `[H, W, 3]` float 0..1) -> `[1, C, 1, h, w]` in the diffusion model's latent space. `VAE.encode`
    loads the VAE itself.
    """

    def __init__(self, vae, process_latent_in=None):
        self.vae = vae
        self.process_latent_in = process_latent_in if process_latent_in is not None else (lambda latent: latent)

    @torch.no_grad()
    def encode(self, frame):
        if frame.ndim != 3 or frame.shape[-1] < 3:
            raise ValueError(f"frame: expected [H, W, 3], got {list(frame.shape)}")
        latent = self.vae.encode(frame[None, :, :, :3])  # one frame: a [1, C, 1, h, w] latent, causal first frame
        return self.process_latent_in(latent.float())
