"""SDVG inside ComfyUI: checks on the node's inputs, the runners on ComfyUI's devices, progress and statistics.

The method is samplers/methods/sdvg.py (plain torch); this module validates ComfyUI's MODEL / VAE / CONDITIONING
inputs (errors name the input), builds one reset CausalWanRunner per model the mode needs, wraps runners and decoder
in `Placed`, and reports.
"""
import json
import logging
import math

import torch

from ...samplers.methods.schedules import SCHEDULES, check_block_schedule, check_flow_sigmas
from ...samplers.methods.sdvg import MODE_TAU, parts_needed, speculative_generate
from ...samplers.models.causal_runner import PROTOCOLS, CausalWanRunner, check_protocol, kv_cache_bytes  # noqa: F401
from ...samplers.models.memory_plan import GIB, MemoryPlanError, check_fits, memory_plan, plan_within  # noqa: F401
from ...samplers.models.wan import validate_window
from .image_reward_run import check_router
from .placement import Placed, compute_dtype
from .stats_events import report_stats

# The sigmas widgets' saved default (Self-Forcing's steps rounded to 4 digits); a widget default never changes.
DEFAULT_SIGMAS = "1.0, 0.9375, 0.8333, 0.625"
SCHEDULE_CHOICES = ("auto", "sigmas text") + tuple(SCHEDULES)
SELF_FORCING_TRAINED_FRAMES = 21  # latent frames Self-Forcing was trained on (81 frames)
LATENT_CHANNELS = 16  # Wan 2.1 latent space (comfy.latent_formats.Wan21)
PIXELS_PER_LATENT = 8  # Wan 2.1 VAE: spatial downscale 8; temporal 4 (1 + 4 * (T - 1) frames for T latent frames)


# The submodules CausalWanRunner drives (samplers/models/causal_runner.py); a DiT with other weight-carrying
# submodules (img_emb, vace_blocks, control_adapter, audio or pose encoders...) expects inputs SDVG does not give.
RUNNER_SUBMODULES = ("patch_embedding", "text_embedding", "time_embedding", "time_projection", "blocks", "head")


def check_wan21_t2v(model, input_name):
    """The ComfyUI MODEL `model` must hold what the causal runner can drive: a Wan 2.1 text-to-video DiT; returns
    its diffusion module.

    Decided on what the runner needs, not on class identity, so that core's causal WAN21_CausalAR_T2V /
    CausalWanModel (ComfyUI >= 0.21) and any later text-to-video variant of the same shape pass, while the other
    WAN21_T2V subclasses (I2V, FunControl, Camera, Vace, HuMo, S2V, Animate, Wan 2.2 TI2V, FlowRVS) are refused:
    the config's image_model "wan2.1" and model_type "t2v", flow-matching prediction, 16 latent channels in and
    out, the runner's submodules and no others that carry weights."""
    base_model = getattr(model, "model", None)
    diffusion_model = getattr(base_model, "diffusion_model", None)
    model_config = getattr(base_model, "model_config", None)
    if diffusion_model is None or model_config is None:
        raise ValueError(f"{input_name}: expected a ComfyUI MODEL (from UNETLoader / Load Diffusion Model), "
                         f"got {type(model).__name__}")
    config_name = type(model_config).__name__
    unet_config = getattr(model_config, "unet_config", None) or {}
    image_model, model_type = unet_config.get("image_model"), unet_config.get("model_type")
    if image_model != "wan2.1" or model_type != "t2v":
        raise ValueError(f"{input_name}: expected a Wan 2.1 text-to-video DiT (image_model 'wan2.1', model_type "
                         f"'t2v'), got {config_name} with image_model {image_model!r}, model_type {model_type!r}; "
                         "image-to-video, VACE, camera, audio and animation variants need inputs SDVG does not "
                         "give them")
    prediction = getattr(getattr(base_model, "model_type", None), "name", None)
    if prediction != "FLOW":
        raise ValueError(f"{input_name}: expected a flow-matching Wan 2.1 T2V DiT (ComfyUI model type FLOW: the "
                         f"runner reads its output as a velocity), got {config_name} with model type {prediction}")
    latent_channels = getattr(getattr(model_config, "latent_format", None), "latent_channels", None)
    dit_channels = (getattr(diffusion_model, "in_dim", None), getattr(diffusion_model, "out_dim", None))
    if latent_channels != LATENT_CHANNELS or dit_channels != (LATENT_CHANNELS, LATENT_CHANNELS):
        raise ValueError(f"{input_name}: expected {LATENT_CHANNELS} latent channels (the Wan 2.1 VAE's) in and out, "
                         f"got {config_name} with a {latent_channels}-channel latent format and a DiT taking "
                         f"{dit_channels[0]} and giving {dit_channels[1]} channels")
    module_name = type(diffusion_model).__name__
    missing = [name for name in RUNNER_SUBMODULES if not isinstance(getattr(diffusion_model, name, None),
                                                                    torch.nn.Module)]
    if missing:
        raise ValueError(f"{input_name}: expected a Wan 2.1 DiT with the submodules {', '.join(RUNNER_SUBMODULES)}, "
                         f"got {config_name} / {module_name} without {', '.join(missing)}")
    extra = [name for name, child in diffusion_model.named_children()
             if name not in RUNNER_SUBMODULES and next(child.parameters(), None) is not None]
    if extra:
        raise ValueError(f"{input_name}: expected a plain Wan 2.1 text-to-video DiT, got {config_name} / "
                         f"{module_name} with weights in {', '.join(extra)}: conditioning (image, VACE, camera, "
                         "audio...) that SDVG's runner does not feed")
    return diffusion_model


