"""Convert a Self-Forcing checkpoint (.pt) to a Wan 2.1 .safetensors file that ComfyUI's Load Diffusion Model loads.

Self-Forcing (github.com/guandeh17/Self-Forcing) saves training checkpoints as a torch pickle holding several state
dicts, e.g. {"generator": ..., "critic": ..., "generator_ema": ...}. The generator is a `WanDiffusionWrapper` whose
`model` is the causal Wan DiT, so its keys read "model.blocks.0.self_attn.q.weight"; checkpoints written from FSDP or
torch.compile can also carry "_fsdp_wrapped_module." / "_checkpoint_wrapped_module." / "_orig_mod." segments. The
causal DiT keeps Wan 2.1's parameter names, so the conversion only strips those prefixes, checks that every name is
a Wan 2.1 T2V parameter with a consistent shape, and casts floating tensors (bf16 by default).

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

from samplers.models.files import load_tensors  # noqa: E402
from samplers.models.wan import WanDiT, WanFormatError, infer_config, strip_wan_prefix  # noqa: E402

WRAPPER_SEGMENTS = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def original_wan_names(state_dict):
    """Self-Forcing generator keys -> original Wan 2.1 names (wrapper segments and the "model." prefix removed)."""
    renamed = {}
    for key, value in state_dict.items():
        name = key
        for segment in WRAPPER_SEGMENTS:
            name = name.replace(segment, "")
        if name in renamed:
            raise WanFormatError(f"two checkpoint keys map to {name!r} once wrapper prefixes are removed")
        renamed[name] = value
    return strip_wan_prefix(renamed, source="the generator state dict")


def convert(source, destination, key="generator_ema", dtype=torch.bfloat16, head_dim=128):
    """Convert `source` (.pt) to `destination` (.safetensors); returns the inferred WanConfig."""
    from safetensors.torch import save_file

    checkpoint = load_tensors(source, "a Self-Forcing checkpoint (a dict of state dicts: generator, generator_ema...)",
                              "Download the checkpoint again.", flat=False)
    if key not in checkpoint:
        found = sorted(k for k in checkpoint if isinstance(k, str))
        raise WanFormatError(f"{source} has no {key!r} entry (found {found}); choose one with --key")
    state_dict = original_wan_names(checkpoint[key])
    config = infer_config(state_dict, head_dim=head_dim)
    expected = WanDiT(config).state_dict()
    unexpected = sorted(set(state_dict) - set(expected))
    missing = sorted(set(expected) - set(state_dict))
    if unexpected or missing:
        raise WanFormatError(f"{source}[{key!r}] does not match a Wan 2.1 T2V DiT: unexpected {unexpected[:6]}, "
                             f"missing {missing[:6]}")
    for name, tensor in expected.items():
        if tuple(state_dict[name].shape) != tuple(tensor.shape):
            raise WanFormatError(f"{name}: shape {tuple(state_dict[name].shape)}, expected {tuple(tensor.shape)}")
    converted = {name: (t.to(dtype) if t.is_floating_point() else t).contiguous() for name, t in state_dict.items()}
    save_file(converted, destination, metadata={"format": "pt", "source": "Self-Forcing " + key})
    return config


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="Self-Forcing checkpoint (.pt)")
    parser.add_argument("destination", help="output .safetensors path")
    parser.add_argument("--key", default="generator_ema",
                        help="state dict inside the checkpoint (default generator_ema)")
    parser.add_argument("--dtype", default="bf16", choices=sorted(DTYPES), help="dtype of the saved weights")
    args = parser.parse_args(argv)
    config = convert(args.source, args.destination, key=args.key, dtype=DTYPES[args.dtype])
    print(f"wrote {args.destination}: Wan 2.1 T2V, dim {config.dim}, {config.num_layers} layers, "
          f"{config.num_heads} heads, ffn {config.ffn_dim}, {args.dtype}")


if __name__ == "__main__":
    main()
