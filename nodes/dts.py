"""DTS nodes: `DTS Sampler` (a SAMPLER for SamplerCustom / SamplerCustomAdvanced) and `DTS KSampler`.

The sampling itself is samplers/dts.py; this module only adapts it to ComfyUI: it detects the conditioning
features that read a single sigma per batch (so that the target positions must be evaluated one at a time),
wires Cancel and the statistics event, and reuses ComfyUI's own sampling path for the KSampler node.
ComfyUI modules are imported inside the functions that use them.
"""
import math

from ..samplers.dts import check_options, format_stats, sample_dts
from .stats_events import report_stats

CATEGORY = "sampling/speculative"

# The paper's L2 threshold (11, increment 1.5) was measured on 7 RGB frames of 64x64 pixels; dividing by the
# square root of that many values gives the per-value RMS the nodes default to (the same at any size).
PAPER_VALUES = 7 * 3 * 64 * 64
DEFAULT_RMS_THRESHOLD = round(11.0 / math.sqrt(PAPER_VALUES), 4)  # 0.0375
DEFAULT_RMS_INCREMENT = round(1.5 / math.sqrt(PAPER_VALUES), 3)  # 0.005

# Per-step model wrappers see the whole (mixed-sigma) batch and may read only its first sigma (as cache
# wrappers do).
PER_STEP_WRAPPER_TYPES = ("predict_noise", "calc_cond_batch", "apply_model", "diffusion_model")


def dts_input_types():
    """The DTS options shared by both nodes (ComfyUI V1 input specs)."""
    return {
        "draft_stride": ("INT", {
            "default": 10, "min": 1, "max": 1000,
            "tooltip": "Fine schedule steps covered by one draft step. Larger: fewer sequential model calls when "
                       "drafts are accepted, but coarser drafts that are rejected more often."}),
        "target_stride": ("INT", {
            "default": 2, "min": 1, "max": 1000,
            "tooltip": "Fine schedule steps per target (verification) step; at most draft_stride. The result "
                       "approaches Euler on this stride: 1 = full-schedule quality, larger = cheaper target "
                       "batches and a coarser result."}),
        "chunk": ("INT", {
            "default": 6, "min": 1, "max": 100,
            "tooltip": "Draft steps per round, so also the number of draft states in one target batch. Longer: "
                       "fewer rounds when drafts are accepted, more wasted work after an early rejection and "
                       "larger target batches."}),
        "threshold": ("FLOAT", {
            "default": DEFAULT_RMS_THRESHOLD, "min": 0.0, "max": 100000.0, "step": 0.0005, "round": False,
            "tooltip": "How far a draft state may be from its target state and still be accepted (in round 0). "
                       "0: every draft rejected, the result equals Euler on the target_stride grid. Higher: "
                       "fewer sequential calls, result further from that reference. Units follow metric "
                       "(rms default 0.0375 = the paper's 11 on 7x3x64x64 frames)."}),
        "increment": ("FLOAT", {
            "default": DEFAULT_RMS_INCREMENT, "min": 0.0, "max": 100000.0, "step": 0.0005, "round": False,
            "tooltip": "Added to the threshold every round (progressive acceptance): later rounds, closer to the "
                       "clean result, accept more. 0 keeps the threshold fixed."}),
        "metric": (["rms", "l2"], {
            "default": "rms",
            "tooltip": "Distance between draft and target states. rms: root mean square difference per latent "
                       "value, one threshold means the same at any resolution and frame count. l2: the paper's "
                       "L2 norm of the whole sample (grows with size; threshold 10-11, increment 1.5 reproduce "
                       "the paper on 64x64 and 128x128 frames)."}),
        "max_parallel": ("INT", {
            "default": 0, "min": 0, "max": 4096,
            "tooltip": "At most this many draft states in one target model call (0 = the whole chunk at once). "
                       "Lower it when the target batch does not fit in memory: same result, more sequential "
                       "calls."}),
    }


def dts_options(draft_stride, target_stride, chunk, threshold, increment, metric, max_parallel):
    """Node widget values -> sample_dts keyword options (validated; max_parallel 0 means no cap)."""
    options = dict(draft_stride=draft_stride, target_stride=target_stride, chunk=chunk, threshold=threshold,
                   increment=increment, metric=metric, max_parallel=max_parallel or None)
    check_options(**options)
    return options