# transformer_options keys through which core's AR video nodes (comfy_extras/nodes_ar_video.py, ComfyUI >= 0.21)
# steer its own sampler: ARVideoI2V puts the start image's latent in ar_config["initial_latent"]; sample_ar_video
# sets ar_state while it runs. SDVG's runner has its own caches and would silently drop them.
CORE_AR_OPTIONS = ("ar_config", "ar_state")


def check_no_core_ar_state(model, input_name):
    """A MODEL carrying core AR state SDVG cannot honour (e.g. ARVideoI2V's start image) is refused by name, so that
    it never becomes a plain text-to-video run."""
    options = (getattr(model, "model_options", None) or {}).get("transformer_options") or {}
    found = [key for key in CORE_AR_OPTIONS if options.get(key)]
    if found:
        detail = ", ".join(f"{key} ({', '.join(sorted(options[key]))})" if isinstance(options[key], dict) else key
                           for key in found)
        raise ValueError(f"{input_name}: expected a MODEL without core AR video state, got transformer_options "
                         f"with {detail} (set by core's AR video nodes, e.g. ARVideoI2V's start image); SDVG "
                         "generates text-to-video only and would ignore it: connect the model loader directly")


def wan_latent_space(diffusion_model):
    """What two Wan DiTs must share to take turns on one video: channels in/out, patch size, text width."""
    return {
        "latent channels": (diffusion_model.in_dim, diffusion_model.out_dim),
        "patch size": tuple(diffusion_model.patch_size),
        "text width": diffusion_model.text_embedding[0].in_features,
    }


def check_same_latent_space(drafter_module, target_module):
    drafter_space, target_space = wan_latent_space(drafter_module), wan_latent_space(target_module)
    for what in drafter_space:
        if drafter_space[what] != target_space[what]:
            raise ValueError(f"drafter and target must share {what} (got {drafter_space[what]} and "
                             f"{target_space[what]})")


def check_video_size(width, height, num_blocks, frames_per_block):
    for name, value in (("width", width), ("height", height)):
        if value < 16 or value % 16:
            raise ValueError(f"{name}: expected a positive multiple of 16 (VAE /8, then the DiT's 2x2 patches), "
                             f"got {value}")
    if num_blocks < 1:
        raise ValueError(f"num_blocks: expected at least 1 block, got {num_blocks}")
    if frames_per_block < 1:
        raise ValueError(f"frames_per_block: expected at least 1 latent frame, got {frames_per_block}")


