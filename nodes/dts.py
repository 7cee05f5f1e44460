"""DTS nodes (V3): `DTS Sampler` (a SAMPLER for SamplerCustom / SamplerCustomAdvanced) and `DTS KSampler`.

What a user sees: inputs, outputs, tooltips. The work is nodes/glue/dts_run.py (ComfyUI) over
samplers/methods/dts.py (plain torch). Node ids, input names, their order, defaults and bounds are those of the V1
nodes they replace, so saved workflows load unchanged; the V1 method names (`get_sampler`, `sample`) stay as aliases
of `execute` for callers of the V1 classes (they may pass the node id as `unique_id`).
"""
import math

from comfy_api.latest import io

from ..samplers.methods.dts import DEFAULT_ATOL, DEFAULT_RTOL
from .glue.dts_run import dts_options, dts_sampler, ksampler_sample
from .v3 import SAMPLING_CATEGORY, advanced, node_id

# The paper's L2 threshold (11, increment 1.5) was measured on 7 RGB frames of 64x64 pixels; dividing by the
# square root of that many values gives the per-value RMS the nodes default to (the same at any size).
PAPER_VALUES = 7 * 3 * 64 * 64
DEFAULT_RMS_THRESHOLD = round(11.0 / math.sqrt(PAPER_VALUES), 4)  # 0.0375
DEFAULT_RMS_INCREMENT = round(1.5 / math.sqrt(PAPER_VALUES), 3)  # 0.005


def dts_inputs():
    """The DTS options shared by both nodes, in their saved order."""
    return [
        io.Int.Input("draft_stride", default=10, min=1, max=1000, tooltip=(
            "Fine schedule steps covered by one draft step. Larger: fewer sequential model calls when drafts are "
            "accepted, but coarser drafts that are rejected more often.")),
        io.Int.Input("target_stride", default=2, min=1, max=1000, tooltip=(
            "Fine schedule steps per target (verification) step; at most draft_stride. The result approaches Euler "
            "on this stride: 1 = full-schedule quality, larger = cheaper target batches and a coarser result.")),
        io.Int.Input("chunk", default=6, min=1, max=100, tooltip=(
            "Draft steps per round, so also the number of draft states in one target batch. Longer: fewer rounds "
            "when drafts are accepted, more wasted work after an early rejection and larger target batches.")),
        io.Float.Input("threshold", default=DEFAULT_RMS_THRESHOLD, min=0.0, max=100000.0, step=0.0005, round=False,
                       tooltip=(
            "How far a draft state may be from its target state and still be accepted (in round 0). 0: every draft "
            "rejected, the result equals Euler on the target_stride grid. Higher: fewer sequential calls, result "
            "further from that reference. Units follow metric (rms default 0.0375 = the paper's 11 on 7x3x64x64 "
            "frames).")),
        io.Float.Input("increment", default=DEFAULT_RMS_INCREMENT, min=0.0, max=100000.0, step=0.0005, round=False,
                       tooltip=(
            "Added to the threshold every round (progressive acceptance): later rounds, closer to the clean result, "
            "accept more. 0 keeps the threshold fixed.")),
        io.Combo.Input("metric", options=["rms", "l2"], default="rms", tooltip=(
            "Distance between draft and target states. rms: root mean square difference per latent value, one "
            "threshold means the same at any resolution and frame count. l2: the paper's L2 norm of the whole sample "
            "(grows with size; threshold 10-11, increment 1.5 reproduce the paper on 64x64 and 128x128 frames).")),
        io.Int.Input("max_parallel", default=0, min=0, max=4096, tooltip=(
            "At most this many draft states in one target model call (0 = the whole chunk at once). Lower it when "
            "the target batch does not fit in memory: same result, more sequential calls."), **advanced()),
        io.Boolean.Input("auto", default=False, tooltip=(
            "Measure while sampling what a batched target call costs against a single one on this "
            "hardware and choose the chunk (at most `chunk`) that minimises the wall time, or plain "
            "Euler on the target_stride grid (the threshold-0 result) when batching does not pay, as on "
            "a CPU or a GPU already busy with one sample. Costs at most 5% extra for measuring, nothing "
            "once a model and latent size have been measured in 3 runs. The console line says what it "
            "chose and why.")),
        # Appended after `auto` so that saved workflows keep their widget order; a workflow saved before these
        # existed gets their defaults (the tolerance rule) when the frontend loads it.
        io.Combo.Input("rule", options=["tolerance", "distance"], default="tolerance", tooltip=(
            "How a draft is judged. tolerance: accepted when its distance to the target state is at most rtol "
            "times the step the target itself took over that segment, plus atol: the same setting means the same "
            "at any model, resolution, frame count and latent scale; threshold and metric are then unused, except "
            "that the tolerance grows per round by the factor threshold + increment gives. distance: the paper's "
            "rule, a raw distance (threshold, increment, metric) whose meaning changes with all of these.")),
        io.Float.Input("rtol", default=DEFAULT_RTOL, min=0.0, max=100.0, step=0.005, round=False, tooltip=(
            "tolerance rule: how far a draft may be from its target, as a share of the target's own step (0.01 = "
            "1%). 0 (with atol 0) gives exactly Euler on the target_stride grid; higher saves sequential calls and "
            "moves the result away from it. If the result differs visibly from a plain sampler run, halve it; if "
            "the console shows most drafts rejected, double it.")),
        io.Float.Input("atol", default=DEFAULT_ATOL, min=0.0, max=100000.0, step=0.0005, round=False, tooltip=(
            "tolerance rule: a distance (in metric units) always allowed on top of rtol's share; 0 keeps the rule "
            "independent of the latent's scale. Rarely needed."), **advanced()),
    ]


