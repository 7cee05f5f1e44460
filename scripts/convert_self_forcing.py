"""Convert a Self-Forcing checkpoint (.pt) to a Wan 2.1 .safetensors file that ComfyUI's Load Diffusion Model loads.

ComfyUI does not need this: the pack's `Load Causal Wan Checkpoint` node loads the .pt as it is. The file is for
other tools, or to store the weights in bf16 / fp16. The renaming and checks are samplers/models/self_forcing_files.py
(shared with the node); this script casts floating tensors (bf16 by default) and writes them.

Usage:
    python scripts/convert_self_forcing.py self_forcing_dmd.pt self_forcing_1.3b_bf16.safetensors
    python scripts/convert_self_forcing.py checkpoint.pt out.safetensors --key generator --dtype fp16

Put the output in ComfyUI/models/diffusion_models/ and load it with Load Diffusion Model (it is detected as
Wan 2.1 T2V). The file is read with torch.load(weights_only=True): no pickled code runs.
"""
import argparse
import os
import sys

import torch

# Run as a script, the pack's root is not importable yet; appended (never put first) so that an importer's own path
# order (e.g. ComfyUI's `nodes` ahead of this pack's nodes/ package in the tests) stays intact.
PACK_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if PACK_ROOT not in sys.path:
    sys.path.append(PACK_ROOT)

from samplers.models.self_forcing_files import AUTO_KEY, read_self_forcing_checkpoint  # noqa: E402

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def convert(source, destination, key=AUTO_KEY, dtype=torch.bfloat16, head_dim=128):
    """Convert `source` (.pt) to `destination` (.safetensors); returns the inferred WanConfig."""
    from safetensors.torch import save_file

    state_dict, chosen, config = read_self_forcing_checkpoint(source, key=key, head_dim=head_dim)
    converted = {name: (t.to(dtype) if t.is_floating_point() else t).contiguous() for name, t in state_dict.items()}
    save_file(converted, destination, metadata={"format": "pt", "source": f"Self-Forcing {chosen or 'state dict'}"})
    return config


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="Self-Forcing checkpoint (.pt)")
    parser.add_argument("destination", help="output .safetensors path")
    parser.add_argument("--key", default=AUTO_KEY,
                        help="state dict inside the checkpoint (default auto: generator_ema, else generator)")
    parser.add_argument("--dtype", default="bf16", choices=sorted(DTYPES), help="dtype of the saved weights")
    args = parser.parse_args(argv)
    config = convert(args.source, args.destination, key=args.key, dtype=DTYPES[args.dtype])
    print(f"wrote {args.destination}: Wan 2.1 T2V, dim {config.dim}, {config.num_layers} layers, "
          f"{config.num_heads} heads, ffn {config.ffn_dim}, {args.dtype}")


if __name__ == "__main__":
    main()