def mixed_sigma_hazards(model, extra_args, sigmas):
    """Why a batch mixing sigmas would be evaluated wrongly in this ComfyUI run ([] when it is safe).

    model: the sampler function's model (comfy.samplers.KSamplerX0Inpaint; its inner_model is the guider whose
    `conds` hold the processed conditioning). ComfyUI decides timestep ranges, ControlNet ranges and hook
    keyframes from the first sigma of the batch, model wrappers (caches) may do the same, and an inpainting
    denoise mask has the batch size of the latent, not of the target batch. sigmas: the run's schedule [N + 1].
    """
    reasons = []
    if extra_args.get("denoise_mask") is not None:
        reasons.append("denoise mask")
    guider = getattr(model, "inner_model", None)
    conds = getattr(guider, "conds", None) or {}
    evaluated = [float(s) for s in sigmas[:-1]]
    for cond_list in conds.values():
        for cond in cond_list or []:
            start, end = cond.get("timestep_start"), cond.get("timestep_end")
            if start is not None or end is not None:
                active = {(start is None or s <= start) and (end is None or s >= end) for s in evaluated}
                if len(active) > 1 and "conditioning timestep range" not in reasons:
                    reasons.append("conditioning timestep range")
            if cond.get("control") is not None and "ControlNet" not in reasons:
                reasons.append("ControlNet")
            if cond.get("hooks") is not None and "conditioning hooks" not in reasons:
                reasons.append("conditioning hooks")
    model_options = extra_args.get("model_options") or {}
    transformer_options = model_options.get("transformer_options") or {}
    wrappers = transformer_options.get("wrappers") or {}
    if any(any(wrappers.get(kind, {}).values()) for kind in PER_STEP_WRAPPER_TYPES) \
            or "model_function_wrapper" in model_options:
        reasons.append("model wrapper")
    return reasons


def check_supported(extra_args):
    """Refuse model add-ons that cannot follow DTS's evaluation order, with an error that says what to do."""
    transformer_options = (extra_args.get("model_options") or {}).get("transformer_options") or {}
    if "easycache" in transformer_options:
        # EasyCache / LazyCache keep one running state per trajectory and assume sigmas only decrease; DTS
        # goes back to higher sigmas for every target batch, even when positions are evaluated one at a time
        # (ComfyUI 0.3.64's EasyCache then fails with a TypeError, or would reuse another state's output).
        raise ValueError("DTS cannot sample a model with EasyCache or LazyCache: the caches assume one trajectory "
                         "with decreasing sigmas, DTS revisits higher sigmas to verify its drafts. Remove the "
                         "cache node from the model that feeds the DTS sampler.")


def sample_dts_comfyui(model, x, sigmas, extra_args=None, callback=None, disable=None, *, node_id=None,
                       parallel_target=None, **options):
    """The sampler function behind the DTS SAMPLER (called by comfy.samplers.KSAMPLER.sample).

    parallel_target: None decides from mixed_sigma_hazards(); True / False force the batched / one-at-a-time
    target evaluation.
    """
    import comfy.model_management

    extra_args = {} if extra_args is None else extra_args
    check_supported(extra_args)
    reasons = mixed_sigma_hazards(model, extra_args, sigmas) if parallel_target is None else []
    if parallel_target is None:
        parallel_target = not reasons
    stats = {}
    samples = sample_dts(model, x, sigmas, extra_args=extra_args, callback=callback, disable=disable,
                         parallel_target=parallel_target, stats=stats,
                         interrupt=comfy.model_management.throw_exception_if_processing_interrupted, **options)
    stats["sequential_target_reasons"] = reasons
    report_stats("dts", node_id, stats, format_stats(stats))
    return samples


def dts_sampler(node_id, **options):
    """A ComfyUI SAMPLER running DTS with `options` (sample_dts keywords)."""
    import comfy.samplers

    return comfy.samplers.KSAMPLER(sample_dts_comfyui, extra_options=dict(options, node_id=node_id))


