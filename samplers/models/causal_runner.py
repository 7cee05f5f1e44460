"""KV-cached block-autoregressive inference over any Wan-shaped DiT, under two inference protocols.

`CausalWanRunner` drives the reference `samplers.wan.WanDiT` (tests, standalone) or ComfyUI's `WanModel` (inside
ComfyUI) by calling their submodules only (patch_embedding, time_embedding, blocks[i].self_attn.q, ...), so that
ComfyUI's weight casting, LoRA patches and offloading apply; nothing is subclassed or copied. Attention goes through
the function it is given (default: SDPA, `samplers.models.wan.attend`), so ComfyUI can hand it its own dispatch.

Common to both protocols (docs/sdvg.md, "Exact semantics"): the text cross-attention K/V are computed once by
`reset`; `predict(block, sigma, timestep)` returns the flow prediction of the current block attending to
`cache ++ block`, writing the block's K/V only to scratch slots after the cache's end (the next call overwrites
them), so a rejected draft needs no rollback; the time embedding is per frame. Every model forward is logged in
`forwards` (query tokens, self-attention keys, head or K/V only), whose FLOPs `forward_flops` gives
(`samplers/models/flops.py`).

Protocol "self_forcing" (Self-Forcing's CausalInferencePipeline):
- `commit(clean_block)` runs the model once at t = 0 on the clean latents and appends the block's K/V; several blocks
  at once (a deferred commit) are one forward with the block-causal mask over `cache ++ blocks`;
- RoPE frame positions are absolute (block k covers frames k*F .. k*F + F - 1);
- optional local window with sink frames, Self-Forcing's `local_attn_size` / `sink_size` rule: a block ending
  (exclusively) at frame e attends to frames g < e with g < sink_frames or g >= e - (local_attn_frames - sink_frames),
  i.e. `local_attn_frames` frames in total (sink and current block included) once the video is long enough.
  Frames no later block can see are dropped from the cache at commit time, so the cache needs at most
  `local_attn_frames` frames of room.
The result equals `WanDiT.forward(committed ++ block, frames_per_block=F, local_attn_frames, sink_frames)` restricted
to the block (tests/plain_torch/test_causal.py checks it to 1e-5 in float32).

Protocol "krea_realtime" (Krea's release_server.py `GenerationSession`), with K = `context_frames`:
- no clean pass: `commit(clean_blocks, context)` empties the cache and rebuilds it with one forward at t = 0 over
  the context latents [B, C, K', H, W] (K' <= K, built by `recompute_context`), at RoPE positions 0 .. K'-1 with the
  block-causal mask (blocks of F frames); the context alone decides the cache, so one rebuild after several blocks
  equals a rebuild after each;
- the next block sits at positions K' .. K'+F-1 (= min(k F, K) for block k); the cache never holds more than
  K + F frames.
"""
import torch

from .device import model_device
from .flops import forward_flops
from .wan import (attend, block_causal_mask, block_modulation, cross_attention_and_ffn, cross_attention_kv, embed_video,
                  expand_timestep, frame_mask, head_output, model_compute_dtype, modulate, per_token, rope_cos_sin,
                  self_attention_qkv, time_modulation, unpatchify, validate_window)


def _model_shape(model_or_config):
    """(num_layers, dim, num_heads, head_dim) of a WanConfig, a WanDiT or ComfyUI's WanModel."""
    if hasattr(model_or_config, "blocks"):
        attention = model_or_config.blocks[0].self_attn
        return len(model_or_config.blocks), model_or_config.dim, attention.num_heads, attention.head_dim
    config = model_or_config
    return config.num_layers, config.dim, config.num_heads, config.dim // config.num_heads


def cache_frames(protocol, max_frames, frames_per_block=3, local_attn_frames=None, context_frames=3):
    """Latent frames of KV-cache room a runner needs: self_forcing the whole video (or the window), krea_realtime
    K + frames_per_block (never more than the video)."""
    check_protocol(protocol)
    if protocol == "krea_realtime":
        return min(max_frames, context_frames + frames_per_block)
    return max_frames if local_attn_frames is None else min(max_frames, local_attn_frames)


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


