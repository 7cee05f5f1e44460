"""The two tiny Wan-architecture models of the toy world, and how the benchmark calls them.

Both are `samplers.wan.WanDiT` (original Wan 2.1 parameter names) with 3 input/output channels (the world's RGB
latent), a 64-dim "text" embedding input (the condition tokens, see bench/world.py), 4x4-pixel patches (16 tokens
per 16x16 frame, 192 per clip) and attention heads of 32 channels: `load_model` rebuilds them from the weights and
that head size. (ComfyUI assumes Wan's 128-channel heads, one head at these widths; a trial with one head learned
no differently over 750 steps, and four were kept. So these models are for the benchmark, not for ComfyUI graphs.)

One addition to Wan: a fixed (parameter-free) sinusoidal ABSOLUTE position embedding added to the patch tokens
(`PositionalPatchEmbedding`, installed by `build_model` / `load_model`; `PositionalCausalRunner` gives it the
absolute frame index in block-by-block generation). Wan's RoPE is relative only, and a token generated from pure
noise must know where it is to draw an object at its conditioned position. The weights files do not contain it:
loaded without it (plain `load_wan`), the models are NOT the trained ones.

- target: dim 128 (4 heads), 3 layers, FFN 512;
- drafter: dim 96 (3 heads), 1 layer, FFN 256: 5.5x fewer FLOPs per call (`python -m bench.train --measure`
  prints the counted FLOPs and the measured CPU wall per call of both), distilled from the target: trained on the
  target's own block-by-block rollouts, only at its four sampling sigmas after clean committed blocks
  (`bench.train.distil`);
- target_stars: the target's architecture, fine-tuned from it in the star world (bench/world.py), for DTS.
- target_beacon: the same, fine-tuned from the target in the beacon world, for DTS.

What did not train within the CPU budget (about 10 minutes of one core each, judged by clips generated from
noise): 8x8-pixel patches; conditions that give only the start and the velocity (the models had to learn the
bouncing motion: their clips were still blurred where the per-frame tokens of bench/world.py give sharp ones); a
free start position decided by the noise. docs/bench.md has the numbers.

Flow matching: the model predicts v = noise - x0 at noise level sigma in [0, 1] (timestep = sigma x 1000) and
x0 = x - sigma * v. Both models are trained block-causally (3 frames per block), so one model is both an ordinary
denoiser of the whole clip (all frames at one sigma: DTS) and a block-autoregressive generator (SDVG).
"""
import functools
import math
import os

import torch

from samplers.models.causal_runner import CausalWanRunner
from samplers.models.wan import WanConfig, WanDiT, load_wan

from .world import DEFAULT_WORLD, TEXT_DIM

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")
HEAD_DIM = 32
PATCH_SIZE = (1, 4, 4)  # 16 tokens per 16x16 frame, 192 per 12-frame clip

TARGET_SHAPE = dict(dim=128, ffn_dim=512, num_heads=4, num_layers=3)
MODEL_CONFIGS = {
    "target": TARGET_SHAPE,
    "drafter": dict(dim=96, ffn_dim=256, num_heads=3, num_layers=1),
    # the star world's model (DTS only): the target's architecture, fine-tuned from it, and its training stages
    **{name: TARGET_SHAPE for name in ("target_stars", "target_stars_stage1", "target_stars_stage2")},
    # the beacon world's model (DTS only): the target's architecture, fine-tuned from it
    "target_beacon": TARGET_SHAPE,
}
SHIPPED = ("target", "drafter")
# The drafter is initialised from the target's weights on 3 of every 4 residual channels (bench.train.slice_target),
# so its fixed position embedding is the target's on those channels (`model_position_embedding`).
DRAFTER_CHANNELS = tuple(c for c in range(TARGET_SHAPE["dim"]) if c % 4 != 3)
WORLD_OF = {**{name: "stars" for name in MODEL_CONFIGS if name.startswith("target_stars")},
            "target_beacon": "beacon"}  # the models not of the default world
# SDVG's drafter schedule (Self-Forcing style: x0, then fresh noise at the next sigma). Neither model uses the
# Self-Forcing sigmas (they stop at 0.625, where these models' x0 estimate is still a blur).
DRAFTER_SIGMAS = (1.0, 0.75, 0.5, 0.25)


def model_config(name):
    if name not in MODEL_CONFIGS:
        raise ValueError(f"model name must be one of {sorted(MODEL_CONFIGS)} (got {name!r})")
    return WanConfig(**MODEL_CONFIGS[name], in_dim=3, out_dim=3, text_dim=TEXT_DIM, freq_dim=256,
                     patch_size=PATCH_SIZE)


