"""Stand-ins for ImageReward's real files in tests: a generated BERT vocabulary, a med_config.json, random weights.

Nothing here downloads anything. `TINY` is the same network with small dimensions (fast unit tests); `FULL` is
ImageReward's real size with a tiny vocabulary (the layout and fidelity tests).
"""
import json
import math
import os

import torch

from samplers.models.image_reward import ImageReward, ImageRewardConfig

# A small vocabulary in bert-base-uncased's format: special tokens first, then words and WordPiece suffixes.
VOCAB_TOKENS = (
    ["[PAD]"] + [f"[unused{i}]" for i in range(4)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    + list("!\"#$%&'()*+,-./0123456789:;<=>?@[\\]^_`{|}~")
    + list("abcdefghijklmnopqrstuvwxyz") + ["##" + c for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    + list("éü中国") + ["##s", "##ed", "##ing", "##ly", "##er", "##est", "##aff", "##able"]
    + """a an the of in on at with and or to for by from is are was cat cats dog dogs car cars red blue green
    yellow black white small big large old young man woman person people child running walking sitting standing
    sunset beach ocean sea mountain mountains forest city street road night day sky cloud clouds snow rain light
    photo photograph painting portrait landscape cinematic detailed high quality realistic beautiful over under
    through near slow fast camera shot close up wide view video frame scene style art digital oil canvas un
    hello world jump jumps brown fox lazy quick""".split()
)
VOCAB_TOKENS = list(dict.fromkeys(VOCAB_TOKENS))  # one line per token, as in a real vocab.txt

MED_CONFIG = {
    "architectures": ["BertModel"],
    "attention_probs_dropout_prob": 0.1,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "hidden_size": 768,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 512,
    "model_type": "bert",
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 0,
    "type_vocab_size": 2,
    "vocab_size": 30524,
    "encoder_width": 768,
    "add_cross_attention": True,
}
VOCAB_SIZE = len(VOCAB_TOKENS) + 2  # + [DEC], [ENC], as BLIP's init_tokenizer adds them

# Same code, small dimensions: 32x32 images (2x2 patches), 2 layers each side.
TINY = ImageRewardConfig(image_size=32, patch_size=16, vision_width=128, vision_depth=2, vision_heads=2,
                         vocab_size=VOCAB_SIZE, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=128, max_position_embeddings=64, embed_dim=32)
# ImageReward's real sizes with the generated vocabulary.
FULL = ImageRewardConfig(vocab_size=VOCAB_SIZE)
# The published checkpoint: bert-base-uncased's vocabulary (30522) + [DEC] + [ENC].
PUBLISHED = ImageRewardConfig()

PROMPTS = (
    "a red car driving on a road at sunset",
    "A photo of a cat sitting on the beach, cinematic lighting!",
    "portrait of an old man, oil painting, highly detailed",
)


def med_config_for(config):
    """The med_config.json dict that describes `config`'s text encoder."""
    med = dict(MED_CONFIG)
    med.update(vocab_size=config.vocab_size, hidden_size=config.hidden_size,
               num_hidden_layers=config.num_hidden_layers, num_attention_heads=config.num_attention_heads,
               intermediate_size=config.intermediate_size, max_position_embeddings=config.max_position_embeddings,
               layer_norm_eps=config.layer_norm_eps, encoder_width=config.hidden_size)
    return med


@torch.no_grad()
def random_image_reward(config, seed=0):
    """An ImageReward with random weights scaled so that rewards vary by O(1) across images and prompts
    (the published initialisation gives a nearly constant head output, which would make comparisons blind).

    Each tensor is a window, at a random offset, of one pool of standard normal numbers: drawing the 0.4 billion
    numbers of the full size one by one would take longer than the tests that use them.
    """
    generator = torch.Generator().manual_seed(seed)
    # Built on meta and materialised empty: torch's default initialisation would cost as much as filling it.
    model = ImageReward(config, device="meta", dtype=torch.float32).to_empty(device="cpu")
    tensors = model.state_dict(keep_vars=True)
    largest = max(tensor.numel() for tensor in tensors.values())
    pool = torch.randn(largest + (1 << 20), generator=generator)

    def normal(shape):
        count = math.prod(shape)
        offset = int(torch.randint(0, pool.numel() - count + 1, (1,), generator=generator))
        return pool[offset: offset + count].view(shape)

    for name, tensor in tensors.items():
        if not tensor.is_floating_point():
            tensor.copy_(torch.arange(tensor.shape[-1]).expand_as(tensor))  # position_ids
        elif name.endswith(("LayerNorm.weight", "norm1.weight", "norm2.weight", "norm.weight")):
            tensor.copy_(1.0 + 0.1 * normal(tensor.shape))
        elif name.endswith("bias"):
            tensor.copy_(0.1 * normal(tensor.shape))
        elif name.endswith(("cls_token", "pos_embed")):
            tensor.copy_(0.5 * normal(tensor.shape))
        elif "embeddings" in name:
            tensor.copy_(normal(tensor.shape))
        else:
            tensor.copy_(normal(tensor.shape) / math.sqrt(math.prod(tensor.shape[1:])))
    return model.eval().requires_grad_(False)


def write_vocab(folder, tokens=VOCAB_TOKENS):
    path = os.path.join(folder, "vocab.txt")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(tokens) + "\n")
    return path


def write_support_files(folder, config, files=("med_config.json", "vocab.txt", "tokenizer_config.json")):
    """Write the support files ImageReward needs beside its weights; returns {name: path}."""
    os.makedirs(folder, exist_ok=True)
    written = {}
    if "med_config.json" in files:
        written["med_config.json"] = os.path.join(folder, "med_config.json")
        with open(written["med_config.json"], "w", encoding="utf-8") as handle:
            json.dump(med_config_for(config), handle, indent=2)
    if "vocab.txt" in files:
        written["vocab.txt"] = write_vocab(folder)
    if "tokenizer_config.json" in files:
        written["tokenizer_config.json"] = os.path.join(folder, "tokenizer_config.json")
        with open(written["tokenizer_config.json"], "w", encoding="utf-8") as handle:
            json.dump({"do_lower_case": True, "model_max_length": 512}, handle)
    return written


def write_image_reward_folder(folder, config=TINY, seed=0, weights_name="ImageReward.pt", model=None):
    """A complete `models/image_reward/` folder with random weights; returns (weights path, model)."""
    model = model if model is not None else random_image_reward(config, seed)
    write_support_files(folder, config)
    weights_path = os.path.join(folder, weights_name)
    if weights_name.endswith(".safetensors"):
        from samplers.models.image_reward import save_state_dict_safetensors

        save_state_dict_safetensors(model.state_dict(), weights_path)
    else:
        torch.save(model.state_dict(), weights_path)
    return weights_path, model


def random_frames(count, height, width, seed=0):
    """Smooth random video frames [count, height, width, 3] in 0..1 (low-frequency colour fields plus detail)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, 3, 6, 10, generator=generator)
    smooth = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    detail = 0.15 * torch.rand(count, 3, height, width, generator=generator)
    return (0.85 * smooth + detail).clamp(0, 1).permute(0, 2, 3, 1).contiguous()
