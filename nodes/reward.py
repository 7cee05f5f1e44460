"""ImageReward nodes: `Load ImageReward Router` (-> REWARD_ROUTER for SDVG) and `ImageReward Score`.

The weights and their support files live in ComfyUI's model folder `image_reward` (`models/image_reward/`, or any
path given for `image_reward` in extra_model_paths.yaml); nothing is downloaded. The network is the pack's plain
torch re-implementation (samplers/image_reward_model.py), wrapped in a ModelPatcher so that ComfyUI loads, offloads
and frees it like its other models.
"""
import logging
import os
import sys

import torch

from ..samplers.reward import aggregate, load_image_reward_router, quantile_aggregation

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


class LoadImageRewardRouter:
    @classmethod
    def INPUT_TYPES(cls):
        import folder_paths

        register_image_reward_folder()
        return {
            "required": {
                "model_name": (folder_paths.get_filename_list(FOLDER_NAME), {
                    "tooltip": "ImageReward weights (ImageReward.pt from THUDM/ImageReward, or its .safetensors "
                               "conversion) in models/image_reward/. med_config.json, vocab.txt and "
                               "tokenizer_config.json must sit beside it (or elsewhere in an image_reward folder)."}),
                "aggregation": (list(AGGREGATIONS), {
                    "default": "min",
                    "tooltip": "How a block's per-frame scores become its score. min (the paper): a block is as "
                               "good as its worst frame, strictest. mean: tolerates one bad frame. quantile: the "
                               "q-quantile below, between the two."}),
                "quantile": ("FLOAT", {
                    "default": 0.1, "min": 0.0, "max": 1.0, "step": 0.01,
                    "tooltip": "q for aggregation = quantile (0 = min, 0.5 = median); ignored otherwise."}),
                "device": (list(DEVICES), {
                    "default": "default",
                    "tooltip": "default: ComfyUI's compute device (GPU if any), offloaded to RAM when other models "
                               "need the memory. cpu: always on the CPU (slow: about 1-2 s per frame)."}),
                "dtype": (list(DTYPES), {
                    "default": "auto",
                    "tooltip": "Compute precision. auto: bf16/fp16 on GPUs that run them fast, fp32 otherwise "
                               "(the CPU). Half precision halves memory (about 0.9 GB instead of 1.8 GB) and "
                               "shifts scores by small amounts; fp32 matches the reference."}),
                "frames_per_batch": ("INT", {
                    "default": 16, "min": 1, "max": 256,
                    "tooltip": "Frames per network call. A whole SDVG block (up to 16 frames) in one call is the "
                               "fastest; lower it if memory is short."}),
            }
        }

    RETURN_TYPES = ("REWARD_ROUTER",)
    RETURN_NAMES = ("router",)
    OUTPUT_TOOLTIPS = ("ImageReward router: scores frames against a prompt; SDVG keeps a draft whose aggregated "
                       "score reaches tau.",)
    FUNCTION = "load"
    CATEGORY = "loaders/speculative"
    DESCRIPTION = ("Loads ImageReward (THUDM) from models/image_reward/ without network access, as the router that "
                   "decides which drafted SDVG blocks to keep.")

    def load(self, model_name, aggregation, quantile, device, dtype, frames_per_batch):
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
        patcher = comfy.model_patcher.ModelPatcher(router.model, load_device=load_device,
                                                   offload_device=offload_device)

        def prepare():
            model_management.load_models_gpu([patcher])
            return patcher.load_device

        router.patcher = patcher
        router.prepare = prepare
        router.interrupt = model_management.throw_exception_if_processing_interrupted
        logging.info("[speculative-video] ImageReward router loaded from %s (%s, %s, aggregation %s)",
                     weights_path, load_device, compute_dtype, router.aggregation)
        return (router,)


def format_scores(scores, aggregation, aggregate_value):
    """One summary line, then one line per frame: what the STRING output shows."""
    values = [float(value) for value in scores]
    summary = (f"{aggregation} = {aggregate_value:.4f} | min {min(values):.4f} | mean {sum(values) / len(values):.4f}"
               f" | max {max(values):.4f} | frames {len(values)}")
    return "\n".join([summary] + [f"frame {index}: {value:.4f}" for index, value in enumerate(values)])


class ImageRewardScore:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "router": ("REWARD_ROUTER", {"tooltip": "From Load ImageReward Router (or any router node)."}),
                "images": ("IMAGE", {"tooltip": "Frames to score, e.g. a decoded video; each frame is scored "
                                                "separately."}),
                "prompt": ("STRING", {"multiline": True, "default": "",
                                      "tooltip": "The text the frames are scored against (the prompt of the "
                                                 "video, as SDVG's router_prompt)."}),
            }
        }

    RETURN_TYPES = ("FLOAT", "STRING", "FLOAT")
    RETURN_NAMES = ("scores", "scores_text", "aggregate")
    OUTPUT_IS_LIST = (True, False, False)
    OUTPUT_TOOLTIPS = ("One reward per frame (a list).",
                       "Summary (aggregate, min, mean, max) and every frame's score, for choosing tau.",
                       "The frames' scores aggregated with the router's aggregation: compare it with SDVG's tau.")
    FUNCTION = "score"
    CATEGORY = "sampling/speculative"
    DESCRIPTION = ("Scores each frame with the reward router and aggregates them as SDVG does, to calibrate tau on "
                   "your own videos.")

    def score(self, router, images, prompt):
        import comfy.model_management as model_management
        import comfy.utils

        if not callable(getattr(router, "score", None)) or not isinstance(getattr(router, "aggregation", None), str):
            raise ValueError("router: expected a REWARD_ROUTER (an object with score(frames, prompt) and an "
                             f"'aggregation' string), got {type(router).__name__}")
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] == 0:
            raise ValueError(f"images: expected an IMAGE batch [frames, height, width, channels], got "
                             f"{getattr(images, 'shape', type(images).__name__)}")
        patcher = getattr(router, "patcher", None)
        if patcher is not None:
            model_management.load_models_gpu([patcher])
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


NODES = [
    ("LoadImageRewardRouter", LoadImageRewardRouter, "Load ImageReward Router"),
    ("ImageRewardScore", ImageRewardScore, "ImageReward Score"),
]
