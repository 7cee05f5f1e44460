"""Streaming (causal) decode of a Wan 2.1 VAE, over the VAE's own modules, with the pack's own causal rules.

The Wan 2.1 VAE decoder is causal in time: every temporal convolution (kernel 3) sees its current frames and the
two input frames before them (zeros before the video starts), so decoding a video chunk by chunk with the last
two input frames of every such convolution carried over gives the frames of one decode of the whole video. The
temporal upsamplers ("upsample3d") leave the video's first latent frame alone ("Rep": 1 frame, not 2) and double
every later frame with a causal convolution of their own, whose history starts after that first frame.

ComfyUI's `comfy.ldm.wan.vae` implements the same rules in a way that changed between releases (v0.18.1: cache
helper renamed, caches keep only the current call's frames, `Decoder3d.forward` returns chunks). This module
relies only on what stays stable, as for the DiT: the module tree under the VAE's state-dict names (`conv2`,
`decoder.conv1`, `decoder.middle.*`, `decoder.upsamples.*`, `decoder.head.*`), each convolution's weights, and the
plain `forward(x)` of the frame-local layers (RMS norms, SiLU, the per-frame attention block, the 2-D resamplers).
Causal convolutions run here as `F.conv3d` over the carried frames; nothing of the VAE's own cache code is called.

A state is a dict {convolution name: its last input frames [B, C, 2, H, W], or REP for an upsampler whose first
frame has passed}; `decode_frames` returns a new dict and never writes into the one it was given, so a draft
decoded for scoring leaves the committed state as it was.
"""
import torch
import torch.nn.functional as F

REP = "rep"  # an upsample3d layer that has seen the video's first frame (its time convolution starts next frame)


def _is_conv3d(module):
    return isinstance(module, torch.nn.Conv3d)


def causal_conv(conv, x, state, name):
    """The causal 3-D convolution `conv` on x [B, C, T, H, W], continuing from state[name] (the last kt - 1 input
    frames before x; zeros at the video's start). Writes state[name] = the last kt - 1 frames of (history ++ x)."""
    weight = conv.weight.to(device=x.device, dtype=x.dtype)
    bias = None if conv.bias is None else conv.bias.to(device=x.device, dtype=x.dtype)
    past_frames = weight.shape[2] - 1
    if past_frames:
        past = state.get(name)
        if past is None:
            past = x.new_zeros((x.shape[0], x.shape[1], past_frames, *x.shape[3:]))
        x = torch.cat([past.to(device=x.device, dtype=x.dtype), x], dim=2)
        state[name] = x[:, :, -past_frames:]
    spatial = tuple((k - 1) // 2 for k in weight.shape[3:])  # every Wan VAE convolution keeps the frame size
    return F.conv3d(x, weight, bias, stride=conv.stride, padding=(0, *spatial), dilation=conv.dilation)


def per_frame(module, x):
    """A 2-D module applied to every frame of x [B, C, T, H, W]."""
    frames = x.shape[2]
    out = module(x.transpose(1, 2).flatten(0, 1))
    return out.unflatten(0, (x.shape[0], frames)).transpose(1, 2)


def residual_block(block, x, state, name):
    out = x
    for index, layer in enumerate(block.residual):
        out = causal_conv(layer, out, state, f"{name}.residual.{index}") if _is_conv3d(layer) else layer(out)
    shortcut = block.shortcut
    return out + (causal_conv(shortcut, x, state, f"{name}.shortcut") if _is_conv3d(shortcut) else shortcut(x))


def resample(layer, x, state, name):
    """Wan's Resample: upsample3d doubles every frame after the video's first with its time convolution, then
    (like upsample2d) resamples each frame."""
    if layer.mode == "upsample3d":
        key = f"{name}.time_conv"
        if key not in state:
            state[key] = REP  # the first frame passes through once; the time convolution's history starts after
        else:
            history = dict(state)
            if state[key] is REP:
                history.pop(key)
            doubled = causal_conv(layer.time_conv, x, history, key)
            state[key] = history[key]
            batch, channels, frames, height, width = x.shape
            x = doubled.reshape(batch, 2, channels, frames, height, width).permute(0, 2, 3, 1, 4, 5)
            x = x.reshape(batch, channels, frames * 2, height, width)
    elif layer.mode not in ("upsample2d", "none"):
        raise ValueError(f"{name}: a decoder resampler with mode {layer.mode!r}; expected upsample2d or upsample3d")
    return per_frame(layer.resample, x)


def run_layer(layer, x, state, name):
    """One layer of the decoder's middle or upsamples, by what it holds (names as in the state dict)."""
    if hasattr(layer, "residual") and hasattr(layer, "shortcut"):
        return residual_block(layer, x, state, name)
    if hasattr(layer, "mode") and hasattr(layer, "resample"):
        return resample(layer, x, state, name)
    if hasattr(layer, "to_qkv"):  # attention within each frame: no temporal state
        return layer(x)
    raise ValueError(f"{name}: unexpected layer {type(layer).__name__} in the Wan 2.1 VAE decoder")


def decode_latent_frame(vae_model, z, state):
    """One latent frame z [B, z_dim, 1, h, w] (the VAE's latent space) -> its pixels [B, 3, n, H, W] in [-1, 1]
    (n = 1 for the video's first frame, else 4), updating `state` in place."""
    decoder = vae_model.decoder
    x = causal_conv(vae_model.conv2, z, state, "conv2")
    x = causal_conv(decoder.conv1, x, state, "decoder.conv1")
    for index, layer in enumerate(decoder.middle):
        x = run_layer(layer, x, state, f"decoder.middle.{index}")
    for index, layer in enumerate(decoder.upsamples):
        x = run_layer(layer, x, state, f"decoder.upsamples.{index}")
    for index, layer in enumerate(decoder.head):
        x = causal_conv(layer, x, state, f"decoder.head.{index}") if _is_conv3d(layer) else layer(x)
    return x


@torch.no_grad()
def decode_frames(vae_model, latent, state=None):
    """Decode latent frames [B, z_dim, T, h, w] continuing from `state` (None: the video's start).

    vae_model: a Wan 2.1 VAE module tree (`conv2`, `decoder` with `conv1`, `middle`, `upsamples`, `head`), e.g.
    ComfyUI's `comfy.ldm.wan.vae.WanVAE`. Returns (pixels [B, 3, n, H, W] unclipped, about [-1, 1]; n = 1 + 4 (T - 1)
    at the video's start, else 4 T) and the new state; `state` itself is not modified."""
    if latent.ndim != 5:
        raise ValueError(f"latent: expected [B, C, T, h, w], got {list(latent.shape)}")
    state = {} if state is None else dict(state)
    pieces = [decode_latent_frame(vae_model, latent[:, :, index:index + 1], state)
              for index in range(latent.shape[2])]  # one latent frame at a time: the activations of one frame
    return torch.cat(pieces, dim=2), state