class DTSSampler(io.ComfyNode):
    NODE_ID, DISPLAY_NAME = "DTSSampler", "DTS Sampler"

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=cls.NODE_ID,
            display_name=cls.DISPLAY_NAME,
            category=SAMPLING_CATEGORY,
            description=("Draft-and-Target Sampling: coarse Euler drafts verified in parallel by fine Euler steps of "
                         "the same model. Fewer sequential model calls when the GPU has spare batch throughput."),
            inputs=dts_inputs(),
            outputs=[io.Sampler.Output(tooltip=(
                "DTS as a sampler for SamplerCustom / SamplerCustomAdvanced (Euler steps on the given sigmas; give it "
                "a fine schedule, e.g. 100 steps)."))],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, draft_stride, target_stride, chunk, threshold, increment, metric, max_parallel, auto=False,
                rule="tolerance", rtol=DEFAULT_RTOL, atol=DEFAULT_ATOL, unique_id=None):
        options = dts_options(draft_stride, target_stride, chunk, threshold, increment, metric, max_parallel, auto,
                              rule, rtol, atol)
        return io.NodeOutput(dts_sampler(node_id(cls, unique_id), **options))

    get_sampler = execute  # the V1 method name


class DTSKSampler(io.ComfyNode):
    NODE_ID, DISPLAY_NAME = "DTSKSampler", "DTS KSampler"

    @classmethod
    def define_schema(cls):
        import comfy.samplers

        return io.Schema(
            node_id=cls.NODE_ID,
            display_name=cls.DISPLAY_NAME,
            category=SAMPLING_CATEGORY,
            description=("KSampler with Draft-and-Target Sampling: the scheduler's fine schedule is solved with coarse "
                         "drafts verified in parallel by fine steps of the same model."),
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model (draft and target are the same model)."),
                io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True,
                             tooltip="Seed of the initial noise."),
                io.Int.Input("steps", default=100, min=1, max=10000, tooltip=(
                    "Steps of the fine schedule DTS works on (the paper uses 100). Plain Euler on it would cost "
                    "steps / target_stride sequential calls.")),
                io.Float.Input("cfg", default=6.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Classifier-free guidance scale (1 skips the negative prompt)."),
                io.Combo.Input("scheduler", options=comfy.samplers.SCHEDULER_NAMES, default="simple",
                               tooltip="Scheduler of the fine sigma schedule."),
                io.Conditioning.Input("positive", tooltip="What the video should show."),
                io.Conditioning.Input("negative", tooltip="What it should not show (used when cfg > 1)."),
                io.Latent.Input("latent_image", tooltip="The latent to denoise (e.g. an empty video latent)."),
                io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01, tooltip=(
                    "Fraction of the schedule to run (below 1 keeps part of the input latent).")),
                *dts_inputs(),
            ],
            outputs=[io.Latent.Output(tooltip="The denoised latent.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, seed, steps, cfg, scheduler, positive, negative, latent_image, denoise, draft_stride,
                target_stride, chunk, threshold, increment, metric, max_parallel, auto=False, rule="tolerance",
                rtol=DEFAULT_RTOL, atol=DEFAULT_ATOL, unique_id=None):
        options = dts_options(draft_stride, target_stride, chunk, threshold, increment, metric, max_parallel, auto,
                              rule, rtol, atol)
        return io.NodeOutput(*ksampler_sample(model, seed, steps, cfg, scheduler, positive, negative, latent_image,
                                              denoise, options, node_id=node_id(cls, unique_id)))

    sample = execute  # the V1 method name


NODES = [DTSSampler, DTSKSampler]
