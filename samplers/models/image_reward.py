"""The ImageReward network (THUDM) in plain torch, with the module and parameter names of `ImageReward.ImageReward`.

ImageReward = BLIP ViT-L/16 at 224 (`blip.visual_encoder`) + a BERT-base text encoder whose every layer also
cross-attends to the image tokens (`blip.text_encoder`) + a 5-layer MLP without activations (`mlp.layers`) on the
text encoder's first token; reward = (mlp(first token) - 0.16717362830052426) / 1.0333394966054072.
The published `ImageReward.pt` (a flat state dict, ~447M parameters in fp32) loads into `ImageReward` with
`strict=True`. `blip.vision_proj` / `blip.text_proj` exist only so that it does: scoring never uses them.

The `image-reward` package cannot be imported in a current ComfyUI environment (see docs/router.md), so this module
re-implements it; tests/plain_torch/test_reward_full_size.py (marker `reference`) checks it against the package in a
separate environment.

`operations` lets the caller choose the layer classes (Linear, Conv2d, LayerNorm, Embedding), as ComfyUI's own
models do (ComfyUI passes `comfy.ops.disable_weight_init` so that its memory manager can stream weights in low-VRAM
mode); the default is `torch.nn`. Tensors that are not inside such layers (class token, position embedding) are cast
to the input's device and dtype at use for the same reason.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .files import load_json_object, load_tensors
from .image_reward_files import SUPPORT_FILES, WEIGHTS_SOURCE

REWARD_MEAN = 0.16717362830052426
REWARD_STD = 1.0333394966054072
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
TEXT_MAX_LENGTH = 35  # ImageReward pads / truncates prompts to 35 tokens
VISION_HEAD_DIM = 64  # BLIP's ViT-L/16: 1024 wide, 16 heads


@dataclass(frozen=True)
class ImageRewardConfig:
    """Sizes of the network. The defaults are ImageReward's; tests shrink them (same code, small dims)."""

    # vision (BLIP ViT, create_vit('large', 224))
    image_size: int = 224
    patch_size: int = 16
    vision_width: int = 1024
    vision_depth: int = 24
    vision_heads: int = 16
    vision_mlp_ratio: float = 4.0
    vision_layer_norm_eps: float = 1e-6
    # text (BERT with cross-attention, med_config.json)
    vocab_size: int = 30524
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    # BLIP's contrastive projections (unused for scoring, present in the checkpoint)
    embed_dim: int = 256
    # reward head widths after hidden_size; the last layer maps to 1
    head_widths: tuple = (1024, 128, 64, 16)

    @property
    def num_patches(self):
        return (self.image_size // self.patch_size) ** 2


def config_from_med_config(med_config, **overrides):
    """ImageRewardConfig from a med_config.json dict (the BERT part) plus keyword overrides (vision sizes)."""
    if med_config.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"med_config.json: hidden_act {med_config.get('hidden_act')!r} is not supported; "
                         "ImageReward uses 'gelu'")
    if med_config.get("add_cross_attention") in (False, "false", "False"):
        raise ValueError("med_config.json: add_cross_attention is false; ImageReward's text encoder needs "
                         "cross-attention to the image")
    if med_config.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError("med_config.json: only position_embedding_type 'absolute' is supported")
    fields = {}
    for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "max_position_embeddings", "pad_token_id"):
        if key in med_config:
            fields[key] = int(med_config[key])
    if "layer_norm_eps" in med_config:
        fields["layer_norm_eps"] = float(med_config["layer_norm_eps"])
    fields.update(overrides)
    return ImageRewardConfig(**fields)


def read_med_config(path):
    return load_json_object(path, "BLIP's BERT configuration (ImageReward's med_config.json)",
                            f"Download med_config.json again from {SUPPORT_FILES['med_config.json']}.")


