"""Runs inside the reference environment (the `image-reward` package, transformers 4.55.4), never in the pack's.

Called by tests/plain_torch/test_reward_full_size.py with IMAGE_REWARD_REFERENCE_PYTHON; writes its findings as JSON:
- "layout": the package model's state-dict keys and shapes with the published med_config (vocab 30524), and its
  parameter count: what ImageReward.pt contains;
- "tokens": the package tokenizer's input_ids / attention_mask for each prompt (max length 35, as it scores);
- "network_scores": the package's `score_gard` on the pack's preprocessed pixels (network + tokenizer only);
- "package_scores": the package's `score(prompt, PIL image)` on the 8-bit frames (its PIL/torchvision
  preprocessing included).

Offline: the package's `init_tokenizer()` calls `BertTokenizer.from_pretrained('bert-base-uncased')`, which needs
a hub; it is replaced by the same construction from the local folder (vocab.txt + tokenizer_config.json), with the
same two added tokens. HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE are set so that nothing else reaches a network.
"""
import argparse
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def offline_init_tokenizer(folder):
    from transformers import BertTokenizer

    def init_tokenizer():
        # The body of ImageReward/models/BLIP/blip.py:init_tokenizer with a local folder instead of the hub name.
        tokenizer = BertTokenizer.from_pretrained(folder)
        tokenizer.add_special_tokens({"bos_token": "[DEC]"})
        tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
        tokenizer.enc_token_id = tokenizer.additional_special_tokens_ids[0]
        return tokenizer

    return init_tokenizer


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", required=True, help="ImageReward.pt, med_config.json, vocab.txt, "
                                                         "tokenizer_config.json")
    parser.add_argument("--prompts", required=True, help="JSON list of prompts")
    parser.add_argument("--frames", help="torch file: uint8 frames [F, H, W, 3]")
    parser.add_argument("--pixels", help="torch file: the pack's preprocessed pixels [F, 3, 224, 224]")
    parser.add_argument("--score-prompt", default=None, help="prompt the frames are scored against")
    parser.add_argument("--out", required=True)
    parser.add_argument("--layout-only", action="store_true", help="only the published layout (no weights needed)")
    arguments = parser.parse_args()

    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    import ImageReward.models.BLIP.blip_pretrain as blip_pretrain
    from ImageReward.ImageReward import ImageReward
    from PIL import Image

    blip_pretrain.init_tokenizer = offline_init_tokenizer(arguments.folder)
    result = {"versions": {"torch": torch.__version__}}
    import transformers

    result["versions"]["transformers"] = transformers.__version__

    # Published layout: the package's own module tree with the published med_config (bert-base-uncased + 2).
    with open(os.path.join(arguments.folder, "med_config.json"), encoding="utf-8") as handle:
        med_config = json.load(handle)
    published = dict(med_config, vocab_size=30524, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                     intermediate_size=3072, max_position_embeddings=512)
    published_path = os.path.join(os.path.dirname(os.path.abspath(arguments.out)), "published_med_config.json")
    with open(published_path, "w", encoding="utf-8") as handle:
        json.dump(published, handle)
    from accelerate import init_empty_weights  # parameters on meta, other tensors as usual (BLIP calls .item())

    with init_empty_weights():
        layout_model = ImageReward(med_config=published_path, device="cpu")
    state_dict = layout_model.state_dict()
    result["layout"] = {
        "state_dict": {name: list(tensor.shape) for name, tensor in state_dict.items()},
        "parameters": sum(tensor.numel() for name, tensor in state_dict.items()
                          if name != "blip.text_encoder.embeddings.position_ids"),
    }
    del layout_model, state_dict
    if arguments.layout_only:
        with open(arguments.out, "w", encoding="utf-8") as handle:
            json.dump(result, handle)
        return

    tokenizer = blip_pretrain.init_tokenizer()
    with open(arguments.prompts, encoding="utf-8") as handle:
        prompts = json.load(handle)
    result["tokenizer_size"] = len(tokenizer)
    result["tokens"] = []
    for prompt in prompts:
        encoded = tokenizer(prompt, padding="max_length", truncation=True, max_length=35)
        result["tokens"].append({"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]})

    # The package's own modules and forward; only the random initialisation, which the file overwrites, is skipped.
    with init_empty_weights():
        model = ImageReward(med_config=os.path.join(arguments.folder, "med_config.json"), device="cpu")
    weights = torch.load(os.path.join(arguments.folder, "ImageReward.pt"), map_location="cpu", weights_only=True,
                         mmap=True)
    model.load_state_dict(weights, strict=True, assign=True)
    model.eval()
    del weights

    with torch.no_grad():
        if arguments.pixels:
            pixels = torch.load(arguments.pixels, weights_only=True)
            text = tokenizer(arguments.score_prompt, padding="max_length", truncation=True, max_length=35,
                             return_tensors="pt")
            rewards = model.score_gard(text.input_ids, text.attention_mask, pixels)
            result["network_scores"] = rewards.flatten().tolist()
        if arguments.frames:
            frames = torch.load(arguments.frames, weights_only=True)
            result["package_scores"] = [float(model.score(arguments.score_prompt, Image.fromarray(frame.numpy())))
                                        for frame in frames]
    with open(arguments.out, "w", encoding="utf-8") as handle:
        json.dump(result, handle)


if __name__ == "__main__":
    sys.exit(main())
