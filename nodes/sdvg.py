"""The `SDVG Speculative Video` node: a small causal Wan drafter, a reward router and a large causal Wan target.

Per block of latent frames the drafter proposes, the VAE decodes the proposal (continuing the committed video), the
router scores its frames, and the block is kept when its score reaches tau; otherwise the target generates it. The
method lives in `samplers/sdvg.py` (plain torch); this node validates its inputs, places the models through
ComfyUI's model management, builds the runners, the streaming decoder and the router adapter, and reports.
"""
import json
import math

import torch

from ..samplers.causal import CausalWanRunner, kv_cache_bytes
from ..samplers.sdvg import SELF_FORCING_SIGMAS, speculative_generate
from ..samplers.wan import validate_window
from .stats_events import json_ready, report_stats

DEFAULT_SIGMAS = ", ".join(str(sigma) for sigma in SELF_FORCING_SIGMAS)
MODES = ("speculative", "target only", "draft only")
LATENT_CHANNELS = 16  # Wan 2.1 latent space (comfy.latent_formats.Wan21)
PIXELS_PER_LATENT = 8  # Wan 2.1 VAE: spatial downscale 8; temporal 4 (1 + 4 * (T - 1) frames for T latent frames)


# ---------------------------------------------------------------------------------------------------------------
# Validation (errors name the input and what was expected)

def parse_sigmas(text, input_name):
    """Comma-separated sigmas "1.0, 0.9375, ..." -> tuple of floats, strictly decreasing, each in (0, 1].

    Sigma is the flow-matching noise level (timestep = sigma * 1000); one model call per sigma, the last one's x0 is
    the block. The values are used as given (no shift is applied: Self-Forcing's list is already shifted).
    """
    pieces = [piece.strip() for piece in str(text).replace("\n", ",").split(",") if piece.strip()]
    if not pieces:
        raise ValueError(f"{input_name}: expected comma-separated sigmas such as {DEFAULT_SIGMAS!r}, got an empty list")
    try:
        sigmas = tuple(float(piece) for piece in pieces)
    except ValueError:
        raise ValueError(f"{input_name}: expected comma-separated numbers, got {text!r}") from None
    if not all(math.isfinite(sigma) and 0.0 < sigma <= 1.0 for sigma in sigmas):
        raise ValueError(f"{input_name}: every sigma must be in (0, 1], got {list(sigmas)}")
    if any(later >= earlier for earlier, later in zip(sigmas, sigmas[1:])):
        raise ValueError(f"{input_name}: sigmas must be strictly decreasing, got {list(sigmas)}")
    return sigmas


def check_wan21_t2v(model, input_name):
    """The ComfyUI MODEL `model` must hold a Wan 2.1 text-to-video DiT; returns its WanModel module."""
    import comfy.ldm.wan.model
    import comfy.supported_models

    base_model = getattr(model, "model", None)
    diffusion_model = getattr(base_model, "diffusion_model", None)
    if diffusion_model is None or not hasattr(base_model, "model_config"):
        raise ValueError(f"{input_name}: expected a ComfyUI MODEL (from UNETLoader / Load Diffusion Model), "
                         f"got {type(model).__name__}")
    config_name = type(base_model.model_config).__name__
    if type(base_model.model_config) is not comfy.supported_models.WAN21_T2V:
        raise ValueError(f"{input_name}: expected a Wan 2.1 T2V DiT (ComfyUI model config WAN21_T2V), got "
                         f"{config_name}; image-to-video, VACE, camera, audio and Wan 2.2 variants need inputs SDVG "
                         "does not give them")
    if type(diffusion_model) is not comfy.ldm.wan.model.WanModel:
        raise ValueError(f"{input_name}: expected a Wan 2.1 T2V DiT (comfy.ldm.wan.model.WanModel), got "
                         f"{type(diffusion_model).__name__}")
    return diffusion_model


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
    channels = drafter_space["latent channels"]
    if channels != (LATENT_CHANNELS, LATENT_CHANNELS):
        raise ValueError(f"drafter: expected {LATENT_CHANNELS} latent channels in and out (the Wan 2.1 VAE's), "
                         f"got {channels}")


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