PROTOCOLS = ("self_forcing", "krea_realtime")


def check_protocol(protocol, name="protocol"):
    if protocol not in PROTOCOLS:
        raise ValueError(f"{name}: expected one of {list(PROTOCOLS)}, got {protocol!r}")
    return protocol


def pixel_buffer_frames(context_frames):
    """Krea's decoded pixel buffer: 1 + 4 (K - 1) frames (the frames of K latent frames, the first on its own)."""
    return 1 + 4 * (context_frames - 1)


def recompute_context(latents, context_frames, frames_per_block, encode_oldest_pixel):
    """Krea's `get_clean_context_frames`: the latents the cache is rebuilt from before the next block.

    latents: every committed latent frame so far [B, C, T, H, W] (T = k F before block k >= 1). The context is the
    first latent frame (while (k - 1) F < K), else the encoding of the oldest frame of the decoded pixel buffer
    (`encode_oldest_pixel()` -> [B, C, 1, H, W], called only then), followed by the last K - 1 frames after
    frame 0. Returns [B, C, K', H, W] with K' = min(T, K).
    """
    frames = latents.shape[2]
    rest = latents[:, :, 1:][:, :, max(frames - 1 - (context_frames - 1), 0):]
    if frames - frames_per_block < context_frames:
        first = latents[:, :, :1]
    else:
        first = encode_oldest_pixel().to(device=latents.device, dtype=latents.dtype)
    return torch.cat([first, rest], dim=2)


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
    earlier frames). protocol: "self_forcing" or "krea_realtime" (module docstring); context_frames: Krea's K
    (kv_cache_num_frames, >= 2). attention: `attend(q, k, v, mask=None)` as `samplers.models.wan.attend` (the
    default). device / dtype: default to the model's; the computation and the cache use `dtype`.
    max_commit_blocks: at most this many blocks per self_forcing commit forward (None: as many as the cache has
    room for); the memory plan's `deferred_blocks` when the deferred commit of every skipped block does not fit.
    """

    def __init__(self, model, *, latent_height, latent_width, max_frames, frames_per_block=3, local_attn_frames=None,
                 sink_frames=0, batch_size=1, device=None, dtype=None, protocol="self_forcing", context_frames=3,
                 attention=None, max_commit_blocks=None):
        check_protocol(protocol)
        if max_commit_blocks is not None and (not isinstance(max_commit_blocks, int) or max_commit_blocks < 1):
            raise ValueError(f"max_commit_blocks must be None or an integer >= 1 (got {max_commit_blocks!r})")
        validate_window(frames_per_block, local_attn_frames, sink_frames)
        if protocol == "krea_realtime":
            if local_attn_frames is not None or sink_frames:
                raise ValueError("local_attn_frames / sink_frames belong to the self_forcing protocol; krea_realtime "
                                 "rebuilds its cache from context_frames latents instead")
            if not isinstance(context_frames, int) or context_frames < 2:
                raise ValueError(f"context_frames must be an integer >= 2 (got {context_frames!r})")
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
        self.protocol = protocol
        self.context_frames = context_frames
        self.max_commit_blocks = max_commit_blocks
        self.attention = attention if attention is not None else attend
        self.device = torch.device(device) if device is not None else model_device(model)
        self.dtype = dtype if dtype is not None else model_compute_dtype(model)
        self.tokens_per_frame = (latent_height // patch[1]) * (latent_width // patch[2])
        num_layers, _, num_heads, head_dim = _model_shape(model)
        self.head_dim = head_dim
        capacity = cache_frames(protocol, max_frames, frames_per_block, local_attn_frames, context_frames)
        self.cache = KVCache(num_layers, batch_size, capacity, self.tokens_per_frame, num_heads, head_dim,
                             self.dtype, self.device)
        self.text_keys = None
        self.text_values = None
        self.committed_frames = 0
        # One (query tokens, self-attention keys, head) per model forward, appended by `_forward`: what the costs
        # of a run are counted from (`forward_flops`).
        self.forwards = []

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

    @property
    def block_start_frame(self):
        """RoPE frame position of the next block's first frame."""
        if self.protocol == "krea_realtime":
            return len(self.cache.frames)
        return self.committed_frames

    @torch.no_grad()
    def predict(self, block, sigma, timestep=None):
        """Flow prediction v [B, C, F, H, W] of the block [B, C, F, H, W] at noise level sigma (float or [B];
        x0 = block - sigma * v), attending to the cache; changes no committed state. timestep: the model's timestep
        input (x1000 units; default 1000 x sigma)."""
        self._check_block(block)
        if timestep is None:
            timestep = torch.as_tensor(sigma, dtype=torch.float32, device=self.device) * 1000.0
        return self._forward(block, timestep, self.block_start_frame)

    @torch.no_grad()
    def commit(self, clean_blocks, context=None):
        """Commit clean blocks [B, C, n F, H, W] (n >= 1: every block committed since this runner's last commit,
        oldest first); advances committed_frames by n F.

        self_forcing: append their K/V, computed at t = 0. One block is one forward, as Self-Forcing commits; several
        (a deferred commit) are one forward with the block-causal mask (and the window) over `cache ++ blocks`, the
        same K/V as committing them one by one up to float rounding; a window whose room is smaller than the blocks,
        or `max_commit_blocks` (the memory plan's `deferred_blocks`), splits them into as few forwards as fit.
        krea_realtime: `context` [B, C, K', H, W] (from `recompute_context` over every committed latent, so it
        already ends with these blocks' frames) replaces the cache, computed at t = 0 at positions 0 .. K'-1 with the
        block-causal mask; the blocks themselves are only counted."""
        self._check_block(clean_blocks, commit=True)
        if self.protocol == "krea_realtime":
            if context is None or context.ndim != 5 or not 1 <= context.shape[2] <= self.context_frames:
                shape = None if context is None else tuple(context.shape)
                raise ValueError(f"krea_realtime commit needs context latents [B, C, K', H, W] with K' <= "
                                 f"{self.context_frames} (got {shape})")
            self.cache.clear()
            frames = context.shape[2]
            mask = block_causal_mask(frames, self.tokens_per_frame, self.frames_per_block, device=self.device)
            self._forward(context, 0.0, 0, mask=None if bool(mask.all()) else mask, head=False)
            self.cache.frames.extend(range(frames))
            self.committed_frames += clean_blocks.shape[2]
            return
        blocks = list(clean_blocks.split(self.frames_per_block, dim=2))
        while blocks:
            room = max((self.cache.capacity_frames - len(self.cache.frames)) // self.frames_per_block, 1)
            room = min(room, self.max_commit_blocks or room)
            self._append(torch.cat(blocks[:room], dim=2))
            blocks = blocks[room:]

    def _append(self, clean):
        """self_forcing: one t = 0 forward over the clean blocks [B, C, n F, H, W] appends their K/V, then drops
        what no later block can see."""
        first, count = self.committed_frames, clean.shape[2]
        mask = None
        if count > self.frames_per_block:  # several blocks: each sees the cache and the blocks up to its own
            mask = frame_mask(range(first, first + count), self.cache.frames + list(range(first, first + count)),
                              self.tokens_per_frame, self.frames_per_block, self.local_attn_frames,
                              self.sink_frames, device=self.device)
        self._forward(clean, 0.0, first, mask=mask, head=False)
        self.cache.frames.extend(range(first, first + count))
        self.committed_frames += count
        if self.local_attn_frames is not None:
            # Drop what no later block can see: the next block ends at committed + F.
            next_end = self.committed_frames + self.frames_per_block
            recent_from = next_end - (self.local_attn_frames - self.sink_frames)
            self.cache.evict(lambda frame: frame < self.sink_frames or frame >= recent_from)

    def visible_frames(self, block_index):
        """Committed latent frames block `block_index` attends to under this runner's protocol (when every earlier
        block is committed): krea_realtime min(k F, K); self_forcing every earlier frame, or the window's."""
        before = block_index * self.frames_per_block
        if self.protocol == "krea_realtime":
            return min(before, self.context_frames)
        if self.local_attn_frames is None:
            return before
        recent_from = before + self.frames_per_block - (self.local_attn_frames - self.sink_frames)
        return sum(1 for frame in range(before) if frame < self.sink_frames or frame >= recent_from)

    def forward_flops(self, tokens, context_tokens, head=True):
        """FLOPs of one forward of this runner's model over `tokens` query tokens attending to `context_tokens`
        self-attention keys (`samplers.models.flops.forward_flops`, with the text length of the last `reset`)."""
        text_tokens = self.text_keys[0].shape[1] if self.text_keys is not None else 0
        return forward_flops(self.model, tokens, context_tokens, text_tokens, head=head)

    def _check_block(self, block, commit=False):
        """A block [B, C, F, H, W] to predict (commit: n >= 1 blocks [B, C, n F, H, W]) that fits max_frames."""
        expected = (self.batch_size, self.frames_per_block, self.latent_height, self.latent_width)
        shape = (block.shape[0], *block.shape[2:]) if block.ndim == 5 else None
        frames = block.shape[2] if block.ndim == 5 else 0
        if commit and shape is not None and frames % self.frames_per_block == 0 and frames > 0:
            shape = (shape[0], self.frames_per_block, *shape[2:])
        if shape != expected:
            what = "[B, C, n F, H, W] (whole blocks)" if commit else "[B, C, F, H, W]"
            raise ValueError(f"block of shape {tuple(block.shape)}: expected {what} with (B, F, H, W) = {expected}")
        if self.text_keys is None:
            raise RuntimeError("CausalWanRunner: call reset(context) before predict / commit")
        frames = frames if commit else self.frames_per_block
        if self.committed_frames + frames > self.max_frames:
            raise ValueError(f"CausalWanRunner: {self.committed_frames} frames committed, {frames} more exceed "
                             f"max_frames = {self.max_frames}")

    def _forward(self, x, timestep, frame_offset, mask=None, head=True):
        """Run the model on x [B, C, T, H, W] at RoPE frames frame_offset.., writing its K/V after the cache's end
        (the attention reads `cache ++ x` as one contiguous slice). head=False stops after the last self-attention:
        only the K/V are wanted."""
        model, cache = self.model, self.cache
        x = x.to(self.device)
        tokens, grid = embed_video(model, x, self.dtype)
        per_frame = self.tokens_per_frame
        timestep = expand_timestep(timestep, self.batch_size, grid[0], self.device)
        e, e0 = time_modulation(model, timestep, self.dtype)
        cos, sin = rope_cos_sin(self.head_dim, grid, frame_offset=frame_offset, device=self.device)
        start, stop = cache.end, cache.end + tokens.shape[1]
        if stop > cache.capacity_frames * per_frame:
            raise RuntimeError(f"CausalWanRunner: {stop // per_frame} frames exceed the cache's "
                               f"{cache.capacity_frames}")
        self.forwards.append((tokens.shape[1], stop, head))
        for index, layer in enumerate(model.blocks):
            modulation = block_modulation(layer, e0)
            q, k, v = self_attention_qkv(layer.self_attn,
                                         modulate(layer.norm1(tokens), modulation[0], modulation[1], per_frame),
                                         cos, sin)
            cache.keys[index][:, start:stop] = k
            cache.values[index][:, start:stop] = v
            out = self.attention(q, cache.keys[index][:, :stop], cache.values[index][:, :stop], mask)
            tokens = tokens + layer.self_attn.o(out) * per_token(modulation[2], per_frame)
            if not head and index == len(model.blocks) - 1:
                break  # the last layer's output only feeds the head
            tokens = cross_attention_and_ffn(layer, tokens, self.text_keys[index], self.text_values[index], modulation,
                                             per_frame)
        if not head:
            return None
        return unpatchify(model, head_output(model, tokens, e, per_frame), grid)