class DTSSampler:
    DESCRIPTION = ("Draft-and-Target Sampling: coarse Euler drafts verified in parallel by fine Euler steps of the "
                   "same model. Fewer sequential model calls when the GPU has spare batch throughput.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": dts_input_types(), "hidden": {"unique_id": "UNIQUE_ID"}}

    RETURN_TYPES = ("SAMPLER",)
    OUTPUT_TOOLTIPS = ("DTS as a sampler for SamplerCustom / SamplerCustomAdvanced (Euler steps on the given "
                       "sigmas; give it a fine schedule, e.g. 100 steps).",)
    FUNCTION = "get_sampler"
    CATEGORY = CATEGORY

    def get_sampler(self, draft_stride, target_stride, chunk, threshold, increment, metric, max_parallel,
                    unique_id=None):
        options = dts_options(draft_stride, target_stride, chunk, threshold, increment, metric, max_parallel)
        return (dts_sampler(unique_id, **options),)


class DTSKSampler:
    DESCRIPTION = ("KSampler with Draft-and-Target Sampling: the scheduler's fine schedule is solved with coarse "
                   "drafts verified in parallel by fine steps of the same model.")

    @classmethod
    def INPUT_TYPES(cls):
        import comfy.samplers

        required = {
            "model": ("MODEL", {"tooltip": "The diffusion model (draft and target are the same model)."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xffffffffffffffff, "control_after_generate": True,
                             "tooltip": "Seed of the initial noise."}),
            "steps": ("INT", {"default": 100, "min": 1, "max": 10000,
                              "tooltip": "Steps of the fine schedule DTS works on (the paper uses 100). Plain "
                                         "Euler on it would cost steps / target_stride sequential calls."}),
            "cfg": ("FLOAT", {"default": 6.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                              "tooltip": "Classifier-free guidance scale (1 skips the negative prompt)."}),
            "scheduler": (comfy.samplers.SCHEDULER_NAMES, {"default": "simple",
                                                            "tooltip": "Scheduler of the fine sigma schedule."}),
            "positive": ("CONDITIONING", {"tooltip": "What the video should show."}),
            "negative": ("CONDITIONING", {"tooltip": "What it should not show (used when cfg > 1)."}),
            "latent_image": ("LATENT", {"tooltip": "The latent to denoise (e.g. an empty video latent)."}),
            "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                  "tooltip": "Fraction of the schedule to run (below 1 keeps part of the "
                                             "input latent)."}),
        }
        required.update(dts_input_types())
        return {"required": required, "hidden": {"unique_id": "UNIQUE_ID"}}

    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The denoised latent.",)
    FUNCTION = "sample"
    CATEGORY = CATEGORY

    def sample(self, model, seed, steps, cfg, scheduler, positive, negative, latent_image, denoise, draft_stride,
               target_stride, chunk, threshold, increment, metric, max_parallel, unique_id=None):
        import comfy.sample
        import comfy.samplers
        import comfy.utils
        import latent_preview

        sampler = dts_sampler(unique_id, **dts_options(draft_stride, target_stride, chunk, threshold, increment,
                                                       metric, max_parallel))
        if denoise <= 0.0:
            return (latent_image,)  # nothing to denoise, as with KSampler
        # The fine schedule exactly as BasicScheduler builds it (denoise < 1 keeps the schedule's tail).
        total_steps = steps if denoise >= 1.0 else int(steps / denoise)
        sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), scheduler,
                                                 total_steps).cpu()[-(steps + 1):]
        latent = comfy.sample.fix_empty_latent_channels(model, latent_image["samples"])
        noise = comfy.sample.prepare_noise(latent, seed, latent_image.get("batch_index"))
        callback = latent_preview.prepare_callback(model, sigmas.shape[-1] - 1)
        samples = comfy.sample.sample_custom(model, noise, cfg, sampler, sigmas, positive, negative, latent,
                                             noise_mask=latent_image.get("noise_mask"), callback=callback,
                                             disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
        return ({**latent_image, "samples": samples},)


NODES = [
    ("DTSSampler", DTSSampler, "DTS Sampler"),
    ("DTSKSampler", DTSKSampler, "DTS KSampler"),
]