def check_router(router):
    if not callable(getattr(router, "score", None)) or not isinstance(getattr(router, "aggregation", None), str):
        raise ValueError("router: expected a REWARD_ROUTER (an object with score(frames, prompt) and an "
                         f"'aggregation' string), got {type(router).__name__}")


# ---------------------------------------------------------------------------------------------------------------
# Adapters between samplers/sdvg.py's protocols and ComfyUI's model management

def compute_dtype(model):
    """The dtype ComfyUI runs this MODEL in: its manual-cast dtype when weights are stored narrower, else theirs."""
    base_model = model.model
    return base_model.manual_cast_dtype if base_model.manual_cast_dtype is not None else base_model.get_dtype()


class PlacedRunner:
    """A CausalWanRunner whose model is (re)loaded on ComfyUI's device before each call.

    When drafter and target do not both fit, ComfyUI offloads whichever ran least recently (fully or partly: its
    weights are then cast onto the device layer by layer); loading the model before its calls brings it back.
    When both fit, the load is a no-op.
    """

    def __init__(self, runner, patcher, activation_bytes):
        self.runner = runner
        self.patcher = patcher
        self.activation_bytes = activation_bytes

    def _place(self):
        import comfy.model_management

        comfy.model_management.load_models_gpu([self.patcher], memory_required=self.activation_bytes)

    def predict(self, block, sigma):
        self._place()
        return self.runner.predict(block, sigma)

    def commit(self, clean_block):
        self._place()
        return self.runner.commit(clean_block)

    def reset(self, context):
        self._place()
        return self.runner.reset(context)

    def __getattr__(self, name):  # committed_frames, frames_per_block, device, ...: the runner's
        if name == "runner":  # not set yet (e.g. while copying): no recursion
            raise AttributeError(name)
        return getattr(self.runner, name)