def check_window(local_attn_frames, sink_frames, frames_per_block):
    """local_attn_frames 0 = no window (attend to every earlier frame); returns the runner's window (None or int)."""
    if local_attn_frames == 0:
        if sink_frames:
            raise ValueError(f"sink_frames: sink frames belong to a local window; set local_attn_frames > 0 or "
                             f"sink_frames to 0 (got {sink_frames})")
        return None
    validate_window(frames_per_block, local_attn_frames, sink_frames)  # its errors name the inputs
    return local_attn_frames


def block_schedule(choice, sigmas_text, protocol, input_name):
    """The schedule widget (SCHEDULE_CHOICES) and the sigmas text -> (BlockSchedule, what it is). `auto` takes the
    text when it was edited away from DEFAULT_SIGMAS (so old workflows with typed sigmas keep them), else the
    protocol's schedule. The text is validated whatever the choice (its errors name `input_name`)."""
    schedule_input = input_name.replace("_sigmas", "_schedule")
    sigmas = check_flow_sigmas(sigmas_text, input_name)
    if choice not in SCHEDULE_CHOICES:
        raise ValueError(f"{schedule_input}: expected one of {list(SCHEDULE_CHOICES)}, got {choice!r}")
    if choice == "sigmas text" or (choice == "auto" and sigmas != check_flow_sigmas(DEFAULT_SIGMAS)):
        return check_block_schedule(sigmas, input_name), f"{input_name} {sigmas}"
    name = protocol if choice == "auto" else choice
    return SCHEDULES[name], name


def check_router_prompt(tau, router_prompt):
    """Speculative mode scores drafts against the prompt: an empty one would score every draft against nothing."""
    if math.isfinite(tau) and not str(router_prompt or "").strip():
        raise ValueError("router_prompt: speculative mode scores each draft against the prompt; got an empty text "
                         "(feed it the prompt given to the text encoder, as the example workflow does)")


def length_warnings(protocols, window, num_blocks, frames_per_block):
    """Self-Forcing without a window past the 21 latent frames it was trained on: a warning per model."""
    frames = num_blocks * frames_per_block
    return [f"{name}: self_forcing without a window over {frames} latent frames, past the "
            f"{SELF_FORCING_TRAINED_FRAMES} Self-Forcing was trained on; quality may drift (set local_attn_frames, "
            "e.g. 12 with sink_frames 3, or fewer blocks)"
            for name, protocol in protocols.items()
            if protocol == "self_forcing" and window is None and frames > SELF_FORCING_TRAINED_FRAMES]


def check_memory(models, protocols, width, height, num_blocks, frames_per_block, window, sink_frames,
                 context_frames):
    """The run's memory plan against what ComfyUI can make free on the target's device, after offloading what it
    may (a self_forcing target's deferred commits split into groups that fit: `plan_within`). Raises MemoryPlanError
    before anything is allocated; returns (plan, available bytes)."""
    import comfy.model_management

    plan_models = {name: (module, protocols[name], compute_dtype(patcher))
                   for name, (patcher, module) in models.items()}
    options = dict(width=width, height=height, num_blocks=num_blocks, frames_per_block=frames_per_block,
                   local_attn_frames=window, sink_frames=sink_frames, context_frames=context_frames)
    device = next(iter(models.values()))[0].load_device
    comfy.model_management.free_memory(memory_plan(plan_models, **options).total_bytes, device)
    available = comfy.model_management.get_free_memory(device)
    plan = plan_within(available, plan_models, **options)
    check_fits(plan, available, device)
    return plan, available


def effective_tau(mode, tau):
    """The node's mode and tau widgets -> the tau the loop runs (the baselines are +-inf)."""
    if mode not in MODE_TAU:
        raise ValueError(f"mode: expected one of {list(MODE_TAU)}, got {mode!r}")
    if not math.isfinite(tau):
        raise ValueError(f"tau: expected a finite number (use mode for the baselines), got {tau}")
    return float(tau) if MODE_TAU[mode] is None else MODE_TAU[mode]