def vision_sizes_from_state_dict(state_dict, prefix="blip.visual_encoder.", source="the weights"):
    """Sizes read off the weights: vision width, depth, patch and image size (heads = width // 64, as BLIP), and the
    width of BLIP's contrastive projections. `source` names the weights in errors (e.g. their path)."""
    try:
        patch_weight = state_dict[prefix + "patch_embed.proj.weight"]
        position = state_dict[prefix + "pos_embed"]
    except KeyError as error:
        raise ValueError(f"{source} has no {error.args[0]!r}: not an ImageReward checkpoint "
                         "(expected the keys of ImageReward.pt, e.g. 'blip.visual_encoder.pos_embed'); use "
                         f"ImageReward.pt from {WEIGHTS_SOURCE}") from None
    width, _, patch, _ = patch_weight.shape
    grid = math.isqrt(position.shape[1] - 1)
    depth = 0
    while prefix + f"blocks.{depth}.norm1.weight" in state_dict:
        depth += 1
    fc1 = state_dict.get(prefix + "blocks.0.mlp.fc1.weight")
    ratio = fc1.shape[0] / width if fc1 is not None else 4.0
    sizes = dict(vision_width=int(width), vision_depth=depth, vision_heads=max(1, int(width) // VISION_HEAD_DIM),
                 patch_size=int(patch), image_size=int(grid * patch), vision_mlp_ratio=ratio)
    projection = state_dict.get("blip.vision_proj.weight")
    if projection is not None:
        sizes["embed_dim"] = int(projection.shape[0])
    return sizes


def _nn(operations):
    return nn if operations is None else operations


def _attention(query, key, value, num_heads, mask=None):
    """Multi-head scaled dot-product attention; query [B, Lq, D], key/value [B, Lk, D], mask additive or None."""
    batch, length_q, dim = query.shape
    head_dim = dim // num_heads

    def heads(tensor):
        return tensor.view(batch, -1, num_heads, head_dim).transpose(1, 2)

    out = F.scaled_dot_product_attention(heads(query), heads(key), heads(value), attn_mask=mask)
    return out.transpose(1, 2).reshape(batch, length_q, dim)


# ---------------------------------------------------------------------------------------------------------------
# Vision: BLIP's VisionTransformer (timm layout)
# ---------------------------------------------------------------------------------------------------------------
class PatchEmbed(nn.Module):
    def __init__(self, config, operations=None, device=None, dtype=None):
        super().__init__()
        ops = _nn(operations)
        self.proj = ops.Conv2d(3, config.vision_width, kernel_size=config.patch_size, stride=config.patch_size,
                               device=device, dtype=dtype)

    def forward(self, pixels):
        return self.proj(pixels).flatten(2).transpose(1, 2)


class VisionAttention(nn.Module):
    def __init__(self, config, operations=None, device=None, dtype=None):
        super().__init__()
        ops = _nn(operations)
        self.num_heads = config.vision_heads
        self.qkv = ops.Linear(config.vision_width, 3 * config.vision_width, device=device, dtype=dtype)
        self.proj = ops.Linear(config.vision_width, config.vision_width, device=device, dtype=dtype)

    def forward(self, x):
        query, key, value = self.qkv(x).chunk(3, dim=-1)
        return self.proj(_attention(query, key, value, self.num_heads))


class VisionMlp(nn.Module):
    def __init__(self, config, operations=None, device=None, dtype=None):
        super().__init__()
        ops = _nn(operations)
        hidden = int(config.vision_width * config.vision_mlp_ratio)
        self.fc1 = ops.Linear(config.vision_width, hidden, device=device, dtype=dtype)
        self.fc2 = ops.Linear(hidden, config.vision_width, device=device, dtype=dtype)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class VisionBlock(nn.Module):
    def __init__(self, config, operations=None, device=None, dtype=None):
        super().__init__()
        ops = _nn(operations)
        eps = config.vision_layer_norm_eps
        self.norm1 = ops.LayerNorm(config.vision_width, eps=eps, device=device, dtype=dtype)
        self.attn = VisionAttention(config, operations, device, dtype)
        self.norm2 = ops.LayerNorm(config.vision_width, eps=eps, device=device, dtype=dtype)
        self.mlp = VisionMlp(config, operations, device, dtype)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """pixels [B, 3, S, S] (CLIP-normalised) -> image tokens [B, 1 + (S/16)^2, vision_width]."""

    def __init__(self, config, operations=None, device=None, dtype=None):
        super().__init__()
        ops = _nn(operations)
        self.patch_embed = PatchEmbed(config, operations, device, dtype)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.vision_width, device=device, dtype=dtype))
        self.pos_embed = nn.Parameter(torch.zeros(1, config.num_patches + 1, config.vision_width, device=device,
                                                  dtype=dtype))
        self.blocks = nn.ModuleList(VisionBlock(config, operations, device, dtype)
                                    for _ in range(config.vision_depth))
        self.norm = ops.LayerNorm(config.vision_width, eps=config.vision_layer_norm_eps, device=device, dtype=dtype)

    def forward(self, pixels):
        x = self.patch_embed(pixels)
        cls_token = self.cls_token.to(device=x.device, dtype=x.dtype).expand(x.shape[0], -1, -1)
        x = torch.cat((cls_token, x), dim=1)
        x = x + self.pos_embed[:, : x.shape[1]].to(device=x.device, dtype=x.dtype)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


