"""ImageReward nodes (V3): `Load ImageReward Router` (-> REWARD_ROUTER for SDVG) and `ImageReward Score`.

What a user sees: inputs, outputs, tooltips. The work is nodes/glue/image_reward_run.py. Node ids, input names,
their order, defaults and bounds are those of the V1 nodes they replace, so saved workflows load unchanged; the V1
method names (`load`, `score`) stay as aliases of `execute` for callers of the V1 classes.
"""
from comfy_api.latest import io

from .glue.image_reward_run import (AGGREGATIONS, DEVICES, DTYPES, FOLDER_NAME, load_router,
                                    register_image_reward_folder, score_images)
from .v3 import LOADERS_CATEGORY, SAMPLING_CATEGORY, advanced

RewardRouter = io.Custom("REWARD_ROUTER")


class LoadImageRewardRouter(io.ComfyNode):
    NODE_ID, DISPLAY_NAME = "LoadImageRewardRouter", "Load ImageReward Router"

    @classmethod
    def define_schema(cls):
        import folder_paths

        register_image_reward_folder()
        return io.Schema(
            node_id=cls.NODE_ID,
            display_name=cls.DISPLAY_NAME,
            category=LOADERS_CATEGORY,
            description=("Loads ImageReward (THUDM) from models/image_reward/ without network access, as the router "
                         "that decides which drafted SDVG blocks to keep."),
            inputs=[
                io.Combo.Input("model_name", options=folder_paths.get_filename_list(FOLDER_NAME), tooltip=(
                    "ImageReward weights (ImageReward.pt from THUDM/ImageReward, or its .safetensors conversion) in "
                    "models/image_reward/. med_config.json, vocab.txt and tokenizer_config.json must sit beside it "
                    "(or elsewhere in an image_reward folder).")),
                io.Combo.Input("aggregation", options=list(AGGREGATIONS), default="min", tooltip=(
                    "How a block's per-frame scores become its score. min (the paper): a block is as good as its "
                    "worst frame, strictest. mean: tolerates one bad frame. quantile: the q-quantile below, between "
                    "the two.")),
                io.Float.Input("quantile", default=0.1, min=0.0, max=1.0, step=0.01, tooltip=(
                    "q for aggregation = quantile (0 = min, 0.5 = median); ignored otherwise.")),
                io.Combo.Input("device", options=list(DEVICES), default="default", tooltip=(
                    "default: ComfyUI's compute device (GPU if any), offloaded to RAM when other models need the "
                    "memory. cpu: always on the CPU (slow: about 1-2 s per frame)."), **advanced()),
                io.Combo.Input("dtype", options=list(DTYPES), default="auto", tooltip=(
                    "Compute precision. auto: bf16/fp16 on GPUs that run them fast, fp32 otherwise (the CPU). Half "
                    "precision halves memory (about 0.9 GB instead of 1.8 GB) and shifts scores by small amounts; "
                    "fp32 matches the reference."), **advanced()),
                io.Int.Input("frames_per_batch", default=16, min=1, max=256, tooltip=(
                    "Frames per network call. A whole SDVG block (up to 16 frames) in one call is the fastest; lower "
                    "it if memory is short."), **advanced()),
            ],
            outputs=[RewardRouter.Output(display_name="router", tooltip=(
                "ImageReward router: scores frames against a prompt; SDVG keeps a draft whose aggregated score "
                "reaches tau."))],
        )

    @classmethod
    def execute(cls, model_name, aggregation, quantile, device, dtype, frames_per_batch):
        return io.NodeOutput(load_router(model_name, aggregation, quantile, device, dtype, frames_per_batch))

    load = execute  # the V1 method name


class ImageRewardScore(io.ComfyNode):
    NODE_ID, DISPLAY_NAME = "ImageRewardScore", "ImageReward Score"

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=cls.NODE_ID,
            display_name=cls.DISPLAY_NAME,
            category=SAMPLING_CATEGORY,
            description=("Scores each frame with the reward router and aggregates them as SDVG does, to calibrate tau "
                         "on your own videos."),
            inputs=[
                RewardRouter.Input("router", tooltip="From Load ImageReward Router (or any router node)."),
                io.Image.Input("images", tooltip=("Frames to score, e.g. a decoded video; each frame is scored "
                                                  "separately.")),
                io.String.Input("prompt", multiline=True, default="", tooltip=(
                    "The text the frames are scored against (the prompt of the video, as SDVG's router_prompt).")),
            ],
            outputs=[
                io.Float.Output(display_name="scores", is_output_list=True,
                                tooltip="One reward per frame (a list)."),
                io.String.Output(display_name="scores_text", tooltip=(
                    "Summary (aggregate, min, mean, max) and every frame's score, for choosing tau.")),
                io.Float.Output(display_name="aggregate", tooltip=(
                    "The frames' scores aggregated with the router's aggregation: compare it with SDVG's tau.")),
            ],
        )

    @classmethod
    def execute(cls, router, images, prompt):
        return io.NodeOutput(*score_images(router, images, prompt))

    score = execute  # the V1 method name


NODES = [LoadImageRewardRouter, ImageRewardScore]