def text_context(positive, text_width):
    """The text embeddings [1, L, text_width] of the first CONDITIONING entry."""
    try:
        context = positive[0][0]
    except (TypeError, IndexError, KeyError):
        context = None
    if not torch.is_tensor(context) or context.ndim != 3 or context.shape[-1] != text_width:
        shape = list(context.shape) if torch.is_tensor(context) else type(context).__name__
        raise ValueError(f"positive: expected CONDITIONING from the Wan text encoder (umT5-XXL, [1, L, {text_width}]),"
                         f" got {shape}")
    if context.shape[0] != 1:
        raise ValueError(f"positive: expected one prompt (batch 1), got a batch of {context.shape[0]}")
    return context


def comfy_attention(transformer_options):
    """attend(q, k, v, mask=None) for CausalWanRunner through ComfyUI's own dispatch: `optimized_attention` (the
    backend the user chose: sage, flash, xformers, split, pytorch), `optimized_attention_masked` for masked calls
    (Krea's block-causal recompute), given the MODEL's transformer_options so that an `optimized_attention_override`
    and other patches apply as they do inside WanModel. q, k, v: [B, L, heads, head_dim]; returns [B, Lq, heads *
    head_dim]. The boolean mask (True = attend) becomes an additive one, which every backend takes."""
    from comfy.ldm.modules import attention

    def attend(q, k, v, mask=None):
        heads = q.shape[2]
        q, k, v = (tensor.transpose(1, 2) for tensor in (q, k, v))  # [B, heads, L, d]: skip_reshape
        if mask is None:
            return attention.optimized_attention(q, k, v, heads, skip_reshape=True,
                                                 transformer_options=transformer_options)
        additive = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill_(~mask.to(q.device),
                                                                                       float("-inf"))
        return attention.optimized_attention_masked(q, k, v, heads, mask=additive, skip_reshape=True,
                                                    transformer_options=transformer_options)

    return attend


def place_runners(models, context, block_shape, max_frames, local_attn_frames, sink_frames, protocols=None,
                  context_frames=3, plan=None):
    """Load the models through ComfyUI and build one reset CausalWanRunner per model.

    models: {name: (ModelPatcher, WanModel)}; block_shape: (1, C, F, h, w) latent block; max_frames: latent frames
    of the whole video; protocols: {name: protocol} (default self_forcing); plan: the run's MemoryPlan (the first
    load reserves its bytes). Attention goes through ComfyUI's dispatch with each MODEL's transformer_options
    (`comfy_attention`). Returns {name: Placed runner}.

    The first load reserves room for every KV cache (allocated right after, they stay on the device for the whole
    run) plus one block's activations. When the models do not fit together, ComfyUI loads what fits; each runner's
    model is then loaded again before its calls and ComfyUI offloads (part of) the idle one.
    """
    import comfy.model_management

    _, _, frames_per_block, latent_height, latent_width = block_shape
    protocols = protocols or {name: "self_forcing" for name in models}
    if plan is None:
        plan = memory_plan({name: (module, protocols[name], compute_dtype(patcher))
                            for name, (patcher, module) in models.items()},
                           width=latent_width * PIXELS_PER_LATENT, height=latent_height * PIXELS_PER_LATENT,
                           num_blocks=max_frames // frames_per_block, frames_per_block=frames_per_block,
                           local_attn_frames=local_attn_frames, sink_frames=sink_frames, context_frames=context_frames)
    dtypes = {name: compute_dtype(patcher) for name, (patcher, _) in models.items()}
    activation_bytes = max(patcher.memory_required(list(block_shape)) for patcher, _ in models.values())
    persistent_bytes = plan.total_bytes - plan.activation_bytes  # both caches and text K/V
    comfy.model_management.load_models_gpu([patcher for patcher, _ in models.values()],
                                           memory_required=persistent_bytes + max(activation_bytes,
                                                                                  plan.activation_bytes))
    runners = {}
    for name, (patcher, module) in models.items():
        window = local_attn_frames if protocols[name] == "self_forcing" else None
        runner = CausalWanRunner(module, latent_height=latent_height, latent_width=latent_width,
                                 max_frames=max_frames, frames_per_block=frames_per_block,
                                 local_attn_frames=window, sink_frames=sink_frames if window else 0, batch_size=1,
                                 device=patcher.load_device, dtype=dtypes[name], protocol=protocols[name],
                                 context_frames=context_frames,
                                 attention=comfy_attention(dict(patcher.model_options.get("transformer_options", {}))),
                                 max_commit_blocks=plan.inputs.get("deferred_blocks") if name == "target" else None)
        runners[name] = Placed(runner, patcher, ("predict", "commit", "reset"), memory_required=activation_bytes)
        runners[name].reset(context)
    return runners


