"""Test helpers for the SDVG node: tiny Wan checkpoints, a random-weight Wan 2.1 VAE, a simple router.

Everything here imports ComfyUI lazily (only the tests marked `comfyui` call these helpers).
The checkpoints are built from ComfyUI's own modules on the meta device (shapes only) and filled with seeded random
weights, then saved as safetensors with the original Wan key names, so ComfyUI's stock loaders (UNETLoader,
VAELoader) detect and load them the way they load real files.
"""
import json

import torch

from scripts.tiny_comfyui_models import random_state_dict, write_tiny_wan  # noqa: F401  (shared with the bench)

# The Wan 2.1 VAE's published architecture (ComfyUI hard-codes it too: there is no smaller Wan VAE).
WAN21_VAE_CONFIG = {"dim": 96, "z_dim": 16, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_scales": [],
                    "temperal_downsample": [False, True, True], "dropout": 0.0}


def write_random_wan21_vae(path, seed=0, dtype=torch.float16):
    """Save a Wan 2.1 VAE with random weights (ComfyUI's key names) to `path` (safetensors, ~254 MB in fp16)."""
    import comfy.ldm.wan.vae
    from safetensors.torch import save_file

    with torch.device("meta"):
        vae = comfy.ldm.wan.vae.WanVAE(**WAN21_VAE_CONFIG)
    save_file(random_state_dict(vae, seed, dtype), str(path))


# The safetensors metadata that makes core (>= 0.21) detect a Wan 2.1 T2V file as its causal WAN21_CausalAR_T2V:
# comfy.model_detection merges metadata["config"]["transformer"] into the detected unet config.
CAUSAL_AR_METADATA = {"config": json.dumps({"transformer": {"causal_ar": True}})}


def core_ar_model():
    """Core's comfy.ldm.wan.ar_model (ComfyUI >= 0.21), or None on a ComfyUI without its own causal Wan."""
    try:
        import comfy.ldm.wan.ar_model
    except ImportError:
        return None
    return comfy.ldm.wan.ar_model


def add_model_folder(kind, directory):
    """Make ComfyUI's loaders look in `directory` first for models of `kind` ("diffusion_models", "vae", ...):
    a file of the same name in the checkout's own models/ folder must not shadow the test's."""
    import folder_paths

    folder_paths.add_model_folder_path(kind, str(directory), is_default=True)
    # get_filename_list caches directory listings; files written after the first listing must be seen.
    folder_paths.filename_list_cache.pop(kind, None)


def core_causal_wan_config():
    """ComfyUI's model config for causal (autoregressive) Wan 2.1 T2V checkpoints.

    Core's WAN21_CausalAR_T2V (ComfyUI >= 0.21, comfy/supported_models.py) where the running ComfyUI has it; else a
    stand-in of the same shape: a WAN21_T2V subclass whose model is a WanModel subclass with the same submodules
    and keys (core's comfy.ldm.wan.ar_model.CausalWanModel changes only the forward pass).
    """
    import comfy.ldm.wan.model
    import comfy.model_base
    import comfy.supported_models

    core = getattr(comfy.supported_models, "WAN21_CausalAR_T2V", None)
    if core is not None:
        return core

    class CausalWanModel(comfy.ldm.wan.model.WanModel):
        """Stand-in for core's CausalWanModel."""

    class WAN21_CausalAR(comfy.model_base.WAN21):
        def __init__(self, model_config, model_type=comfy.model_base.ModelType.FLOW, device=None):
            super(comfy.model_base.WAN21, self).__init__(model_config, model_type, device=device,
                                                         unet_model=CausalWanModel)
            self.image_to_video = False

    class WAN21_CausalAR_T2V(comfy.supported_models.WAN21_T2V):
        def get_model(self, state_dict, prefix="", device=None):
            return WAN21_CausalAR(self, device=device)

    return WAN21_CausalAR_T2V


def load_as_core_causal_wan(path):
    """A MODEL (ModelPatcher, CPU, fp32) holding the Wan checkpoint at `path` as core's causal config loads it."""
    import comfy.model_detection
    import comfy.model_patcher
    import comfy.utils

    state_dict = comfy.utils.load_torch_file(str(path))
    model_config = core_causal_wan_config()(comfy.model_detection.detect_unet_config(state_dict, ""))
    model_config.set_inference_dtype(torch.float32, None)
    base_model = model_config.get_model(state_dict, "", device=torch.device("cpu"))
    base_model.load_model_weights(state_dict, "")
    return comfy.model_patcher.ModelPatcher(base_model, load_device=torch.device("cpu"),
                                            offload_device=torch.device("cpu"))


def stand_in_conditioning(seed=0, tokens=512):
    """CONDITIONING shaped like umT5-XXL's output for one prompt (there is no tiny umT5 to run)."""
    generator = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, tokens, 4096, generator=generator) * 0.1, {}]]


class MeanBrightnessRouter:
    """A REWARD_ROUTER for tests: a frame's score is its mean pixel value (0..1); records every call."""

    def __init__(self, aggregation="min", offset=0.0):
        self.aggregation = aggregation
        self.offset = offset
        self.calls = []  # (number of frames, prompt) per score() call

    def score(self, frames, prompt):
        self.calls.append((frames.shape[0], prompt))
        return frames.float().mean(dim=(1, 2, 3)) + self.offset


class ScriptedRouter:
    """A REWARD_ROUTER for tests whose k-th call gives every frame the score `scores[k]`; records every call."""

    def __init__(self, scores, aggregation="min"):
        self.scores = list(scores)
        self.aggregation = aggregation
        self.calls = []  # (number of frames, prompt) per score() call

    def score(self, frames, prompt):
        value = self.scores[len(self.calls)]
        self.calls.append((frames.shape[0], prompt))
        return torch.full((frames.shape[0],), float(value))
