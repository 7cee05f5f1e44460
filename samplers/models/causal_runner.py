"""KV-cached block-autoregressive inference over any Wan-shaped DiT.

`CausalWanRunner` drives the reference `samplers.wan.WanDiT` (tests, standalone) or ComfyUI's `WanModel` (inside
ComfyUI) by calling their submodules only (patch_embedding, time_embedding, blocks[i].self_attn.q, ...), so that
ComfyUI's weight casting, LoRA patches and offloading apply; nothing is subclassed or copied.

Semantics (docs/sdvg.md, "Exact semantics"):
- the cache holds committed blocks only: per layer the RoPE-applied K and V of every committed frame the next
  blocks can still attend to, plus the text cross-attention K/V computed once by `reset`;
- `predict(block, sigma)` returns the flow prediction of the current block attending to `cache ++ block`; the
  committed part of the cache is left untouched (the block's own K/V go to scratch slots after the committed end,
  which the next call overwrites), so a rejected draft needs no rollback;
- `commit(clean_block)` runs the model once at t = 0 on the clean latents and appends the block's K/V;
- RoPE frame positions are absolute (block k covers frames k*F .. k*F + F - 1), the time embedding is per frame;
- optional local window with sink frames, Self-Forcing's `local_attn_size` / `sink_size` rule: a block ending
  (exclusively) at frame e attends to frames g < e with g < sink_frames or g >= e - (local_attn_frames - sink_frames),
  i.e. `local_attn_frames` frames in total (sink and current block included) once the video is long enough.
  Frames no later block can see are dropped from the cache at commit time, so the cache needs at most
  `local_attn_frames` frames of room.

The result equals `WanDiT.forward(committed ++ block, frames_per_block=F, local_attn_frames, sink_frames)` restricted
to the block (tests/plain_torch/test_causal.py checks it to 1e-5 in float32).
"""
import torch

from .device import model_device
from .wan import (attend, block_modulation, cross_attention_and_ffn, cross_attention_kv, embed_video, expand_timestep,
                  head_output, model_compute_dtype, modulate, per_token, rope_cos_sin,
                  self_attention_qkv, time_modulation, unpatchify, validate_window)


def _model_shape(model_or_config):
    """(num_layers, dim, num_heads, head_dim) of a WanConfig, a WanDiT or ComfyUI's WanModel."""
    if hasattr(model_or_config, "blocks"):
        attention = model_or_config.blocks[0].self_attn
        return len(model_or_config.blocks), model_or_config.dim, attention.num_heads, attention.head_dim
    config = model_or_config
    return config.num_layers, config.dim, config.num_heads, config.dim // config.num_heads


def kv_cache_bytes(model_or_config, *, tokens_per_frame, max_frames, batch_size=1, dtype=torch.bfloat16,
                   local_attn_frames=None):
    """Bytes of the self-attention KV cache: 2 (K and V) x layers x batch x frames x tokens_per_frame x dim x
    bytes per element, with frames = max_frames (or local_attn_frames when a window caps it). The text K/V
    (2 x layers x batch x text tokens x dim) and activations come on top.

    Example: Wan 1.3B (30 layers, dim 1536) at 832x480 (1560 tokens per latent frame), 81 frames (21 latent frames),
    bf16: 2*30*21*1560*1536*2 bytes = 5.62 GiB; Wan 14B (40 layers, dim 5120): 25.0 GiB.
    """
    num_layers, dim, _, _ = _model_shape(model_or_config)
    frames = max_frames if local_attn_frames is None else min(max_frames, local_attn_frames)
    itemsize = torch.empty((), dtype=dtype).element_size()
    return 2 * num_layers * batch_size * frames * tokens_per_frame * dim * itemsize