def place_runners(models, context, block_shape, max_frames, local_attn_frames, sink_frames):
    """Load the models through ComfyUI and build one reset CausalWanRunner per model.

    models: {name: (ModelPatcher, WanModel)}; block_shape: (1, C, F, h, w) latent block; max_frames: latent frames
    of the whole video. Returns {name: PlacedRunner}.

    The first load reserves room for every KV cache (allocated right after, they stay on the device for the whole
    run) plus one block's activations. When the models do not fit together, ComfyUI loads what fits; each
    PlacedRunner then loads its model before its calls and ComfyUI offloads (part of) the idle one.
    """
    import comfy.model_management

    _, _, frames_per_block, latent_height, latent_width = block_shape
    tokens_per_frame = (latent_height // 2) * (latent_width // 2)  # the DiT's 2x2 patches
    dtypes = {name: compute_dtype(patcher) for name, (patcher, _) in models.items()}
    kv_bytes = sum(kv_cache_bytes(module, tokens_per_frame=tokens_per_frame, max_frames=max_frames, batch_size=1,
                                  dtype=dtypes[name], local_attn_frames=local_attn_frames)
                   for name, (_, module) in models.items())
    activation_bytes = max(patcher.memory_required(list(block_shape)) for patcher, _ in models.values())
    comfy.model_management.load_models_gpu([patcher for patcher, _ in models.values()],
                                           memory_required=kv_bytes + activation_bytes)
    runners = {}
    for name, (patcher, module) in models.items():
        runner = CausalWanRunner(module, latent_height=latent_height, latent_width=latent_width,
                                 max_frames=max_frames, frames_per_block=frames_per_block,
                                 local_attn_frames=local_attn_frames, sink_frames=sink_frames, batch_size=1,
                                 device=patcher.load_device, dtype=dtypes[name])
        runners[name] = PlacedRunner(runner, patcher, activation_bytes)
        runners[name].reset(context)
    return runners


class PlacedRouter:
    """The router, with its ModelPatcher (if it has one) loaded before scoring; scores come back as CPU float [n]."""

    def __init__(self, router):
        self.router = router
        self.aggregation = router.aggregation

    def score(self, frames, prompt):
        import comfy.model_management

        patcher = getattr(self.router, "patcher", None)
        if patcher is not None:
            comfy.model_management.load_models_gpu([patcher])
        return torch.as_tensor(self.router.score(frames, prompt)).float().flatten().cpu()


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
    return (f"SDVG: {len(blocks)} blocks, {accepted} drafts kept (acceptance {rate_text}), tau {stats.get('tau')}, "
            f"{seconds:.1f} s, estimated speed-up {speedup_text} against target only (wall time on this machine)")


# ---------------------------------------------------------------------------------------------------------------

class SDVGSpeculativeVideo:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "drafter": ("MODEL", {"tooltip": "Small causal Wan 2.1 T2V DiT that proposes each block (e.g. "
                                                 "Self-Forcing 1.3B, converted with "
                                                 "scripts/convert_self_forcing.py)."}),
                "target": ("MODEL", {"tooltip": "Large causal Wan 2.1 T2V DiT that generates the blocks the router "
                                                "rejects (e.g. Krea Realtime 14B). Must share latent channels, patch "
                                                "size and text width with the drafter."}),
                "vae": ("VAE", {"tooltip": "The Wan 2.1 VAE. Drafts are decoded (streaming, continuing the committed "
                                           "video) so that the router can score them; the committed frames are the "
                                           "IMAGE output."}),
                "router": ("REWARD_ROUTER", {"tooltip": "Scores each decoded frame of a draft against router_prompt "
                                                        "(e.g. ImageReward); the block's score is the router's "
                                                        "aggregation of its frames (min by default)."}),
                "positive": ("CONDITIONING", {"tooltip": "The prompt encoded by the Wan text encoder (umT5-XXL); "
                                                         "both models read it. No negative: causal Wan models run "
                                                         "without classifier-free guidance."}),
                "router_prompt": ("STRING", {"multiline": True, "default": "",
                                             "tooltip": "The text the router scores frames against (usually the "
                                                        "same prompt as positive; CONDITIONING does not carry the "
                                                        "text)."}),
                "width": ("INT", {"default": 832, "min": 16, "max": 4096, "step": 16,
                                  "tooltip": "Video width in pixels, a multiple of 16."}),
                "height": ("INT", {"default": 480, "min": 16, "max": 4096, "step": 16,
                                   "tooltip": "Video height in pixels, a multiple of 16."}),
                "num_blocks": ("INT", {"default": 7, "min": 1, "max": 1024,
                                       "tooltip": "Blocks to generate. The video has num_blocks x frames_per_block "
                                                  "latent frames, i.e. 1 + 4 x (latent frames - 1) frames (7 blocks "
                                                  "of 3 = 81 frames)."}),
                "frames_per_block": ("INT", {"default": 3, "min": 1, "max": 64,
                                             "tooltip": "Latent frames per block (the models' training block size: "
                                                        "3 for Self-Forcing and Krea Realtime). Smaller blocks are "
                                                        "judged more often."}),
                "tau": ("FLOAT", {"default": -0.7, "min": -100.0, "max": 100.0, "step": 0.01,
                                  "tooltip": "Acceptance threshold on the block score (ImageReward units): a draft "
                                             "is kept when its score >= tau. Lower keeps more drafts (faster, closer "
                                             "to the drafter's quality); higher sends more blocks to the target."}),
                "mode": (list(MODES), {"default": "speculative",
                                       "tooltip": "speculative: use tau. target only: every block from the target "
                                                  "(tau = +inf, no drafter or router calls). draft only: every block "
                                                  "from the drafter (tau = -inf, router skipped). The baselines run "
                                                  "through the same code path."}),
                "drafter_sigmas": ("STRING", {"default": DEFAULT_SIGMAS,
                                              "tooltip": "The drafter's denoising steps per block: comma-separated "
                                                         "sigmas in (0, 1], decreasing (timestep = sigma x 1000). One "
                                                         "model call each."}),
                "target_sigmas": ("STRING", {"default": DEFAULT_SIGMAS,
                                             "tooltip": "The target's denoising steps per block, as drafter_sigmas."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xffffffffffffffff, "control_after_generate": True,
                                 "tooltip": "Seed of every block's noise (per block and model): the same seed gives "
                                            "the same video."}),
                "force_target_first_block": ("BOOLEAN", {"default": True,
                                                         "tooltip": "Always generate block 0 with the target (the "
                                                                    "first block sets the scene; the paper forces "
                                                                    "it). Off: block 0 is judged like the others."}),
            },
            "optional": {
                "local_attn_frames": ("INT", {"default": 0, "min": 0, "max": 4096,
                                              "tooltip": "Attention window in latent frames (sink and current block "
                                                         "included), Self-Forcing's local_attn_size; 0 = attend to "
                                                         "every earlier frame. A window caps the KV cache."}),
                "sink_frames": ("INT", {"default": 0, "min": 0, "max": 4096,
                                        "tooltip": "First latent frames always kept in the window (attention "
                                                   "sink); only with local_attn_frames > 0."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    RETURN_TYPES = ("LATENT", "IMAGE", "STRING")
    RETURN_NAMES = ("latent", "images", "stats")
    OUTPUT_TOOLTIPS = ("The whole latent video [1, 16, num_blocks x frames_per_block, height/8, width/8].",
                       "The decoded frames (decoded once, block by block, as the blocks were committed).",
                       "Per-block scores, decisions and timings, acceptance rate and estimated speed-up (JSON).")
    FUNCTION = "generate"
    CATEGORY = "sampling/speculative"
    DESCRIPTION = ("Speculative decoding for block-autoregressive video (SDVG): a small causal Wan drafter proposes "
                   "each block, a reward router scores the decoded frames, and a large causal Wan target regenerates "
                   "the blocks scoring below tau. Both models keep a KV cache of the committed blocks.")

    def generate(self, drafter, target, vae, router, positive, router_prompt, width, height, num_blocks,
                 frames_per_block, tau, mode, drafter_sigmas, target_sigmas, seed, force_target_first_block,
                 local_attn_frames=0, sink_frames=0, unique_id=None):
        import comfy.model_management

        from .wan_stream_decode import WanStreamingDecoder

        # Validation first: nothing is loaded or allocated for inputs that cannot work.
        drafter_module = check_wan21_t2v(drafter, "drafter")
        target_module = check_wan21_t2v(target, "target")
        check_same_latent_space(drafter_module, target_module)
        check_video_size(width, height, num_blocks, frames_per_block)
        drafter_steps = parse_sigmas(drafter_sigmas, "drafter_sigmas")
        target_steps = parse_sigmas(target_sigmas, "target_sigmas")
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {list(MODES)}, got {mode!r}")
        if not math.isfinite(tau):
            raise ValueError(f"tau: expected a finite number (use mode for the baselines), got {tau}")
        check_router(router)
        context = text_context(positive, wan_latent_space(target_module)["text width"])
        decoder = WanStreamingDecoder(vae, target.model.process_latent_out)  # checks it is the Wan 2.1 VAE
        window = check_window(local_attn_frames, sink_frames, frames_per_block)

        effective_tau = {"speculative": float(tau), "target only": math.inf, "draft only": -math.inf}[mode]
        # The baselines leave a model out entirely (no weights loaded, no KV cache): the target-only run never calls
        # the drafter, a draft-only run without the forced first block never calls the target.
        models = {}
        if mode != "draft only" or force_target_first_block:
            models["target"] = (target, target_module)
        if mode != "target only":
            models["drafter"] = (drafter, drafter_module)
        block_shape = (1, LATENT_CHANNELS, frames_per_block, height // PIXELS_PER_LATENT, width // PIXELS_PER_LATENT)
        runners = place_runners(models, context, block_shape, num_blocks * frames_per_block, window, sink_frames)

        stats = {}
        with torch.no_grad():
            latent, frames = speculative_generate(
                runners.get("drafter"), runners.get("target"), decoder, PlacedRouter(router), router_prompt,
                num_blocks=num_blocks, block_shape=block_shape, tau=effective_tau, drafter_sigmas=drafter_steps,
                target_sigmas=target_steps, seed=seed, force_target_first_block=force_target_first_block,
                aggregation=router.aggregation,
                interrupt=comfy.model_management.throw_exception_if_processing_interrupted,
                callback=block_progress(num_blocks, unique_id), stats=stats)

        output_device = comfy.model_management.intermediate_device()
        samples = target.model.process_latent_out(latent.float()).to(output_device)
        images = frames.float().to(output_device)
        stats = json_ready(stats)
        report_stats("sdvg", unique_id, stats, summary_line(stats))
        return ({"samples": samples}, images, json.dumps(stats, indent=1))


NODES = [("SDVGSpeculativeVideo", SDVGSpeculativeVideo, "SDVG Speculative Video")]
