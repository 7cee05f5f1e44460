"""`Load Causal Wan Checkpoint` inside ComfyUI: a file of models/diffusion_models/ as a MODEL, whether a Wan
.safetensors (handed to core's UNETLoader as it is) or a Self-Forcing training checkpoint (.pt, read by
samplers/models/self_forcing_files.py and handed to core's own diffusion-model loading), so that the MODEL is the one
UNETLoader gives for the same weights: same detection and model class, weight_dtype options, model management.
"""
import inspect

from ...samplers.models.files import ModelFileError
from ...samplers.models.self_forcing_files import AUTO_KEY, read_self_forcing_checkpoint

FOLDER_NAME = "diffusion_models"
SAFETENSORS = (".safetensors", ".sft")


def core_unet_loader():
    """ComfyUI's UNETLoader class (its top-level `nodes` module: this pack's own nodes/ is never top-level)."""
    import nodes

    return nodes.UNETLoader


def weight_dtype_choices():
    """UNETLoader's weight_dtype options, so both loaders offer the same ones on every ComfyUI version."""
    return list(core_unet_loader().INPUT_TYPES()["required"]["weight_dtype"][0])


def unet_model_options(weight_dtype):
    """UNETLoader's model_options for a weight_dtype choice (nodes.py, UNETLoader.load_unet)."""
    import torch

    options = {"fp8_e4m3fn": {"dtype": torch.float8_e4m3fn},
               "fp8_e4m3fn_fast": {"dtype": torch.float8_e4m3fn, "fp8_optimizations": True},
               "fp8_e5m2": {"dtype": torch.float8_e5m2}}
    if weight_dtype not in weight_dtype_choices():
        raise ValueError(f"weight_dtype: expected one of {weight_dtype_choices()}, got {weight_dtype!r}")
    return dict(options.get(weight_dtype, {}))


def load_self_forcing_model(path, key, model_options, disable_dynamic=False):
    """A ModelPatcher from a Self-Forcing checkpoint, through comfy.sd.load_diffusion_model_state_dict (what
    comfy.sd.load_diffusion_model does after reading a file). Newer ComfyUI re-runs a model's loader to make
    independent copies (`cached_patcher_init`); this function is that loader for .pt files."""
    import comfy.sd

    state_dict, chosen, _ = read_self_forcing_checkpoint(path, key)
    accepted = inspect.signature(comfy.sd.load_diffusion_model_state_dict).parameters
    extra = {"disable_dynamic": disable_dynamic} if "disable_dynamic" in accepted else {}
    model = comfy.sd.load_diffusion_model_state_dict(state_dict, model_options=dict(model_options), **extra)
    if model is None:
        source = f"{path}[{chosen!r}]" if chosen else path
        raise ModelFileError(f"{source}: ComfyUI does not recognise these Wan 2.1 weights as a diffusion model; "
                             "expected a Wan 2.1 text-to-video DiT")
    if hasattr(model, "cached_patcher_init"):
        model.cached_patcher_init = (load_self_forcing_model, (path, key, dict(model_options)))
    return model


def load_causal_wan(file_name, weight_dtype="default", state_dict_key=AUTO_KEY):
    """MODEL from models/diffusion_models/<file_name>: .safetensors through UNETLoader itself, other files (.pt, .pth,
    .ckpt, .bin) as Self-Forcing checkpoints (state_dict_key: the entry, "auto" = generator_ema, else generator)."""
    import folder_paths

    if file_name.lower().endswith(SAFETENSORS):
        return core_unet_loader()().load_unet(file_name, weight_dtype)[0]
    path = folder_paths.get_full_path_or_raise(FOLDER_NAME, file_name)
    return load_self_forcing_model(path, (state_dict_key or AUTO_KEY).strip(), unet_model_options(weight_dtype))
