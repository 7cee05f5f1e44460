"""A reference Wan 2.1 text-to-video DiT in plain torch, with the original parameter names.

Parameter names are the ones of Wan 2.1's `wan/modules/model.py` (and of ComfyUI's `comfy/ldm/wan/model.py`, which
loads the same files): `patch_embedding`, `text_embedding.{0,2}`, `time_embedding.{0,2}`, `time_projection.1`,
`blocks.N.{self_attn,cross_attn}.{q,k,v,o,norm_q,norm_k}`, `blocks.N.norm3`, `blocks.N.ffn.{0,2}`,
`blocks.N.modulation`, `head.head`, `head.modulation`. A file saved from this module loads in ComfyUI's
Load Diffusion Model (as WAN21_T2V when `dim` is a multiple of 128), and the other way round.

Two additions over the original forward, both needed by causal (block-autoregressive) Wan models such as Self-Forcing:
- per-frame timesteps (`timestep` of shape [B, T]): each latent frame gets its own time embedding and modulation;
- an optional block-causal mask over frames (see `block_causal_mask`), with Self-Forcing's local window and sink.

The module-level helpers (`embed_video`, `time_modulation`, `rope_cos_sin`, `apply_rope`, ...) take any module
shaped like Wan (this `WanDiT` or ComfyUI's `WanModel`) and only call its submodules, so that
`samplers/models/causal_runner.py` computes exactly what this forward computes, on either implementation.

Units: `timestep` is sigma x 1000 (Wan's scheduler convention); the output is the flow prediction
v = noise - x0, so that x0 = x - sigma * v.
"""
import math
import os
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .files import load_tensors

PREFIXES = ("model.diffusion_model.", "model.")
REQUIRED_KEYS = ("patch_embedding.weight", "text_embedding.0.weight", "time_embedding.0.weight",
                 "time_projection.1.weight", "blocks.0.self_attn.q.weight", "blocks.0.ffn.0.weight",
                 "head.head.weight", "head.modulation")


class WanFormatError(ValueError):
    """A checkpoint or config that is not a Wan 2.1 text-to-video DiT with the original parameter names."""