class KVCache:
    """Per layer K and V pre-allocated as [B, capacity_tokens, heads, head_dim] in one dtype, plus bookkeeping.

    `frames` lists, in slot order, the absolute index of every committed frame held (a prefix of sink frames, then
    the most recent frames); `end` is the number of committed tokens held. Slots after `end` are scratch for the
    block being denoised.
    """

    def __init__(self, num_layers, batch_size, capacity_frames, tokens_per_frame, num_heads, head_dim, dtype, device):
        self.tokens_per_frame = tokens_per_frame
        self.capacity_frames = capacity_frames
        shape = (batch_size, capacity_frames * tokens_per_frame, num_heads, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.frames = []

    @property
    def end(self):
        return len(self.frames) * self.tokens_per_frame

    @property
    def nbytes(self):
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)

    def clear(self):
        self.frames = []

    def evict(self, keep):
        """Keep only the held frames for which keep(frame) is true; they must stay a prefix + a suffix of the
        slots (sink frames, then recent frames), so the survivors are moved left over the dropped run."""
        keep_flags = [bool(keep(frame)) for frame in self.frames]
        if all(keep_flags):
            return
        first = keep_flags.index(False)
        count = keep_flags[first:].index(True) if True in keep_flags[first:] else len(keep_flags) - first
        if not all(keep_flags[first + count:]):
            raise RuntimeError("KVCache.evict: the frames to drop must be one contiguous run of slots")
        per_frame = self.tokens_per_frame
        start, stop, end = first * per_frame, (first + count) * per_frame, self.end
        for tensor in self.keys + self.values:
            tensor[:, start:start + end - stop] = tensor[:, stop:end].clone()
        del self.frames[first:first + count]


