"""Tiny Wan DiTs and helpers shared by the Wan / causal / SDVG tests (no ComfyUI needed)."""
import pytest
import torch

from samplers.models.wan import WanConfig, WanDiT

TINY = dict(dim=64, ffn_dim=128, num_heads=2, num_layers=2, in_dim=4, out_dim=4, text_dim=32, freq_dim=32)
# ComfyUI derives heads = dim // 128, so the ComfyUI comparisons use dim 128 (one head of 128).
COMFY_TINY = dict(dim=128, ffn_dim=256, num_heads=1, num_layers=2, in_dim=16, out_dim=16, text_dim=64, freq_dim=32)


def randomize_(model, seed=0, scale=0.1):
    """Give every parameter (norm scales and biases included) random values so that no term is trivially neutral."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in sorted(model.named_parameters()):
            noise = torch.randn(parameter.shape, generator=generator) * scale
            if name.endswith("norm_q.weight") or name.endswith("norm_k.weight") or name.endswith("norm3.weight"):
                parameter.copy_(1.0 + noise)
            else:
                parameter.copy_(noise)
    return model


def tiny_wan(seed=0, **overrides):
    """A tiny random WanDiT in float32 (dim 64, 2 heads, 2 layers by default)."""
    torch.manual_seed(seed)
    return randomize_(WanDiT(WanConfig(**{**TINY, **overrides})), seed).eval()


def tiny_inputs(model, frames=6, height=4, width=4, batch=1, text_tokens=5, seed=1):
    """Latents [B, C, T, H, W] and a text context [B, L, text_dim] for a tiny model."""
    generator = torch.Generator().manual_seed(seed)
    config = model.config
    x = torch.randn(batch, config.in_dim, frames, height, width, generator=generator)
    context = torch.randn(batch, text_tokens, config.text_dim, generator=generator)
    return x, context


@pytest.fixture(autouse=True)
def single_thread():
    """Tiny models run ~20x faster on one thread than on two busy shared cores (thread hand-off dominates)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
