"""ImageReward nodes: `Load ImageReward Router` (-> REWARD_ROUTER for SDVG) and `ImageReward Score`.

What a user sees: inputs, outputs, tooltips. The work is nodes/glue/image_reward_run.py.
"""
from .glue.image_reward_run import (AGGREGATIONS, DEVICES, DTYPES, FOLDER_NAME, load_router,
                                    register_image_reward_folder, score_images)


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
        return (load_router(model_name, aggregation, quantile, device, dtype, frames_per_batch),)


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
        return score_images(router, images, prompt)


NODES = [
    ("LoadImageRewardRouter", LoadImageRewardRouter, "Load ImageReward Router"),
    ("ImageRewardScore", ImageRewardScore, "ImageReward Score"),
]
