"""The reference DiT and the causal runner against ComfyUI's own WanModel (needs COMFYUI_PATH)."""
import pytest
import torch

from samplers.models.causal_runner import CausalWanRunner
from samplers.models.wan import save_wan
from support.wan import tiny_inputs, tiny_wan, single_thread  # noqa: F401  (autouse fixture)

# ComfyUI derives heads = dim // 128, fixes freq_dim = 256 and assumes text_dim = 4096 when it detects a Wan file.
COMFY_SHAPES = dict(dim=128, ffn_dim=256, num_heads=1, num_layers=2, in_dim=16, out_dim=16, text_dim=4096,
                    freq_dim=256)


@pytest.fixture(scope="module")
def reference():
    return tiny_wan(seed=3, **COMFY_SHAPES)


@pytest.fixture(scope="module")
def comfy_wan(comfy_nodes, reference):
    """ComfyUI's WanModel built with its default ops and the reference weights."""
    import comfy.ops
    from comfy.ldm.wan.model import WanModel

    config = reference.config
    model = WanModel(model_type="t2v", patch_size=config.patch_size, in_dim=config.in_dim, dim=config.dim,
                     ffn_dim=config.ffn_dim, freq_dim=config.freq_dim, text_dim=config.text_dim,
                     out_dim=config.out_dim, num_heads=config.num_heads, num_layers=config.num_layers,
                     operations=comfy.ops.disable_weight_init, dtype=torch.float32)
    model.load_state_dict(reference.state_dict(), strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def loaded_file(comfy_nodes, reference, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("wan") / "tiny_wan_t2v.safetensors")
    save_wan(reference, path)
    return path


@torch.no_grad()
def test_comfyui_wanmodel_full_forward_equals_reference(reference, comfy_wan):
    x, context = tiny_inputs(reference, frames=6, height=4, width=6, batch=2)
    timestep = torch.tensor([800.0, 150.0])
    torch.testing.assert_close(comfy_wan(x, timestep, context), reference(x, timestep, context), rtol=0, atol=1e-5)


@torch.no_grad()
def test_comfyui_wanmodel_per_frame_timesteps_equal_reference(reference, comfy_wan):
    x, context = tiny_inputs(reference, frames=6, height=4, width=4)
    timestep = torch.tensor([[0.0, 0.0, 0.0, 625.0, 625.0, 625.0]])
    torch.testing.assert_close(comfy_wan(x, timestep, context), reference(x, timestep, context), rtol=0, atol=1e-5)


def _runner_predictions(model, x, context, **window):
    runner = CausalWanRunner(model, latent_height=4, latent_width=4, max_frames=9, frames_per_block=3, **window)
    runner.reset(context)
    predictions = []
    for block in range(3):
        current = x[:, :, 3 * block:3 * block + 3]
        predictions.append(runner.predict(current, 0.8333))
        runner.commit(current)
    return torch.cat(predictions, dim=2)


@pytest.mark.parametrize("window", [{}, dict(local_attn_frames=5, sink_frames=1)])
def test_runner_gives_same_predictions_on_comfyui_wanmodel(reference, comfy_wan, window):
    x, context = tiny_inputs(reference, frames=9)
    torch.testing.assert_close(_runner_predictions(comfy_wan, x, context, **window),
                               _runner_predictions(reference, x, context, **window), rtol=0, atol=1e-5)


@torch.no_grad()
def test_saved_reference_loads_as_wan21_t2v_in_load_diffusion_model(reference, loaded_file):
    import comfy.sd

    patcher = comfy.sd.load_diffusion_model(loaded_file)
    assert type(patcher.model.model_config).__name__ == "WAN21_T2V"
    x, context = tiny_inputs(reference, frames=3)
    timestep = torch.tensor([500.0])
    torch.testing.assert_close(patcher.model.diffusion_model(x, timestep, context), reference(x, timestep, context),
                               rtol=0, atol=1e-5)


def test_runner_on_bfloat16_comfyui_model_keeps_cache_in_bfloat16(reference, loaded_file):
    import comfy.sd

    patcher = comfy.sd.load_diffusion_model(loaded_file, model_options={"dtype": torch.bfloat16})
    model = patcher.model.diffusion_model
    x, context = tiny_inputs(reference, frames=9)
    runner = CausalWanRunner(model, latent_height=4, latent_width=4, max_frames=9, frames_per_block=3)
    assert runner.dtype == torch.bfloat16 and runner.cache.keys[0].dtype == torch.bfloat16
    predictions = _runner_predictions(model, x, context)
    expected = _runner_predictions(reference, x, context)
    assert predictions.dtype == torch.bfloat16
    assert (predictions.float() - expected).abs().max() < 0.1 * expected.abs().max()


def test_converted_self_forcing_checkpoint_loads_in_load_diffusion_model(comfy_nodes, reference, tmp_path):
    import comfy.sd
    from scripts.convert_self_forcing import convert

    source, destination = str(tmp_path / "self_forcing.pt"), str(tmp_path / "self_forcing.safetensors")
    torch.save({"generator_ema": {"model." + k: v for k, v in reference.state_dict().items()}}, source)
    convert(source, destination)
    patcher = comfy.sd.load_diffusion_model(destination)
    assert type(patcher.model.model_config).__name__ == "WAN21_T2V"
    loaded = patcher.model.diffusion_model.blocks[1].ffn[0].weight
    torch.testing.assert_close(loaded.float(), reference.blocks[1].ffn[0].weight.bfloat16().float())


def test_runner_computes_in_the_requested_dtype_on_a_manual_cast_model(reference, loaded_file):
    import comfy.sd

    # On the CPU ComfyUI stores bf16 weights but computes in float32 (manual_cast_dtype): the node passes that dtype.
    patcher = comfy.sd.load_diffusion_model(loaded_file, model_options={"dtype": torch.bfloat16})
    model = patcher.model.diffusion_model
    x, context = tiny_inputs(reference, frames=9)
    runner = CausalWanRunner(model, latent_height=4, latent_width=4, max_frames=9, frames_per_block=3,
                             dtype=patcher.model.manual_cast_dtype or patcher.model.get_dtype())
    runner.reset(context)
    prediction = runner.predict(x[:, :, :3], 0.8333)
    assert runner.cache.keys[0].dtype == prediction.dtype == torch.float32
    expected = _runner_predictions(reference, x, context)[:, :, :3]
    assert (prediction - expected).abs().max() < 0.05 * expected.abs().max()