def block_progress(num_blocks, unique_id):
    """callback(info) for speculative_generate: advances ComfyUI's progress bar per block, with a preview of the
    block's last decoded frame."""
    import comfy.utils
    import latent_preview
    from comfy.cli_args import LatentPreviewMethod, args

    progress_bar = comfy.utils.ProgressBar(num_blocks, node_id=unique_id)
    show_previews = args.preview_method != LatentPreviewMethod.NoPreviews

    def callback(info):
        preview = None
        frames = info.get("frames")
        if show_previews and frames is not None and len(frames) > 0:
            image = latent_preview.preview_to_image(frames[-1].float() * 2.0 - 1.0)  # expects -1..1
            preview = ("JPEG", image, latent_preview.MAX_PREVIEW_RESOLUTION)
        progress_bar.update_absolute(info["block"] + 1, num_blocks, preview)

    return callback


def summary_line(stats):
    blocks = stats.get("blocks", [])
    accepted = sum(1 for block in blocks if block.get("accepted"))
    rate = stats.get("acceptance_rate")
    rate_text = f"{100.0 * rate:.0f}%" if isinstance(rate, (int, float)) and math.isfinite(rate) else "n/a"
    speedup = stats.get("estimated_speedup")
    speedup_text = f"x{speedup:.2f}" if isinstance(speedup, (int, float)) and math.isfinite(speedup) else "n/a"
    seconds = stats.get("seconds", float("nan"))
    plan = stats.get("memory_plan") or {}
    plan_text = ""
    if plan:
        plan_text = (f"; memory plan {plan['total_bytes'] / GIB:.2f} GiB of {plan['available_bytes'] / GIB:.2f} GiB "
                     f"free ({', '.join(f'{n} {p}' for n, p in stats.get('protocols', {}).items())})")
    warnings = "".join(f"; WARNING {warning}" for warning in stats.get("warnings", []))
    flops = stats.get("flops_speedup")
    flops_text = f"x{flops:.2f}" if isinstance(flops, (int, float)) and math.isfinite(flops) else "n/a"
    return (f"SDVG: {len(blocks)} blocks, {accepted} drafts kept (acceptance {rate_text}), tau {stats.get('tau')}, "
            f"{seconds:.1f} s, estimated speed-up {speedup_text} against target only (wall time on this machine), "
            f"{flops_text} in DiT FLOPs, {stats.get('target_forwards_saved', 'n/a')} target forwards saved"
            f"{plan_text}{warnings}")