# ---------------------------------------------------------------------------------------------------------------
# Text: BLIP's BERT with cross-attention (med.py layout)
# ---------------------------------------------------------------------------------------------------------------
class BertEmbeddings(nn.Module):
    def __init__(self, config, operations=None, device=None, dtype=None):
        super().__init__()
        ops = _nn(operations)
        self.word_embeddings = ops.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id,
                                             device=device, dtype=dtype)
        self.position_embeddings = ops.Embedding(config.max_position_embeddings, config.hidden_size, device=device,
                                                 dtype=dtype)
        self.LayerNorm = ops.LayerNorm(config.hidden_size, eps=config.layer_norm_eps, device=device, dtype=dtype)
        # A persistent buffer in BLIP's med.py, hence a key of ImageReward.pt.
        self.register_buffer("position_ids", torch.arange(config.max_position_embeddings,
                                                          device=device).expand((1, -1)))

    def forward(self, input_ids):
        """input_ids [B, L] -> [B, L, hidden_size] (word + absolute position embeddings, LayerNorm)."""
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        embeddings = self.word_embeddings(input_ids) + self.position_embeddings(positions)[None]
        return self.LayerNorm(embeddings)


class BertSelfAttention(nn.Module):
    def __init__(self, config, key_width, operations=None, device=None, dtype=None):
        super().__init__()
        ops = _nn(operations)
        if config.hidden_size % config.num_attention_heads:
            raise ValueError(f"hidden_size {config.hidden_size} is not a multiple of num_attention_heads "
                             f"{config.num_attention_heads}")
        self.num_heads = config.num_attention_heads
        self.query = ops.Linear(config.hidden_size, config.hidden_size, device=device, dtype=dtype)
        self.key = ops.Linear(key_width, config.hidden_size, device=device, dtype=dtype)
        self.value = ops.Linear(key_width, config.hidden_size, device=device, dtype=dtype)

    def forward(self, hidden_states, context, mask=None):
        return _attention(self.query(hidden_states), self.key(context), self.value(context), self.num_heads, mask)


class BertSelfOutput(nn.Module):
    def __init__(self, config, operations=None, device=None, dtype=None):
        super().__init__()
        ops = _nn(operations)
        self.dense = ops.Linear(config.hidden_size, config.hidden_size, device=device, dtype=dtype)
        self.LayerNorm = ops.LayerNorm(config.hidden_size, eps=config.layer_norm_eps, device=device, dtype=dtype)

    def forward(self, hidden_states, residual):
        return self.LayerNorm(self.dense(hidden_states) + residual)


class BertAttention(nn.Module):
    def __init__(self, config, key_width, operations=None, device=None, dtype=None):
        super().__init__()
        self.self = BertSelfAttention(config, key_width, operations, device, dtype)
        self.output = BertSelfOutput(config, operations, device, dtype)

    def forward(self, hidden_states, context, mask=None):
        return self.output(self.self(hidden_states, context, mask), hidden_states)


class BertIntermediate(nn.Module):
    def __init__(self, config, operations=None, device=None, dtype=None):
        super().__init__()
        self.dense = _nn(operations).Linear(config.hidden_size, config.intermediate_size, device=device, dtype=dtype)

    def forward(self, hidden_states):
        return F.gelu(self.dense(hidden_states))


class BertOutput(nn.Module):
    def __init__(self, config, operations=None, device=None, dtype=None):
        super().__init__()
        ops = _nn(operations)
        self.dense = ops.Linear(config.intermediate_size, config.hidden_size, device=device, dtype=dtype)
        self.LayerNorm = ops.LayerNorm(config.hidden_size, eps=config.layer_norm_eps, device=device, dtype=dtype)

    def forward(self, hidden_states, residual):
        return self.LayerNorm(self.dense(hidden_states) + residual)