@dataclass
class WanConfig:
    """Shapes of a Wan 2.1 T2V DiT. num_heads divides dim (the head size is dim // num_heads)."""
    dim: int
    ffn_dim: int
    num_heads: int
    num_layers: int
    in_dim: int = 16
    out_dim: int = 16
    text_dim: int = 4096
    freq_dim: int = 256
    patch_size: tuple = (1, 2, 2)
    eps: float = 1e-6
    cross_attn_norm: bool = True  # Wan 2.1 has the affine norm3 before cross-attention

    def __post_init__(self):
        self.patch_size = tuple(int(p) for p in self.patch_size)
        for name in ("dim", "ffn_dim", "num_heads", "num_layers", "in_dim", "out_dim", "text_dim", "freq_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise WanFormatError(f"WanConfig.{name} must be a positive integer (got {value!r})")
        if self.dim % self.num_heads:
            raise WanFormatError(f"WanConfig: dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if self.head_dim % 2:
            raise WanFormatError(f"WanConfig: the head size dim/num_heads = {self.head_dim} must be even (RoPE)")
        if self.freq_dim % 2:
            raise WanFormatError(f"WanConfig.freq_dim must be even (got {self.freq_dim})")
        if len(self.patch_size) != 3:
            raise WanFormatError(f"WanConfig.patch_size must have 3 entries (got {self.patch_size})")

    @property
    def head_dim(self):
        return self.dim // self.num_heads


# ----------------------------------------------------------------------------------------------------------------
# Layers (parameter names as in Wan 2.1)

class WanRMSNorm(nn.Module):
    """RMS norm over the last dimension with a learned scale `weight`, computed in float32 as Wan does."""

    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        normed = x.float() * torch.rsqrt(x.float().pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight.to(x.dtype)


class WanLayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 (as Wan does); affine only for norm3."""

    def __init__(self, dim, eps=1e-6, elementwise_affine=False):
        super().__init__(dim, eps=eps, elementwise_affine=elementwise_affine)

    def forward(self, x):
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).type_as(x)


class WanAttention(nn.Module):
    """Projections of one attention layer (self or text cross-attention); the attention itself is computed by
    the callers, which need the block-causal mask or the KV cache."""

    def __init__(self, dim, num_heads, eps=1e-6):
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.norm_q = WanRMSNorm(dim, eps)
        self.norm_k = WanRMSNorm(dim, eps)


class WanBlock(nn.Module):
    def __init__(self, config):
        super().__init__()
        dim = config.dim
        self.norm1 = WanLayerNorm(dim, config.eps)
        self.self_attn = WanAttention(dim, config.num_heads, config.eps)
        self.norm3 = WanLayerNorm(dim, config.eps, elementwise_affine=True) if config.cross_attn_norm else nn.Identity()
        self.cross_attn = WanAttention(dim, config.num_heads, config.eps)
        self.norm2 = WanLayerNorm(dim, config.eps)
        self.ffn = nn.Sequential(nn.Linear(dim, config.ffn_dim), nn.GELU(approximate="tanh"),
                                 nn.Linear(config.ffn_dim, dim))
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim ** 0.5)


class WanHead(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.norm = WanLayerNorm(config.dim, config.eps)
        self.head = nn.Linear(config.dim, math.prod(config.patch_size) * config.out_dim)
        self.modulation = nn.Parameter(torch.randn(1, 2, config.dim) / config.dim ** 0.5)


# ----------------------------------------------------------------------------------------------------------------
# Helpers over any Wan-shaped module (this WanDiT or ComfyUI's WanModel): they only call submodules.

def model_compute_dtype(model):
    """The dtype a Wan-shaped module computes in: ComfyUI's `WanModel.dtype` when set, else its weights' dtype."""
    dtype = getattr(model, "dtype", None)
    if isinstance(dtype, torch.dtype):
        return dtype
    return model.blocks[0].self_attn.q.weight.dtype


def _patch_input_dtype(model):
    weight = model.patch_embedding.weight
    # ComfyUI keeps patch_embedding in float32 (and casts other storage dtypes on the fly): feed it float32.
    if getattr(model.patch_embedding, "comfy_cast_weights", False):
        return torch.float32
    if weight.dtype not in (torch.float16, torch.bfloat16):
        return torch.float32
    return weight.dtype


def embed_video(model, x, dtype):
    """Patchify latents x [B, C, T, H, W] -> tokens [B, T'*H'*W', dim] in `dtype`, and the grid (T', H', W')."""
    patch = tuple(model.patch_size)
    _, _, frames, height, width = x.shape
    if frames % patch[0] or height % patch[1] or width % patch[2]:
        raise ValueError(f"latent shape (T, H, W) = {(frames, height, width)} must be divisible by the patch size "
                         f"{patch}")
    tokens = model.patch_embedding(x.to(_patch_input_dtype(model))).to(dtype)
    grid = tuple(tokens.shape[2:])
    return tokens.flatten(2).transpose(1, 2), grid


def sinusoidal_embedding(freq_dim, timesteps):
    """Wan's sinusoidal embedding: [N] timesteps (x1000 units) -> [N, freq_dim] float32, cos half first."""
    half = freq_dim // 2
    position = timesteps.float()
    sinusoid = torch.outer(position, torch.pow(10000, -torch.arange(half, device=position.device).float().div(half)))
    return torch.cat([torch.cos(sinusoid), torch.sin(sinusoid)], dim=1)


def time_modulation(model, timestep, dtype):
    """Per-frame time embedding.

    timestep: [B, T] (sigma x 1000). Returns (e [B, T, dim], e0 [B, T, 6, dim]) in `dtype`: `e` feeds the head,
    `e0` (time_projection) the blocks' six shift/scale/gate vectors.
    """
    batch, frames = timestep.shape
    embedding = sinusoidal_embedding(model.freq_dim, timestep.flatten()).to(dtype)
    e = model.time_embedding(embedding).reshape(batch, frames, -1)
    e0 = model.time_projection(e).unflatten(2, (6, model.dim))
    return e, e0


def rope_axes(head_dim):
    """Per-axis sizes (frame, height, width) of the rotary embedding, as Wan splits the head: e.g. 128 -> 44, 42, 42."""
    third = head_dim // 6 * 2
    return head_dim - 2 * third, third, third


def rope_cos_sin(head_dim, grid, frame_offset=0, device=None, theta=10000.0):
    """cos, sin [T*H*W, head_dim // 2] float32 for a token grid (T, H, W) whose first frame is `frame_offset`.

    Frames use absolute positions frame_offset .. frame_offset + T - 1, rows and columns 0 .. H-1 / W-1.
    """
    frames, height, width = grid
    positions = (torch.arange(frames, dtype=torch.float64) + frame_offset,
                 torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64))
    angles = []
    for axis, (size, pos) in enumerate(zip(rope_axes(head_dim), positions)):
        omega = 1.0 / theta ** (torch.arange(0, size, 2, dtype=torch.float64) / size)
        angle = torch.outer(pos, omega)
        shape = [1, 1, 1, size // 2]
        shape[axis] = angle.shape[0]
        angles.append(angle.view(shape).expand(frames, height, width, size // 2))
    angle = torch.cat(angles, dim=-1).reshape(frames * height * width, head_dim // 2)
    return torch.cos(angle).float().to(device), torch.sin(angle).float().to(device)


def apply_rope(x, cos, sin):
    """Rotate pairs (x[2i], x[2i+1]) of x [B, L, heads, head_dim] by the angles of cos/sin [L, head_dim // 2]
    (computed in float32, returned in x's dtype)."""
    pairs = x.float().unflatten(-1, (-1, 2))
    cos = cos[None, :, None, :]
    sin = sin[None, :, None, :]
    even = pairs[..., 0] * cos - pairs[..., 1] * sin
    odd = pairs[..., 0] * sin + pairs[..., 1] * cos
    return torch.stack([even, odd], dim=-1).flatten(-2).type_as(x)


def self_attention_qkv(attention, x, cos, sin):
    """q, k (RoPE applied), v of a self-attention layer: x [B, L, dim] -> three [B, L, heads, head_dim]."""
    heads, head_dim = attention.num_heads, attention.head_dim
    q = attention.norm_q(attention.q(x)).unflatten(-1, (heads, head_dim))
    k = attention.norm_k(attention.k(x)).unflatten(-1, (heads, head_dim))
    v = attention.v(x).unflatten(-1, (heads, head_dim))
    return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v


def cross_attention_kv(attention, context):
    """Text K, V of a cross-attention layer: context [B, L, dim] (after text_embedding) -> two
    [B, L, heads, head_dim]."""
    heads, head_dim = attention.num_heads, attention.head_dim
    k = attention.norm_k(attention.k(context)).unflatten(-1, (heads, head_dim))
    v = attention.v(context).unflatten(-1, (heads, head_dim))
    return k, v


def pad_text(context, length=512):
    """Zero-pad a text context [B, L, text_dim] to `length` tokens, as Wan (and Self-Forcing) do inside the model
    with text_len = 512. ComfyUI's umT5 encoder already returns 512 tokens with the padding zeroed, so ComfyUI
    conditioning needs no padding; use this for raw umT5 outputs cut to the prompt length."""
    if context.shape[1] >= length:
        return context
    return torch.cat([context, context.new_zeros(context.shape[0], length - context.shape[1], context.shape[2])], 1)


def attend(q, k, v, mask=None):
    """Scaled dot-product attention; q [B, Lq, heads, d], k/v [B, Lk, heads, d], boolean mask [Lq, Lk]
    (True = attend). Returns [B, Lq, heads * d]."""
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
    return out.transpose(1, 2).flatten(2)


def per_token(vector, tokens_per_frame):
    """[B, T, dim] per-frame vector -> [B, T * tokens_per_frame, dim]."""
    return vector.repeat_interleave(tokens_per_frame, dim=1)


def block_modulation(block, e0):
    """The six per-frame modulation vectors of a block (shift/scale/gate for self-attention, then for the FFN),
    each [B, T, dim], from e0 [B, T, 6, dim]."""
    modulation = block.modulation.to(device=e0.device, dtype=e0.dtype)  # [1, 6, dim]
    return (modulation.unsqueeze(0) + e0).unbind(2)


def modulate(normed, shift, scale, tokens_per_frame):
    return normed * (1 + per_token(scale, tokens_per_frame)) + per_token(shift, tokens_per_frame)


def cross_attention_and_ffn(block, x, text_k, text_v, modulation, tokens_per_frame):
    """The part of a Wan block after self-attention: text cross-attention, then the modulated FFN."""
    attention = block.cross_attn
    q = attention.norm_q(attention.q(block.norm3(x))).unflatten(-1, (attention.num_heads, attention.head_dim))
    x = x + attention.o(attend(q, text_k, text_v))
    y = block.ffn(modulate(block.norm2(x), modulation[3], modulation[4], tokens_per_frame))
    return x + y * per_token(modulation[5], tokens_per_frame)


def head_output(model, x, e, tokens_per_frame):
    """Final modulated norm + linear head: x [B, L, dim], e [B, T, dim] -> [B, L, prod(patch) * out_dim]."""
    modulation = model.head.modulation.to(device=e.device, dtype=e.dtype)  # [1, 2, dim]
    shift, scale = (modulation.unsqueeze(0) + e.unsqueeze(2)).unbind(2)
    return model.head.head(modulate(model.head.norm(x), shift, scale, tokens_per_frame))


def unpatchify(model, x, grid):
    """[B, T'*H'*W', prod(patch) * out_dim] -> latents [B, out_dim, T'*pt, H'*ph, W'*pw]."""
    patch = tuple(model.patch_size)
    channels = model.out_dim
    batch = x.shape[0]
    x = x.view(batch, *grid, *patch, channels)
    x = torch.einsum("bfhwpqrc->bcfphqwr", x)
    return x.reshape(batch, channels, *[g * p for g, p in zip(grid, patch)])


def expand_timestep(timestep, batch, frames, device):
    """timestep: number, [B] or [B, T] (x1000 units) -> float [B, T]."""
    timestep = torch.as_tensor(timestep, device=device, dtype=torch.float32)
    if timestep.ndim == 0:
        timestep = timestep.expand(batch)
    if timestep.ndim == 1:
        if timestep.shape[0] != batch:
            raise ValueError(f"timestep of shape {tuple(timestep.shape)}: expected [B] or [B, T] with B = {batch}")
        timestep = timestep[:, None].expand(batch, frames)
    if timestep.shape != (batch, frames):
        raise ValueError(f"timestep of shape {tuple(timestep.shape)}: expected [B] or [B, T] with B = {batch}, "
                         f"T = {frames} latent frames")
    return timestep


def validate_window(frames_per_block, local_attn_frames, sink_frames):
    if frames_per_block is not None and (not isinstance(frames_per_block, int) or frames_per_block < 1):
        raise ValueError(f"frames_per_block must be a positive integer or None (got {frames_per_block!r})")
    if not isinstance(sink_frames, int) or sink_frames < 0:
        raise ValueError(f"sink_frames must be a non-negative integer (got {sink_frames!r})")
    if local_attn_frames is None:
        return
    if frames_per_block is None:
        raise ValueError("local_attn_frames needs frames_per_block (a local window is defined over causal blocks)")
    if not isinstance(local_attn_frames, int) or local_attn_frames < sink_frames + frames_per_block:
        raise ValueError(f"local_attn_frames must be an integer >= sink_frames + frames_per_block = "
                         f"{sink_frames + frames_per_block} so that a block sees itself (got {local_attn_frames!r})")


def block_causal_mask(num_frames, tokens_per_frame, frames_per_block, frame_offset=0, local_attn_frames=None,
                      sink_frames=0, device=None):
    """Boolean attention mask [L, L] (True = attend), L = num_frames * tokens_per_frame.

    Frame f of the sequence has absolute index a = frame_offset + f and block a // frames_per_block. A token of frame
    f attends to the tokens of frame g iff block(g) <= block(f) and, with a local window, g is one of the first
    `sink_frames` absolute frames or one of the last local_attn_frames - sink_frames frames up to the end of f's block.

    This is Self-Forcing's `local_attn_size` / `sink_size` rule: its KV cache holds `local_attn_size` frames and,
    when full, evicts the oldest frames after the sink, so a block sees `local_attn_frames` frames in total (sink and
    itself included) once the video is long enough; its training mask is the same window without a sink.
    """
    frames = range(frame_offset, frame_offset + num_frames)
    return frame_mask(frames, frames, tokens_per_frame, frames_per_block, local_attn_frames, sink_frames, device)


def frame_mask(query_frames, key_frames, tokens_per_frame, frames_per_block, local_attn_frames=None, sink_frames=0,
               device=None):
    """`block_causal_mask`'s rule between any absolute frames: [Lq, Lk] (True = attend) for queries of the frames
    `query_frames` and keys of the frames `key_frames` (e.g. a KV cache's frames followed by new ones)."""
    validate_window(frames_per_block, local_attn_frames, sink_frames)
    queries = torch.as_tensor(list(query_frames), dtype=torch.long)
    key = torch.as_tensor(list(key_frames), dtype=torch.long)[None, :]
    query_end = ((queries // frames_per_block + 1) * frames_per_block)[:, None]  # exclusive end of each block
    allowed = key < query_end
    if local_attn_frames is not None:
        allowed &= (key < sink_frames) | (key >= query_end - (local_attn_frames - sink_frames))
    mask = allowed.repeat_interleave(tokens_per_frame, dim=0).repeat_interleave(tokens_per_frame, dim=1)
    return mask.to(device)


# ----------------------------------------------------------------------------------------------------------------

class WanDiT(nn.Module):
    """Wan 2.1 text-to-video DiT (original parameter names), plain torch.

    forward(x [B, C, T, H, W], timestep [B] or [B, T] (sigma x 1000), context [B, L, text_dim]) -> v, x's shape.
    """

    def __init__(self, config: WanConfig):
        super().__init__()
        self.config = config
        self.dim = config.dim
        self.freq_dim = config.freq_dim
        self.out_dim = config.out_dim
        self.patch_size = config.patch_size
        self.num_heads = config.num_heads
        self.patch_embedding = nn.Conv3d(config.in_dim, config.dim, kernel_size=config.patch_size,
                                         stride=config.patch_size)
        self.text_embedding = nn.Sequential(nn.Linear(config.text_dim, config.dim), nn.GELU(approximate="tanh"),
                                            nn.Linear(config.dim, config.dim))
        self.time_embedding = nn.Sequential(nn.Linear(config.freq_dim, config.dim), nn.SiLU(),
                                            nn.Linear(config.dim, config.dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(config.dim, config.dim * 6))
        self.blocks = nn.ModuleList([WanBlock(config) for _ in range(config.num_layers)])
        self.head = WanHead(config)

    @property
    def dtype(self):
        return self.blocks[0].self_attn.q.weight.dtype

    def forward(self, x, timestep, context, frames_per_block=None, frame_offset=0, *, local_attn_frames=None,
                sink_frames=0):
        """Full forward.

        x: latents [B, in_dim, T, H, W]; timestep: [B] or [B, T] in sigma x 1000 units; context: [B, L, text_dim]
        (raw text-encoder output). frames_per_block None = full attention; an int = block-causal mask over latent
        frames whose absolute indices start at `frame_offset` (also the RoPE frame positions). local_attn_frames /
        sink_frames: Self-Forcing's local window (see `block_causal_mask`). Returns v [B, out_dim, T, H, W].
        """
        dtype = self.dtype
        batch = x.shape[0]
        tokens, grid = embed_video(self, x, dtype)
        tokens_per_frame = grid[1] * grid[2]
        e, e0 = time_modulation(self, expand_timestep(timestep, batch, grid[0], x.device), dtype)
        if context.shape[0] != batch:
            context = context.expand(batch, -1, -1)
        text = self.text_embedding(context.to(dtype))
        cos, sin = rope_cos_sin(self.config.head_dim, grid, frame_offset, device=x.device)
        mask = None
        if frames_per_block is not None:
            mask = block_causal_mask(grid[0], tokens_per_frame, frames_per_block, frame_offset, local_attn_frames,
                                     sink_frames, device=x.device)
        elif local_attn_frames is not None or sink_frames:
            raise ValueError("local_attn_frames / sink_frames need frames_per_block")
        for block in self.blocks:
            modulation = block_modulation(block, e0)
            q, k, v = self_attention_qkv(block.self_attn,
                                         modulate(block.norm1(tokens), modulation[0], modulation[1], tokens_per_frame),
                                         cos, sin)
            tokens = tokens + block.self_attn.o(attend(q, k, v, mask)) * per_token(modulation[2], tokens_per_frame)
            text_k, text_v = cross_attention_kv(block.cross_attn, text)
            tokens = cross_attention_and_ffn(block, tokens, text_k, text_v, modulation, tokens_per_frame)
        return unpatchify(self, head_output(self, tokens, e, tokens_per_frame), grid)


# ----------------------------------------------------------------------------------------------------------------
# Loading and saving

def _describe_keys(keys, limit=4):
    keys = sorted(keys)
    shown = ", ".join(repr(k) for k in keys[:limit])
    return f"{len(keys)} keys, e.g. {shown}"


def strip_wan_prefix(state_dict, source="state dict"):
    """Return the state dict with original Wan names: strips one of the prefixes "model.diffusion_model." (ComfyUI
    full checkpoints) or "model." (Self-Forcing's WanDiffusionWrapper); raises WanFormatError for other layouts."""
    keys = list(state_dict.keys())
    if not keys:
        raise WanFormatError(f"{source} is empty: expected Wan 2.1 DiT weights")
    for prefix in ("",) + PREFIXES:
        if all(k.startswith(prefix) for k in keys) and f"{prefix}patch_embedding.weight" in state_dict:
            stripped = {k[len(prefix):]: v for k, v in state_dict.items()}
            _check_wan_keys(stripped, source)
            return stripped
    # Files that hold other components next to the DiT (e.g. a full ComfyUI checkpoint): keep the DiT part.
    for prefix in PREFIXES:
        if f"{prefix}patch_embedding.weight" in state_dict:
            stripped = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
            _check_wan_keys(stripped, source)
            return stripped
    _check_wan_keys(state_dict, source)  # raises with a description of what was found
    return state_dict


def _check_wan_keys(state_dict, source):
    keys = set(state_dict)
    if any(k.startswith(("condition_embedder.", "proj_out.")) or ".attn1." in k for k in keys):
        raise WanFormatError(
            f"{source} uses diffusers names ({_describe_keys(keys)}); this loader expects the original Wan 2.1 "
            "names (patch_embedding, blocks.N.self_attn.q, head.head, ...). Use the original-format file (e.g. "
            "Comfy-Org's repackaged wan2.1_t2v_*.safetensors), or load the diffusers file with ComfyUI's Load "
            "Diffusion Model, which converts it.")
    if any(k.startswith(("img_emb.", "vace_", "control_adapter.", "ref_conv.")) or ".k_img." in k for k in keys):
        raise WanFormatError(f"{source} is a Wan image-to-video / VACE / control variant ({_describe_keys(keys)}); "
                             "only text-to-video Wan 2.1 DiTs are supported")
    missing = [k for k in REQUIRED_KEYS if k not in keys]
    if missing:
        raise WanFormatError(
            f"{source} is not a Wan 2.1 DiT with original names: missing {missing} ({_describe_keys(keys)}). "
            "Expected keys like 'patch_embedding.weight', 'blocks.0.self_attn.q.weight', 'head.head.weight', "
            "optionally all prefixed by 'model.' or 'model.diffusion_model.'. Self-Forcing .pt checkpoints: "
            "load them with the Load Causal Wan Checkpoint node (or convert them with "
            "scripts/convert_self_forcing.py).")


def infer_config(state_dict, head_dim=128):
    """WanConfig from the weights' shapes (original names, prefixes already stripped).

    The number of heads is not stored in the weights: heads = dim // head_dim (Wan and ComfyUI use 128).
    """
    _check_wan_keys(state_dict, "state dict")
    patch = state_dict["patch_embedding.weight"]
    dim, in_dim = patch.shape[0], patch.shape[1]
    patch_size = tuple(int(s) for s in patch.shape[2:])
    if dim % head_dim:
        raise WanFormatError(f"infer_config: dim {dim} is not a multiple of head_dim {head_dim}; pass the head size "
                             "the model was trained with")
    layer_indices = {int(k.split(".")[1]) for k in state_dict if k.startswith("blocks.")}
    num_layers = len(layer_indices)
    if layer_indices != set(range(num_layers)):
        raise WanFormatError(f"infer_config: block indices {sorted(layer_indices)} are not 0..{num_layers - 1}")
    head_out = state_dict["head.head.weight"].shape[0]
    if head_out % math.prod(patch_size):
        raise WanFormatError(f"infer_config: head.head has {head_out} outputs, not a multiple of the patch volume "
                             f"{math.prod(patch_size)}")
    return WanConfig(dim=int(dim), ffn_dim=int(state_dict["blocks.0.ffn.0.weight"].shape[0]),
                     num_heads=int(dim // head_dim), num_layers=num_layers, in_dim=int(in_dim),
                     out_dim=int(head_out // math.prod(patch_size)),
                     text_dim=int(state_dict["text_embedding.0.weight"].shape[1]),
                     freq_dim=int(state_dict["time_embedding.0.weight"].shape[1]), patch_size=patch_size,
                     cross_attn_norm="blocks.0.norm3.weight" in state_dict)


def load_wan_state_dict(path):
    """Load a Wan 2.1 DiT .safetensors file and return its state dict with original names (prefixes stripped)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Wan checkpoint not found: {path}")
    if not path.endswith(".safetensors"):
        raise WanFormatError(f"{path}: expected a .safetensors file (Self-Forcing .pt checkpoints: convert them with "
                             "scripts/convert_self_forcing.py)")
    state_dict = load_tensors(path, "Wan 2.1 DiT weights (original Wan key names)",
                              "Download it again (or convert it again with scripts/convert_self_forcing.py).")
    return strip_wan_prefix(state_dict, source=path)


def load_wan(path, device="cpu", dtype=torch.float32, head_dim=128):
    """Build a WanDiT from a .safetensors file (config inferred from the shapes)."""
    state_dict = load_wan_state_dict(path)
    model = WanDiT(infer_config(state_dict, head_dim=head_dim))
    model.load_state_dict(state_dict, strict=True)
    return model.to(device=device, dtype=dtype).eval()


def save_wan(model, path, dtype=None):
    """Save a WanDiT's weights (original names, no prefix) to .safetensors, optionally cast to `dtype`."""
    from safetensors.torch import save_file

    state_dict = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().contiguous().cpu()
                  for k, v in model.state_dict().items()}
    save_file(state_dict, path)
