"""ComfyUI in-process on the CPU, this pack loaded by ComfyUI's own loader, and the tiny random models of the ComfyUI
tests: one place for what tests/ and scripts/bench_dts_comfyui.py both build, so the benchmark runs the models the
tests run.

ComfyUI is imported inside the functions: put the checkout on sys.path and call import_comfyui_on_cpu() first.
The Wan checkpoints are built from ComfyUI's own WanModel (on the meta device when only shapes are needed), filled
with seeded random weights and saved as safetensors with the original Wan key names, so the stock UNETLoader detects
and loads them as it loads real files.
"""
import asyncio
import math
import os
import sys

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The SDVG tests' target (and the end-to-end suite's): the second, wider tiny Wan 2.1 T2V of the suite.
SDVG_TARGET_WAN = dict(dim=256, ffn_dim=512, seed=2)

# SD 1.5's UNet layout (comfy/model_detection.py's SD15 entry) shrunk to 2 levels of 32 and 64 channels, one
# ResBlock and one transformer block per level; context width 768 and 4 latent channels as SD 1.5.
TINY_SD15_UNET = {
    "use_checkpoint": False, "image_size": 32, "in_channels": 4, "out_channels": 4, "model_channels": 32,
    "num_res_blocks": [1, 1], "channel_mult": [1, 2], "transformer_depth": [1, 1], "transformer_depth_middle": 1,
    "transformer_depth_output": [1, 1, 1, 1], "use_spatial_transformer": True, "legacy": False,
    "adm_in_channels": None, "use_linear_in_transformer": False, "context_dim": 768, "use_temporal_attention": False,
    "use_temporal_resblock": False,
}


def import_comfyui_on_cpu(comfyui_path):
    """Import the ComfyUI checkout at `comfyui_path` (already first on sys.path) in-process, forced to the CPU;
    return its `nodes` module."""
    import comfy.options  # noqa: F401  (argument parsing stays off: ComfyUI is used as a library)
    from comfy.cli_args import args

    args.cpu = True  # must precede the first import of comfy.model_management
    import comfy.model_management  # noqa: F401
    import nodes as comfy_nodes

    assert os.path.abspath(comfy_nodes.__file__).startswith(os.path.abspath(comfyui_path)), comfy_nodes.__file__
    return comfy_nodes


def load_pack(comfy_nodes, repo=REPO):
    """This pack at `repo`, loaded through ComfyUI's own custom-node loader: the module object it created."""
    ok = asyncio.run(comfy_nodes.load_custom_node(repo))
    assert ok, f"ComfyUI's loader failed to import the pack at {repo} (see the log above)"
    return sys.modules[repo.replace(".", "_x_")]


def random_state_dict(module, seed, dtype=torch.float32, weight_std=None):
    """Seeded random tensors shaped like `module`'s state dict (the module may live on the meta device).

    Norm scales (1-d tensors named '*norm*.weight' / '*gamma') are ones, biases zero, other weights normal with
    standard deviation `weight_std` or 1/sqrt(fan_in) (keeps activations of order 1 through deep random nets).
    """
    generator = torch.Generator().manual_seed(seed)
    state_dict = {}
    for name, tensor in module.state_dict().items():
        shape = tuple(tensor.shape)
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "gamma" or (len(shape) == 1 and "norm" in name and leaf == "weight"):
            value = torch.ones(shape)
        elif leaf == "bias":
            value = torch.zeros(shape)
        else:
            fan_in = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
            std = weight_std if weight_std is not None else 1.0 / math.sqrt(fan_in)
            value = torch.randn(shape, generator=generator) * std
        state_dict[name] = value.to(dtype).contiguous()
    return state_dict


def write_tiny_wan(path, *, dim, ffn_dim, num_layers=2, seed=0, model_type="t2v", in_dim=16, out_dim=16,
                   metadata=None):
    """Save a tiny Wan 2.1 DiT built with ComfyUI's WanModel (original key names) to `path` (safetensors, fp32).

    dim must be a multiple of 128 (ComfyUI derives heads = dim // 128); text width 4096 (what ComfyUI assumes).
    model_type "i2v" adds the image-embedding keys that make ComfyUI detect a Wan 2.1 I2V model. metadata: the
    file's safetensors metadata (e.g. tests/support/sdvg.py's CAUSAL_AR_METADATA); the weights depend on the seed
    only.
    """
    import comfy.ldm.wan.model
    import comfy.ops
    from safetensors.torch import save_file

    model = comfy.ldm.wan.model.WanModel(
        model_type=model_type, patch_size=(1, 2, 2), in_dim=in_dim, dim=dim, ffn_dim=ffn_dim, freq_dim=256,
        text_dim=4096, out_dim=out_dim, num_heads=dim // 128, num_layers=num_layers, device="meta",
        operations=comfy.ops.disable_weight_init)
    save_file(random_state_dict(model, seed, torch.float32, weight_std=0.02), str(path), metadata=metadata)


def write_dts_tiny_wan(path):
    """Save the DTS tests' tiny Wan 2.1 T2V DiT (dim 128, 2 layers) to `path` (safetensors, original key names).

    Every tensor is normal with standard deviation 0.05 (biases too), except norm vectors, which are ones: larger
    than write_tiny_wan's weights, so the model's output depends clearly on the prompt.
    """
    import comfy.ldm.wan.model
    import comfy.ops
    from safetensors.torch import save_file

    model = comfy.ldm.wan.model.WanModel(model_type="t2v", dim=128, ffn_dim=256, num_heads=1, num_layers=2,
                                         in_dim=16, out_dim=16, text_dim=4096, freq_dim=256, device="meta",
                                         operations=comfy.ops.disable_weight_init)
    generator = torch.Generator().manual_seed(0)
    state_dict = {}
    for name, tensor in model.state_dict().items():
        if "norm" in name and tensor.ndim == 1:
            state_dict[name] = torch.ones(tensor.shape)
        else:
            state_dict[name] = torch.randn(tensor.shape, generator=generator) * 0.05
    save_file(state_dict, str(path))


def tiny_sd15_model(seed=0):
    """A MODEL (ModelPatcher, CPU, fp32) of ComfyUI's SD 1.5 config (eps prediction, SD 1.5's discrete noise
    schedule and latent format) around a 1.6M-parameter UNet of TINY_SD15_UNET's layout with random weights
    (random_state_dict's). Built directly, not loaded from a file: ComfyUI detects a UNet as SD 1.5 only at the
    full width (model_channels 320, 860M parameters)."""
    import comfy.model_patcher
    import comfy.supported_models

    model_config = comfy.supported_models.SD15(dict(TINY_SD15_UNET))
    model_config.set_inference_dtype(torch.float32, None)
    cpu = torch.device("cpu")
    base_model = model_config.get_model({}, "", device=cpu)
    base_model.diffusion_model.load_state_dict(random_state_dict(base_model.diffusion_model, seed))
    return comfy.model_patcher.ModelPatcher(base_model, load_device=cpu, offload_device=cpu)
