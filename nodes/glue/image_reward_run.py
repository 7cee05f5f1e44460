"""ImageReward inside ComfyUI: the `image_reward` model folder, loading the router as a ModelPatcher, scoring images.

The weights and their support files live in ComfyUI's model folder `image_reward` (`models/image_reward/`, or any
path given for `image_reward` in extra_model_paths.yaml); nothing is downloaded. The network is the pack's plain
torch re-implementation (samplers/models/image_reward.py), wrapped in a ModelPatcher so that ComfyUI loads, offloads
and frees it like its other models.
"""
import logging
import os
import sys

import torch

from ...samplers.methods.sdvg import aggregate, quantile_aggregation
from ...samplers.models.reward_router import load_image_reward_router
from .placement import Placed

FOLDER_NAME = "image_reward"
AGGREGATIONS = ("min", "mean", "quantile")
DEVICES = ("default", "cpu")
DTYPES = ("auto", "fp32", "fp16", "bf16")


def register_image_reward_folder():
    """Register ComfyUI's model folder `image_reward` (idempotent) and return its search paths.

    A folder given in extra_model_paths.yaml has already created the entry (with no extension filter) when this
    runs: its paths are kept ahead of `models/image_reward`, and the list shows only weight files.
    """
    import folder_paths

    default = os.path.join(folder_paths.models_dir, FOLDER_NAME)
    extensions = set(folder_paths.supported_pt_extensions)
    entry = folder_paths.folder_names_and_paths.get(FOLDER_NAME)
    if entry is None:
        folder_paths.folder_names_and_paths[FOLDER_NAME] = ([default], extensions)
    else:
        paths, existing = entry
        if default not in paths:
            paths.append(default)
        folder_paths.folder_names_and_paths[FOLDER_NAME] = (paths, set(existing) | extensions)
    return folder_paths.get_folder_paths(FOLDER_NAME)


# ComfyUI has imported folder_paths before it loads custom nodes: register the folder as soon as the pack loads
# (without importing ComfyUI when the module is read outside it).
if "folder_paths" in sys.modules and hasattr(sys.modules["folder_paths"], "folder_names_and_paths"):
    register_image_reward_folder()


def check_router(router):
    """The one check of a REWARD_ROUTER input."""
    if not callable(getattr(router, "score", None)) or not isinstance(getattr(router, "aggregation", None), str):
        raise ValueError("router: expected a REWARD_ROUTER (an object with score(frames, prompt) and an "
                         f"'aggregation' string), got {type(router).__name__}")


def resolve_dtype(name, load_device):
    """Compute dtype for `dtype` input: auto -> bf16 / fp16 where ComfyUI deems them fast on the device, else fp32."""
    if name == "fp32":
        return torch.float32
    if name == "fp16":
        return torch.float16
    if name == "bf16":
        return torch.bfloat16
    if name != "auto":
        raise ValueError(f"dtype: expected one of {DTYPES}, got {name!r}")
    import comfy.model_management as model_management

    if model_management.should_use_bf16(load_device):
        return torch.bfloat16
    if model_management.should_use_fp16(load_device):
        return torch.float16
    return torch.float32


def aggregation_name(aggregation, quantile):
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation: expected one of {AGGREGATIONS}, got {aggregation!r}")
    return quantile_aggregation(quantile) if aggregation == "quantile" else aggregation


def load_router(model_name, aggregation, quantile, device, dtype, frames_per_batch):
    """The Load ImageReward Router node's work: a router whose weights ComfyUI places before every scoring."""
    import comfy.model_management as model_management
    import comfy.model_patcher
    import comfy.ops
    import folder_paths

    search_dirs = register_image_reward_folder()
    weights_path = folder_paths.get_full_path(FOLDER_NAME, model_name) or model_name
    if device == "cpu":
        load_device = offload_device = torch.device("cpu")
    elif device == "default":
        load_device = model_management.get_torch_device()
        offload_device = model_management.unet_offload_device()
    else:
        raise ValueError(f"device: expected one of {DEVICES}, got {device!r}")
    compute_dtype = resolve_dtype(dtype, load_device)
    router = load_image_reward_router(
        weights_path, search_dirs, aggregation=aggregation_name(aggregation, quantile), device=offload_device,
        dtype=compute_dtype, frames_per_batch=frames_per_batch,
        # ComfyUI's layer classes let its memory manager stream weights when the model only partly fits.
        operations=comfy.ops.disable_weight_init)
    patcher = comfy.model_patcher.ModelPatcher(router.model, load_device=load_device, offload_device=offload_device)
    router.device = load_device
    router.interrupt = model_management.throw_exception_if_processing_interrupted
    logging.info("[speculative-video] ImageReward router loaded from %s (%s, %s, aggregation %s)",
                 weights_path, load_device, compute_dtype, router.aggregation)
    return Placed(router, patcher, ("score",))


def format_scores(scores, aggregation, aggregate_value):
    """One summary line, then one line per frame: what the STRING output shows."""
    values = [float(value) for value in scores]
    summary = (f"{aggregation} = {aggregate_value:.4f} | min {min(values):.4f} | mean {sum(values) / len(values):.4f}"
               f" | max {max(values):.4f} | frames {len(values)}")
    return "\n".join([summary] + [f"frame {index}: {value:.4f}" for index, value in enumerate(values)])


def score_images(router, images, prompt):
    """The ImageReward Score node's work: (per-frame scores, text, aggregate), with progress and Cancel."""
    import comfy.model_management as model_management
    import comfy.utils

    check_router(router)
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"images: expected an IMAGE batch [frames, height, width, channels], got "
                         f"{getattr(images, 'shape', type(images).__name__)}")
    step = int(getattr(router, "frames_per_batch", None) or images.shape[0])
    progress = comfy.utils.ProgressBar(images.shape[0])
    scores = []
    for start in range(0, images.shape[0], step):
        model_management.throw_exception_if_processing_interrupted()
        chunk = images[start: start + step]
        scores.append(torch.as_tensor(router.score(chunk, prompt)).float().flatten().cpu())
        progress.update(chunk.shape[0])
    scores = torch.cat(scores)
    value = aggregate(scores, router.aggregation)
    text = format_scores(scores, router.aggregation, value)
    logging.info("[speculative-video] ImageReward: %s", text.splitlines()[0])
    return ([float(score) for score in scores], text, value)