class CausalWanRunner:
    """Block-autoregressive inference of a Wan-shaped DiT with a KV cache of committed blocks.

    model: WanDiT or ComfyUI's WanModel (anything with Wan's submodules and the attributes dim, freq_dim, out_dim,
    patch_size, blocks[i].self_attn.num_heads / head_dim). latent_height / latent_width: latent size (pixels / 8).
    max_frames: latent frames the cache must hold (the whole video, or the window). frames_per_block: latent frames
    per block (3 for Self-Forcing / Krea). local_attn_frames / sink_frames: Self-Forcing's local window (None = all
    earlier frames). device / dtype: default to the model's; the computation and the cache use `dtype`.
    """

    def __init__(self, model, *, latent_height, latent_width, max_frames, frames_per_block=3, local_attn_frames=None,
                 sink_frames=0, batch_size=1, device=None, dtype=None):
        validate_window(frames_per_block, local_attn_frames, sink_frames)
        patch = tuple(model.patch_size)
        if patch[0] != 1:
            raise ValueError(f"CausalWanRunner needs a temporal patch size of 1 (got patch_size {patch})")
        if latent_height % patch[1] or latent_width % patch[2]:
            raise ValueError(f"latent_height x latent_width = {latent_height} x {latent_width} must be divisible by "
                             f"the patch size {patch[1]} x {patch[2]}")
        if not isinstance(max_frames, int) or max_frames < frames_per_block:
            raise ValueError(f"max_frames must be an integer >= frames_per_block = {frames_per_block} "
                             f"(got {max_frames!r})")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer (got {batch_size!r})")
        self.model = model
        self.latent_height = latent_height
        self.latent_width = latent_width
        self.max_frames = max_frames
        self.frames_per_block = frames_per_block
        self.local_attn_frames = local_attn_frames
        self.sink_frames = sink_frames
        self.batch_size = batch_size
        self.device = torch.device(device) if device is not None else model_device(model)
        self.dtype = dtype if dtype is not None else model_compute_dtype(model)
        self.tokens_per_frame = (latent_height // patch[1]) * (latent_width // patch[2])
        num_layers, _, num_heads, head_dim = _model_shape(model)
        self.head_dim = head_dim
        capacity = max_frames if local_attn_frames is None else min(max_frames, local_attn_frames)
        self.cache = KVCache(num_layers, batch_size, capacity, self.tokens_per_frame, num_heads, head_dim,
                             self.dtype, self.device)
        self.text_keys = None
        self.text_values = None
        self.committed_frames = 0

    @torch.no_grad()
    def reset(self, context):
        """Start a new video: context [B or 1, L, text_dim] (raw text-encoder output). Computes the text embedding
        and every layer's cross-attention K/V once, and empties the cache."""
        if context.ndim != 3:
            raise ValueError(f"context must be [B, L, text_dim] (got shape {tuple(context.shape)})")
        if context.shape[0] not in (1, self.batch_size):
            raise ValueError(f"context batch {context.shape[0]} must be 1 or batch_size = {self.batch_size}")
        context = context.to(device=self.device, dtype=self.dtype).expand(self.batch_size, -1, -1)
        text = self.model.text_embedding(context)
        pairs = [cross_attention_kv(block.cross_attn, text) for block in self.model.blocks]
        self.text_keys = [k for k, _ in pairs]
        self.text_values = [v for _, v in pairs]
        self.cache.clear()
        self.committed_frames = 0

    @torch.no_grad()
    def predict(self, block, sigma):
        """Flow prediction v [B, C, F, H, W] of the block [B, C, F, H, W] at noise level sigma (float or [B];
        x0 = block - sigma * v), attending to the committed frames; commits nothing."""
        return self._forward(block, sigma, commit=False)

    @torch.no_grad()
    def commit(self, clean_block):
        """Append the clean block's K/V (computed at t = 0) to the cache; advances committed_frames by F."""
        self._forward(clean_block, 0.0, commit=True)

    def _check_block(self, block):
        expected = (self.batch_size, self.frames_per_block, self.latent_height, self.latent_width)
        if block.ndim != 5 or (block.shape[0], *block.shape[2:]) != expected:
            raise ValueError(f"block of shape {tuple(block.shape)}: expected [B, C, F, H, W] with (B, F, H, W) = "
                             f"{expected}")
        if self.text_keys is None:
            raise RuntimeError("CausalWanRunner: call reset(context) before predict / commit")
        if self.committed_frames + self.frames_per_block > self.max_frames:
            raise ValueError(f"CausalWanRunner: {self.committed_frames} frames committed, one more block of "
                             f"{self.frames_per_block} exceeds max_frames = {self.max_frames}")

    def _forward(self, block, sigma, commit):
        self._check_block(block)
        model, cache = self.model, self.cache
        block = block.to(self.device)
        tokens, grid = embed_video(model, block, self.dtype)
        per_frame = self.tokens_per_frame
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=self.device)
        timestep = expand_timestep(sigma * 1000.0, self.batch_size, grid[0], self.device)
        e, e0 = time_modulation(model, timestep, self.dtype)
        cos, sin = rope_cos_sin(self.head_dim, grid, frame_offset=self.committed_frames, device=self.device)
        start, stop = cache.end, cache.end + tokens.shape[1]
        for index, layer in enumerate(model.blocks):
            modulation = block_modulation(layer, e0)
            q, k, v = self_attention_qkv(layer.self_attn,
                                         modulate(layer.norm1(tokens), modulation[0], modulation[1], per_frame),
                                         cos, sin)
            # The block's K/V go to the scratch slots after the committed end: the attention reads one contiguous
            # slice, and `commit` turns the same slots into committed ones.
            cache.keys[index][:, start:stop] = k
            cache.values[index][:, start:stop] = v
            out = attend(q, cache.keys[index][:, :stop], cache.values[index][:, :stop])
            tokens = tokens + layer.self_attn.o(out) * per_token(modulation[2], per_frame)
            if commit and index == len(model.blocks) - 1:
                break  # the last layer's output only feeds the head, which a commit does not need
            tokens = cross_attention_and_ffn(layer, tokens, self.text_keys[index], self.text_values[index], modulation,
                                             per_frame)
        if commit:
            first = self.committed_frames
            cache.frames.extend(range(first, first + self.frames_per_block))
            self.committed_frames += self.frames_per_block
            if self.local_attn_frames is not None:
                # Drop what no later block can see: the next block ends at committed + F.
                next_end = self.committed_frames + self.frames_per_block
                recent_from = next_end - (self.local_attn_frames - self.sink_frames)
                cache.evict(lambda frame: frame < self.sink_frames or frame >= recent_from)
            return None
        return unpatchify(model, head_output(model, tokens, e, per_frame), grid)
