"""FLOPs of one Wan 2.1 DiT forward, from the model's dimensions and the tokens of the call (docs/sdvg.md, "Costs").

A FLOP here is 2 x one multiply-accumulate of a matrix product. Per layer, with n query tokens, m self-attention
keys (the cached context plus the n tokens themselves), l text tokens, model width d and FFN width f:

    self-attention   q, k, v, o projections 4 n d^2, scores Q K^T n m d, weighted values n m d
    cross-attention  q, o projections 2 n d^2, scores and values 2 n l d  (the text K/V come from `reset`, once per
                     video, and are not part of a forward)
    FFN              2 n d f

plus, once per forward, the patch embedding n (in_dim p) d and the head n d (out_dim p) with p the patch volume.
Norms, modulation, RoPE, the softmax and the per-frame time embedding are left out (elementwise or per frame: well
under 1 % at any real size). A forward that only wants the K/V (`head=False`: a commit or Krea's rebuild) stops after
the last layer's self-attention, so it has neither the last layer's cross-attention and FFN nor the head. Masked
attention is counted in full (the kernels compute the masked scores too).
"""
import math


def model_dimensions(model_or_config):
    """{"layers", "dim", "ffn_dim", "in_dim", "out_dim", "patch"} of a WanConfig, a WanDiT or ComfyUI's WanModel."""
    if hasattr(model_or_config, "blocks"):
        model = model_or_config
        layer = model.blocks[0]
        return dict(layers=len(model.blocks), dim=layer.self_attn.q.in_features, ffn_dim=layer.ffn[0].out_features,
                    in_dim=model.patch_embedding.in_channels, out_dim=model.head.head.out_features //
                    math.prod(model.patch_size), patch=math.prod(model.patch_size))
    config = model_or_config
    return dict(layers=config.num_layers, dim=config.dim, ffn_dim=config.ffn_dim, in_dim=config.in_dim,
                out_dim=config.out_dim, patch=math.prod(config.patch_size))


def forward_flops(model_or_config, tokens, context_tokens, text_tokens, cross=True, head=True):
    """FLOPs (2 x multiply-accumulates, an int) of one forward over `tokens` query tokens attending to
    `context_tokens` self-attention keys (the query tokens included) and, with `cross`, to `text_tokens` text
    tokens. head=False: the K/V-only forward of a commit (module docstring)."""
    shape = model_dimensions(model_or_config)
    n, m, l, d, f = int(tokens), int(context_tokens), int(text_tokens), shape["dim"], shape["ffn_dim"]
    self_attention = 4 * n * d * d + 2 * n * m * d
    rest = (2 * n * d * d + 2 * n * l * d if cross else 0) + 2 * n * d * f
    layers = shape["layers"]
    macs = layers * self_attention + (layers if head else layers - 1) * rest
    macs += n * shape["in_dim"] * shape["patch"] * d
    if head:
        macs += n * d * shape["out_dim"] * shape["patch"]
    return 2 * macs