class BertLayer(nn.Module):
    def __init__(self, config, operations=None, device=None, dtype=None):
        super().__init__()
        self.attention = BertAttention(config, config.hidden_size, operations, device, dtype)
        self.crossattention = BertAttention(config, config.vision_width, operations, device, dtype)
        self.intermediate = BertIntermediate(config, operations, device, dtype)
        self.output = BertOutput(config, operations, device, dtype)

    def forward(self, hidden_states, image_embeds, self_mask=None):
        hidden_states = self.attention(hidden_states, hidden_states, self_mask)
        # Every image token is attended to (ImageReward passes an all-ones image mask).
        hidden_states = self.crossattention(hidden_states, image_embeds)
        return self.output(self.intermediate(hidden_states), hidden_states)


class BertEncoder(nn.Module):
    def __init__(self, config, operations=None, device=None, dtype=None):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config, operations, device, dtype)
                                   for _ in range(config.num_hidden_layers))

    def forward(self, hidden_states, image_embeds, self_mask=None):
        for layer in self.layer:
            hidden_states = layer(hidden_states, image_embeds, self_mask)
        return hidden_states


class BertModel(nn.Module):
    """BLIP's text encoder in 'multimodal' mode, without pooler (add_pooling_layer=False)."""

    def __init__(self, config, operations=None, device=None, dtype=None):
        super().__init__()
        self.embeddings = BertEmbeddings(config, operations, device, dtype)
        self.encoder = BertEncoder(config, operations, device, dtype)

    def forward(self, text_embeds, image_embeds, attention_mask=None):
        """text_embeds [B or 1, L, hidden] (from `embeddings`), image_embeds [B, N, vision_width],
        attention_mask [B or 1, L] of 0/1 or None (no padding) -> last hidden state [B, L, hidden]."""
        batch = image_embeds.shape[0]
        text_embeds = text_embeds.to(device=image_embeds.device, dtype=image_embeds.dtype)
        text_embeds = text_embeds.expand(batch, -1, -1) if text_embeds.shape[0] == 1 else text_embeds
        self_mask = None
        if attention_mask is not None:
            # med.py's extended mask: 0 where attended, -10000 where padded, broadcast over heads and queries.
            mask = attention_mask.to(device=image_embeds.device, dtype=image_embeds.dtype)[:, None, None, :]
            self_mask = (1.0 - mask) * -10000.0
        return self.encoder(text_embeds, image_embeds, self_mask)


class BLIP(nn.Module):
    def __init__(self, config, operations=None, device=None, dtype=None):
        super().__init__()
        ops = _nn(operations)
        self.visual_encoder = VisionTransformer(config, operations, device, dtype)
        self.text_encoder = BertModel(config, operations, device, dtype)
        self.vision_proj = ops.Linear(config.vision_width, config.embed_dim, device=device, dtype=dtype)
        self.text_proj = ops.Linear(config.hidden_size, config.embed_dim, device=device, dtype=dtype)


