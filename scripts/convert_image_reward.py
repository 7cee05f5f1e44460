"""Convert ImageReward.pt (THUDM/ImageReward, a pickled state dict) to ImageReward.safetensors.

    python scripts/convert_image_reward.py models/image_reward/ImageReward.pt [output.safetensors] [--dtype fp16]

The .pt file is read with torch.load(weights_only=True) (no code from the file runs) and memory-mapped; the
output has exactly the same keys, so the pack loads it with strict=True like the original. Put the output in
models/image_reward/ beside med_config.json, vocab.txt and tokenizer_config.json; the .pt file can then go.
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from samplers.models.image_reward import (count_parameters, load_state_dict_file,  # noqa: E402
                                         save_state_dict_safetensors)

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "keep": None}


def convert(source, target, dtype=None):
    """Write `source` (.pt) as safetensors at `target`; returns the number of parameters written."""
    if os.path.abspath(source) == os.path.abspath(target):
        raise ValueError(f"output {target} would overwrite the input")
    state_dict = load_state_dict_file(source)
    if "blip.visual_encoder.pos_embed" not in state_dict or "mlp.layers.7.weight" not in state_dict:
        raise ValueError(f"{source} does not look like ImageReward.pt (no 'blip.visual_encoder.pos_embed' or "
                         "'mlp.layers.7.weight' key)")
    save_state_dict_safetensors(state_dict, target, dtype=dtype,
                                metadata={"format": "pt", "source": os.path.basename(source)})
    return count_parameters(state_dict)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Convert ImageReward.pt to safetensors (offline, weights_only).")
    parser.add_argument("source", help="path of ImageReward.pt")
    parser.add_argument("target", nargs="?", help="output path (default: ImageReward.safetensors beside the input)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="keep",
                        help="cast floating tensors (default: keep float32; fp16 halves the file to ~0.9 GB)")
    arguments = parser.parse_args(argv)
    target = arguments.target or os.path.join(os.path.dirname(os.path.abspath(arguments.source)),
                                              "ImageReward.safetensors")
    parameters = convert(arguments.source, target, DTYPES[arguments.dtype])
    print(f"wrote {target}: {parameters / 1e6:.1f}M parameters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
