"""Self-Forcing training checkpoints (.pt) as Wan 2.1 DiT weights: the one place that picks the generator and renames
its keys, shared by the `Load Causal Wan Checkpoint` node (nodes/glue/causal_wan_files.py) and
scripts/convert_self_forcing.py.

Self-Forcing (github.com/guandeh17/Self-Forcing) publishes `checkpoints/self_forcing_dmd.pt` (huggingface.co/
gdhe17/Self-Forcing): a torch pickle of state dicts {"generator", "generator_ema", "critic"}. The generator is a
`WanDiffusionWrapper` whose `model` is the causal Wan DiT, so its keys read "model.blocks.0.self_attn.q.weight";
checkpoints written from FSDP or torch.compile can also carry "_fsdp_wrapped_module." / "_checkpoint_wrapped_module."
/ "_orig_mod." segments. The causal DiT keeps Wan 2.1's parameter names, so renaming only strips those.
"""
import torch

from .files import ModelFileError, load_tensors
from .wan import WanDiT, WanFormatError, infer_config, strip_wan_prefix

WRAPPER_SEGMENTS = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")
# Self-Forcing's inference.py loads generator_ema with --use_ema (the released videos), else generator.
GENERATOR_KEYS = ("generator_ema", "generator")
AUTO_KEY = "auto"
WHAT = ("a Self-Forcing checkpoint (a dict of state dicts such as generator_ema, generator, critic) or one Wan 2.1 "
        "DiT state dict")
REMEDY = ("Self-Forcing's is checkpoints/self_forcing_dmd.pt of huggingface.co/gdhe17/Self-Forcing; download it "
          "again if it is damaged.")


def original_wan_names(state_dict, source="the generator state dict"):
    """Self-Forcing generator keys -> original Wan 2.1 names (wrapper segments and the "model." prefix removed)."""
    renamed = {}
    for key, value in state_dict.items():
        name = key
        for segment in WRAPPER_SEGMENTS:
            name = name.replace(segment, "")
        if name in renamed:
            raise WanFormatError(f"{source}: two keys map to {name!r} once wrapper segments are removed")
        renamed[name] = value
    return strip_wan_prefix(renamed, source=source)


def pick_state_dict(checkpoint, source, key=AUTO_KEY):
    """(chosen key or None, state dict) of a loaded checkpoint: `key`, or with "auto" generator_ema, else generator,
    else the checkpoint itself when it is one flat state dict."""
    entries = sorted(str(name) for name, value in checkpoint.items() if isinstance(value, dict))
    if key != AUTO_KEY:
        if key not in checkpoint:
            raise ModelFileError(f"{source} has no {key!r} entry (found {entries or 'no state dicts'}); choose one of "
                                 f"those, or {AUTO_KEY!r} for {' else '.join(GENERATOR_KEYS)}")
        chosen = key
    elif all(torch.is_tensor(value) for value in checkpoint.values()):
        return None, checkpoint
    else:
        chosen = next((name for name in GENERATOR_KEYS if name in checkpoint), None)
        if chosen is None:
            raise ModelFileError(f"{source}: expected {WHAT}, found the entries {entries} and no "
                                 f"{' or '.join(GENERATOR_KEYS)}; choose the generator's entry by name. {REMEDY}")
    state_dict = checkpoint[chosen]
    if not isinstance(state_dict, dict) or not all(torch.is_tensor(value) for value in state_dict.values()):
        found = type(state_dict).__name__
        raise ModelFileError(f"{source}[{chosen!r}]: expected a state dict (names -> tensors), got {found}. {REMEDY}")
    return chosen, state_dict


def check_wan21_t2v_layout(state_dict, source, head_dim=128):
    """Every name a Wan 2.1 T2V parameter with the shape the others imply; returns the WanConfig. The model is built
    on the meta device: nothing is allocated, whatever its size."""
    config = infer_config(state_dict, head_dim=head_dim)
    with torch.device("meta"):
        expected = WanDiT(config).state_dict()
    unexpected, missing = sorted(set(state_dict) - set(expected)), sorted(set(expected) - set(state_dict))
    if unexpected or missing:
        raise WanFormatError(f"{source} does not match a Wan 2.1 T2V DiT: unexpected {unexpected[:6]}, "
                             f"missing {missing[:6]}")
    for name, tensor in expected.items():
        if tuple(state_dict[name].shape) != tuple(tensor.shape):
            raise WanFormatError(f"{source}: {name} has shape {tuple(state_dict[name].shape)}, expected "
                                 f"{tuple(tensor.shape)} (dim {config.dim}, ffn {config.ffn_dim})")
    return config


def read_self_forcing_checkpoint(path, key=AUTO_KEY, head_dim=128):
    """The Wan 2.1 DiT in a Self-Forcing checkpoint: (state dict with original Wan names, chosen key or None,
    WanConfig). Read with torch.load(weights_only=True): no pickled code runs. Errors name the file, what was found
    and what was expected (ModelFileError, WanFormatError)."""
    checkpoint = load_tensors(path, WHAT, REMEDY, flat=False)
    chosen, state_dict = pick_state_dict(checkpoint, path, key)
    source = f"{path}[{chosen!r}]" if chosen is not None else str(path)
    state_dict = original_wan_names(state_dict, source=source)
    return state_dict, chosen, check_wan21_t2v_layout(state_dict, source, head_dim=head_dim)