class MLP(nn.Module):
    """ImageReward's head: Linear layers at indices 0, 2, 4, 6, 7 of `layers` (dropouts between, no activation)."""

    def __init__(self, config, operations=None, device=None, dtype=None):
        super().__init__()
        ops = _nn(operations)
        widths = (config.hidden_size,) + tuple(config.head_widths) + (1,)
        layers = []
        for index, (width_in, width_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            layers.append(ops.Linear(width_in, width_out, device=device, dtype=dtype))
            if index < len(widths) - 3:
                layers.append(nn.Dropout(0.0))  # placeholders keep the original indices; dropout is off at inference
        self.layers = nn.Sequential(*layers)

    def forward(self, features):
        return self.layers(features)


class ImageReward(nn.Module):
    """ImageReward with the parameter names of `ImageReward.ImageReward` (keys `blip.*`, `mlp.layers.*`).

    encode_text(input_ids [1, L]) -> text embeddings [1, L, hidden]  (depends on the prompt only: cache it)
    reward(pixels [B, 3, S, S], text_embeds [1, L, hidden], attention_mask [1, L] or None) -> rewards [B] float32
    """

    def __init__(self, config=None, operations=None, device=None, dtype=None):
        super().__init__()
        self.config = config or ImageRewardConfig()
        self.blip = BLIP(self.config, operations, device, dtype)
        self.mlp = MLP(self.config, operations, device, dtype)

    @property
    def dtype(self):
        return self.blip.visual_encoder.pos_embed.dtype

    def encode_text(self, input_ids):
        return self.blip.text_encoder.embeddings(input_ids)

    def reward(self, pixels, text_embeds, attention_mask=None):
        image_embeds = self.blip.visual_encoder(pixels)
        hidden = self.blip.text_encoder(text_embeds, image_embeds, attention_mask)
        # The package runs the head in the model's dtype after `.float()`; in float32 the two coincide, and in half
        # precision float32 keeps the head's five chained products from rounding.
        features = hidden[:, 0].float()
        for layer in self.mlp.layers:
            if isinstance(layer, nn.Linear):
                features = F.linear(features, layer.weight.to(device=features.device, dtype=torch.float32),
                                    layer.bias.to(device=features.device, dtype=torch.float32))
        return ((features - REWARD_MEAN) / REWARD_STD).squeeze(-1)

    def forward(self, pixels, input_ids, attention_mask=None):
        return self.reward(pixels, self.encode_text(input_ids), attention_mask)


# ---------------------------------------------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------------------------------------------
POSITION_IDS_KEY = "blip.text_encoder.embeddings.position_ids"


def load_state_dict_file(path):
    """Read ImageReward weights: `.safetensors`, or a torch pickle (`.pt`, `.pth`, `.bin`) with weights_only=True,
    memory-mapped when its format allows. Damaged or foreign files raise ModelFileError naming the file."""
    return load_tensors(path, "ImageReward weights (a flat dict of tensors, as ImageReward.pt)",
                        f"Download ImageReward.pt again from {WEIGHTS_SOURCE}; for ImageReward.safetensors, "
                        "convert it again with scripts/convert_image_reward.py.")


def build_image_reward(config=None, operations=None, device="meta", dtype=None):
    """An ImageReward with uninitialised weights on `device` (default: meta, to be filled by load_state_dict)."""
    return ImageReward(config, operations=operations, device=device, dtype=dtype)


def load_image_reward(weights_path, med_config_path, device="cpu", dtype=torch.float32, operations=None):
    """Build ImageReward from `med_config.json` and the weights' shapes, and load the weights with strict=True.

    The model is built on the meta device and takes the (memory-mapped) tensors by assignment, so the peak is one
    copy of the weights. Returns the model in eval mode on `device` in `dtype`.
    """
    state_dict = load_state_dict_file(weights_path)
    med_config = read_med_config(med_config_path)
    config = config_from_med_config(med_config, **vision_sizes_from_state_dict(state_dict, source=weights_path))
    word_embeddings = state_dict.get("blip.text_encoder.embeddings.word_embeddings.weight")
    if word_embeddings is not None and word_embeddings.shape[0] != config.vocab_size:
        raise ValueError(f"med_config.json ({med_config_path}) says vocab_size {config.vocab_size} but the weights "
                         f"({weights_path}) have {word_embeddings.shape[0]} word embeddings; use the med_config.json "
                         "that belongs to these weights")
    if POSITION_IDS_KEY not in state_dict:
        # A buffer, not a weight: some exports drop it. Everything else must be present.
        state_dict = dict(state_dict)
        state_dict[POSITION_IDS_KEY] = torch.arange(config.max_position_embeddings).expand((1, -1))
    model = build_image_reward(config, operations=operations, device="meta")
    try:
        model.load_state_dict(state_dict, strict=True, assign=True)
    except RuntimeError as error:
        raise ValueError(f"{weights_path} does not have ImageReward's layout: {error}") from None
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def save_state_dict_safetensors(state_dict, path, dtype=None, metadata=None):
    """Write a state dict as safetensors (contiguous copies; floating tensors optionally cast to `dtype`)."""
    from safetensors.torch import save_file

    tensors = {}
    for key, tensor in state_dict.items():
        tensor = tensor.detach().to("cpu")
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        tensors[key] = tensor.contiguous()
    save_file(tensors, path, metadata=metadata or {"format": "pt"})


def count_parameters(state_dict):
    """Number of parameters in an ImageReward state dict (the position_ids buffer excluded)."""
    return sum(tensor.numel() for key, tensor in state_dict.items() if key != POSITION_IDS_KEY)
