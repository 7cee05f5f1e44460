"""DTS inside ComfyUI: the SAMPLER function, mixed-sigma hazard detection and the KSampler path.

The sampling itself is samplers/methods/dts.py; this module adapts it to ComfyUI: it detects the conditioning
features that read a single sigma per batch (so that the target positions must be evaluated one at a time),
wires Cancel and the statistics event, and reuses ComfyUI's own sampling path for the KSampler node.
ComfyUI modules are imported inside the functions that use them.
"""
import weakref

from ...samplers.methods.dts import DEFAULT_ATOL, DEFAULT_RTOL, check_options, format_stats, sample_dts
from ...samplers.methods.schedules import check_noise_levels
from .stats_events import report_stats

# Auto mode's measurements (batch-cost ratios, and the drafts accepted per option set), per loaded diffusion model
# (ComfyUI's BaseModel), for as long as the model stays loaded: later runs of the same model and latent shape need
# no probe calls and start from the acceptance seen before.
AUTO_MEMORY = weakref.WeakKeyDictionary()

# Per-step model wrappers see the whole (mixed-sigma) batch and may read only its first sigma (as cache
# wrappers do).
PER_STEP_WRAPPER_TYPES = ("predict_noise", "calc_cond_batch", "apply_model", "diffusion_model")


def dts_options(draft_stride, target_stride, chunk, threshold, increment, metric, max_parallel, auto=False,
                rule="tolerance", rtol=DEFAULT_RTOL, atol=DEFAULT_ATOL):
    """Node widget values -> sample_dts keyword options (validated; max_parallel 0 means no cap). A caller that
    passes no rule (a V1-style call of the node methods) gets the nodes' default, the tolerance rule."""
    options = dict(draft_stride=draft_stride, target_stride=target_stride, chunk=chunk, threshold=threshold,
                   increment=increment, metric=metric, max_parallel=max_parallel or None, rule=rule, rtol=rtol,
                   atol=atol)
    check_options(**options)
    return dict(options, auto=bool(auto))


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
    memory = None
    diffusion_model = getattr(getattr(model, "inner_model", None), "inner_model", None)  # guider -> BaseModel
    if options.get("auto") and diffusion_model is not None:
        try:
            memory = AUTO_MEMORY.setdefault(diffusion_model, {})
        except TypeError:  # not weak-referenceable: measure afresh in every run
            memory = None
    samples = sample_dts(model, x, sigmas, extra_args=extra_args, callback=callback, disable=disable,
                         parallel_target=parallel_target, stats=stats, auto_memory=memory,
                         interrupt=comfy.model_management.throw_exception_if_processing_interrupted, **options)
    stats["sequential_target_reasons"] = reasons
    report_stats("dts", node_id, stats, format_stats)
    return samples


def dts_sampler(node_id, **options):
    """A ComfyUI SAMPLER running DTS with `options` (sample_dts keywords)."""
    import comfy.samplers

    return comfy.samplers.KSAMPLER(sample_dts_comfyui, extra_options=dict(options, node_id=node_id))




def check_schedule(sigmas, steps, scheduler, model_sampling):
    """The scheduler's fine schedule must strictly decrease; otherwise name `steps` and `scheduler` (e.g. `simple`
    repeats noise levels beyond the model's discrete schedule: 1000 for SD 1.5)."""
    try:
        check_noise_levels(sigmas, "sigmas")
    except ValueError as error:
        levels = getattr(model_sampling, "sigmas", None)
        limit = f" (this model's discrete schedule has {len(levels)} noise levels)" if levels is not None else ""
        raise ValueError(f"steps: scheduler {scheduler!r} cannot make {steps} strictly decreasing noise levels for "
                         f"this model{limit}: {error}. Lower steps or choose another scheduler.") from None


def ksampler_sample(model, seed, steps, cfg, scheduler, positive, negative, latent_image, denoise, options,
                    node_id=None):
    """DTS KSampler's work: the scheduler's fine schedule, the seeded noise, ComfyUI's sampling path with DTS."""
    import comfy.sample
    import comfy.samplers
    import comfy.utils
    import latent_preview

    sampler = dts_sampler(node_id, **options)
    if denoise <= 0.0:
        return (latent_image,)  # nothing to denoise, as with KSampler
    # The fine schedule exactly as BasicScheduler builds it (denoise < 1 keeps the schedule's tail).
    total_steps = steps if denoise >= 1.0 else int(steps / denoise)
    model_sampling = model.get_model_object("model_sampling")
    sigmas = comfy.samplers.calculate_sigmas(model_sampling, scheduler, total_steps).cpu()[-(steps + 1):]
    check_schedule(sigmas, steps, scheduler, model_sampling)
    latent = comfy.sample.fix_empty_latent_channels(model, latent_image["samples"])
    noise = comfy.sample.prepare_noise(latent, seed, latent_image.get("batch_index"))
    callback = latent_preview.prepare_callback(model, sigmas.shape[-1] - 1)
    samples = comfy.sample.sample_custom(model, noise, cfg, sampler, sigmas, positive, negative, latent,
                                         noise_mask=latent_image.get("noise_mask"), callback=callback,
                                         disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
    return ({**latent_image, "samples": samples},)