@functools.lru_cache(maxsize=64)  # a pure function of its arguments, needed at every call: computed once
def position_embedding(dim, frames, height, width, frame_offset=0):
    """Fixed sinusoidal absolute position of every patch token: float32 [dim, frames, height, width] (token grid).
    Cached: callers must not modify the returned tensor.

    Half of the channels encode the absolute frame index, a quarter each the token row and column (ViT-style
    sines and cosines, no parameters)."""
    def sines(positions, channels):
        half = channels // 2
        frequencies = torch.exp(-math.log(100.0) * torch.arange(half, dtype=torch.float32) / max(1, half))
        angles = positions.float()[:, None] * frequencies[None, :]
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)  # [positions, channels]

    t_channels = dim // 2
    h_channels = dim // 4
    w_channels = dim - t_channels - h_channels
    t = sines(torch.arange(frame_offset, frame_offset + frames), t_channels)[:, :, None, None]
    h = sines(torch.arange(height), h_channels)[:, :, None]
    w = sines(torch.arange(width), w_channels)[:, :, None]
    return torch.cat([t.permute(1, 0, 2, 3).expand(-1, frames, height, width),
                      h.permute(1, 0, 2)[:, None].expand(-1, frames, height, width),
                      w.permute(1, 2, 0)[:, None].expand(-1, frames, height, width)], dim=0)


@functools.lru_cache(maxsize=64)
def model_position_embedding(dim, frames, height, width, frame_offset=0):
    """The position embedding a model of width `dim` adds: `position_embedding`, except that the drafter's width
    (len(DRAFTER_CHANNELS)) takes the target's on DRAFTER_CHANNELS, the channels it inherited from the target."""
    if dim == len(DRAFTER_CHANNELS):
        full = position_embedding(TARGET_SHAPE["dim"], frames, height, width, frame_offset)
        return full[list(DRAFTER_CHANNELS)].contiguous()
    return position_embedding(dim, frames, height, width, frame_offset)


class PositionalPatchEmbedding(torch.nn.Conv3d):
    """Wan's patch embedding (same parameters and names) plus a fixed absolute position embedding of the tokens.

    Why: Wan's only position signal is RoPE, which is relative; generating from pure noise, a token of these tiny
    models cannot tell where in the clip it is, so it cannot draw an object at the conditioned start (measured:
    the mean x0 estimate at sigma 1 puts chance-level colour at the right place). `frame_offset` is the absolute
    index of the first frame of the input (set by `PositionalCausalRunner` for block-by-block generation)."""

    frame_offset = 0

    def forward(self, x):
        tokens = super().forward(x)
        _, dim, frames, height, width = tokens.shape
        position = model_position_embedding(dim, frames, height, width, self.frame_offset)
        return tokens + position.to(device=tokens.device, dtype=tokens.dtype)[None]


def add_position_embedding(model):
    """Give a WanDiT the bench's fixed absolute position embedding (in place; no new parameters). Returns it."""
    if not isinstance(model.patch_embedding, PositionalPatchEmbedding):
        model.patch_embedding.__class__ = PositionalPatchEmbedding
    return model


class PositionalCausalRunner(CausalWanRunner):
    """`samplers.causal.CausalWanRunner` that tells the position embedding the absolute index of the block."""

    def _forward(self, x, timestep, frame_offset, mask=None, head=True):
        embedding = self.model.patch_embedding
        embedding.frame_offset = frame_offset
        try:
            return super()._forward(x, timestep, frame_offset, mask, head)
        finally:
            embedding.frame_offset = 0


def build_model(name):
    return add_position_embedding(WanDiT(model_config(name)))


def weights_path(name):
    return os.path.join(WEIGHTS_DIR, f"{name}.safetensors")


def load_model(name, path=None):
    """The shipped model `name` ("target" or "drafter") in float32 on the CPU, eval mode."""
    path = weights_path(name) if path is None else path
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: train it with `python -m bench.train --model {name}`")
    return add_position_embedding(load_wan(path, head_dim=HEAD_DIM))


class FlowDenoiser:
    """A flow-matching WanDiT as a k-diffusion denoiser: D(x, sigma) = x - sigma * v(x, 1000 * sigma).

    x: [B, C, T, H, W]; sigma: [B] in [0, 1]; context: [B or 1, L, TEXT_DIM]. Block-causal attention with the
    world's frames_per_block (the mask the model was trained with). Counts calls and per-sample evaluations.
    """

    def __init__(self, model, context, frames_per_block=DEFAULT_WORLD.frames_per_block):
        self.model = model
        self.context = context
        self.frames_per_block = frames_per_block
        self.calls = 0
        self.evals = 0

    @torch.no_grad()
    def __call__(self, x, sigma, **extra_args):
        self.calls += 1
        self.evals += x.shape[0]
        sigma = torch.as_tensor(sigma, dtype=torch.float32).reshape(-1).expand(x.shape[0])
        context = self.context.expand(x.shape[0], -1, -1) if self.context.shape[0] == 1 else self.context
        v = self.model(x, sigma * 1000.0, context, frames_per_block=self.frames_per_block)
        return x - sigma.view(-1, 1, 1, 1, 1) * v


def flow_sigmas(steps, shift=1.0):
    """`steps` + 1 decreasing flow sigmas from 1 to 0 (linear in t, then Wan's shift s*t / (1 + (s-1)*t))."""
    t = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    sigmas = shift * t / (1.0 + (shift - 1.0) * t)
    return sigmas.float()


def euler_sample(denoiser, x, sigmas):
    """Plain Euler (= ComfyUI's "euler"/"ddim" on flow models) over `sigmas` [N + 1] ending at 0."""
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, sigma * x.new_ones(x.shape[0]))
        x = denoised if sigma_next == 0 else x + (sigma_next - sigma) * (x - denoised) / sigma
    return x