def run_sdvg(drafter, target, vae, router, positive, router_prompt, width, height, num_blocks, frames_per_block, tau,
             mode, drafter_sigmas, target_sigmas, seed, force_target_first_block, local_attn_frames=0, sink_frames=0,
             unique_id=None, drafter_protocol="self_forcing", target_protocol="krea_realtime", drafter_schedule="auto",
             target_schedule="auto", context_frames=3):
    """The SDVG node's work: validate, plan memory, place, generate, report. Returns (LATENT, IMAGE, stats JSON)."""
    import comfy.model_management

    from .wan_vae_stream import WanFrameEncoder, WanStreamingDecoder

    # Validation first: nothing is loaded or allocated for inputs that cannot work.
    drafter_module = check_wan21_t2v(drafter, "drafter")
    target_module = check_wan21_t2v(target, "target")
    check_no_core_ar_state(drafter, "drafter")
    check_no_core_ar_state(target, "target")
    check_same_latent_space(drafter_module, target_module)
    check_video_size(width, height, num_blocks, frames_per_block)
    protocols = {"drafter": check_protocol(drafter_protocol, "drafter_protocol"),
                 "target": check_protocol(target_protocol, "target_protocol")}
    drafter_steps, drafter_schedule_name = block_schedule(drafter_schedule, drafter_sigmas, protocols["drafter"],
                                                          "drafter_sigmas")
    target_steps, target_schedule_name = block_schedule(target_schedule, target_sigmas, protocols["target"],
                                                        "target_sigmas")
    if not isinstance(context_frames, int) or context_frames < 2:
        raise ValueError(f"context_frames: expected an integer >= 2 (Krea's kv_cache_num_frames), got "
                         f"{context_frames!r}")
    tau = effective_tau(mode, tau)
    needed = parts_needed(tau, force_target_first_block)
    if needed["router"]:
        if router is None:
            raise ValueError(f"router: mode {mode!r} scores every draft with a router; connect Load ImageReward "
                             "Router (or another REWARD_ROUTER), or choose mode 'target only' / 'draft only', which "
                             "run without one")
        check_router(router)
    check_router_prompt(tau, router_prompt)
    context = text_context(positive, wan_latent_space(target_module)["text width"])
    decoder = WanStreamingDecoder(vae, target.model.process_latent_out)  # checks it is the Wan 2.1 VAE
    encoder = WanFrameEncoder(vae, target.model.process_latent_in)
    window = check_window(local_attn_frames, sink_frames, frames_per_block)

    # The baselines leave a model out entirely (no weights loaded, no KV cache).
    models = {name: pair for name, pair in (("target", (target, target_module)), ("drafter", (drafter, drafter_module)))
              if needed[name]}
    protocols = {name: protocols[name] for name in models}
    warnings = length_warnings(protocols, window, num_blocks, frames_per_block)
    for warning in warnings:
        logging.warning("[speculative-video] SDVG: %s", warning)
    # The plan against what ComfyUI can free: a request that cannot fit never reaches the allocator.
    plan, available = check_memory(models, protocols, width, height, num_blocks, frames_per_block, window,
                                   sink_frames, context_frames)
    block_shape = (1, LATENT_CHANNELS, frames_per_block, height // PIXELS_PER_LATENT, width // PIXELS_PER_LATENT)
    runners = place_runners(models, context, block_shape, num_blocks * frames_per_block, window, sink_frames,
                            protocols, context_frames, plan)
    decode_bytes = vae.memory_used_decode(block_shape, vae.vae_dtype)
    placed_decoder = Placed(decoder, vae.patcher, ("decode",), memory_required=decode_bytes,
                            force_full_load=getattr(vae, "disable_offload", False))

    stats = {}
    with torch.no_grad():
        latent, frames = speculative_generate(
            runners.get("drafter"), runners.get("target"), placed_decoder, router, router_prompt,
            num_blocks=num_blocks, block_shape=block_shape, tau=tau, drafter_sigmas=drafter_steps,
            target_sigmas=target_steps, seed=seed, force_target_first_block=force_target_first_block,
            aggregation=router.aggregation if router is not None else "min", encoder=encoder,
            interrupt=comfy.model_management.throw_exception_if_processing_interrupted,
            callback=block_progress(num_blocks, unique_id), stats=stats)

    output_device = comfy.model_management.intermediate_device()
    samples = target.model.process_latent_out(latent.float()).to(output_device)
    images = frames.float().to(output_device)
    stats.update(protocols=protocols, warnings=warnings,
                 schedules={name: label for name, label in (("drafter", drafter_schedule_name),
                                                            ("target", target_schedule_name)) if name in models},
                 memory_plan=dict(plan.as_dict(), available_bytes=int(available)))
    stats = report_stats("sdvg", unique_id, stats, summary_line)
    return ({"samples": samples}, images, json.dumps(stats, indent=1))
