"""The reference Wan 2.1 DiT: names, config inference, loading, block-causal forward; the Self-Forcing converter."""
import pytest
import torch
from safetensors.torch import load_file, save_file

from samplers.models.wan import (WanConfig, WanFormatError, block_causal_mask, infer_config, load_wan,
                          load_wan_state_dict, pad_text, rope_axes, save_wan)
from support.wan import TINY, tiny_inputs, tiny_wan, single_thread  # noqa: F401  (autouse fixture)

ORIGINAL_NAMES = ["patch_embedding.weight", "text_embedding.0.weight", "text_embedding.2.weight",
                  "time_embedding.0.weight", "time_embedding.2.weight", "time_projection.1.weight",
                  "blocks.1.self_attn.q.weight", "blocks.1.self_attn.norm_k.weight", "blocks.1.cross_attn.o.bias",
                  "blocks.1.norm3.weight", "blocks.1.ffn.0.weight", "blocks.1.ffn.2.weight", "blocks.1.modulation",
                  "head.head.weight", "head.modulation"]


def test_parameter_names_are_wan_originals():
    names = set(tiny_wan().state_dict())
    assert set(ORIGINAL_NAMES) <= names


def test_rope_axes_split_the_head_as_wan_does():
    assert rope_axes(128) == (44, 42, 42)
    assert sum(rope_axes(32)) == 32


@torch.no_grad()
def test_block_causal_forward_of_first_blocks_ignores_later_frames():
    model = tiny_wan()
    x, context = tiny_inputs(model, frames=6)
    timestep = torch.tensor([[900.0] * 3 + [300.0] * 3])
    full = model(x, timestep, context, frames_per_block=3)
    altered = x.clone()
    altered[:, :, 3:] = torch.randn_like(altered[:, :, 3:])
    again = model(altered, timestep, context, frames_per_block=3)
    torch.testing.assert_close(again[:, :, :3], full[:, :, :3], rtol=0, atol=1e-5)
    assert not torch.allclose(again[:, :, 3:], full[:, :, 3:])


@torch.no_grad()
def test_full_attention_first_block_depends_on_later_frames():
    model = tiny_wan()
    x, context = tiny_inputs(model, frames=6)
    altered = x.clone()
    altered[:, :, 3:] += 1.0
    t = torch.tensor([500.0])
    assert not torch.allclose(model(x, t, context)[:, :, :3], model(altered, t, context)[:, :, :3])


@torch.no_grad()
def test_equal_per_frame_timesteps_equal_batch_timestep():
    model = tiny_wan()
    x, context = tiny_inputs(model, frames=3, batch=2)
    per_batch = model(x, torch.tensor([700.0, 200.0]), context)
    per_frame = model(x, torch.tensor([[700.0] * 3, [200.0] * 3]), context)
    torch.testing.assert_close(per_frame, per_batch, rtol=0, atol=1e-6)


@torch.no_grad()
def test_per_frame_timesteps_change_only_the_output():
    model = tiny_wan()
    x, context = tiny_inputs(model, frames=3)
    a = model(x, torch.tensor([[700.0, 700.0, 700.0]]), context)
    b = model(x, torch.tensor([[700.0, 700.0, 100.0]]), context)
    assert not torch.allclose(a, b)


def test_block_causal_mask_follows_block_rule():
    mask = block_causal_mask(num_frames=5, tokens_per_frame=1, frames_per_block=2)
    expected = torch.tensor([[1, 1, 0, 0, 0],
                             [1, 1, 0, 0, 0],
                             [1, 1, 1, 1, 0],
                             [1, 1, 1, 1, 0],
                             [1, 1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(mask, expected)


def test_block_causal_mask_with_frame_offset_uses_absolute_blocks():
    # Frames 1..4 with blocks of 2: frame 1 closes block 0, frames 2-3 form block 1, frame 4 opens block 2.
    mask = block_causal_mask(num_frames=4, tokens_per_frame=1, frames_per_block=2, frame_offset=1)
    assert mask[0].tolist() == [True, False, False, False]
    assert mask[1].tolist() == [True, True, True, False]
    assert mask[3].tolist() == [True, True, True, True]


def test_window_mask_keeps_sink_and_recent_frames():
    # Window of 5 frames with 1 sink frame, blocks of 2: block [6, 8) sees frame 0 and frames 4..7.
    mask = block_causal_mask(num_frames=8, tokens_per_frame=1, frames_per_block=2, local_attn_frames=5,
                             sink_frames=1)
    assert mask[6].tolist() == [True, False, False, False, True, True, True, True]
    assert mask[2].tolist() == [True, True, True, True, False, False, False, False]


def test_window_smaller_than_block_plus_sink_raises():
    with pytest.raises(ValueError, match="local_attn_frames"):
        block_causal_mask(num_frames=6, tokens_per_frame=1, frames_per_block=3, local_attn_frames=3, sink_frames=1)


def test_bad_config_raises_named_error():
    with pytest.raises(WanFormatError, match="num_heads"):
        WanConfig(dim=64, ffn_dim=128, num_heads=3, num_layers=1)
    with pytest.raises(WanFormatError, match="num_layers"):
        WanConfig(dim=64, ffn_dim=128, num_heads=2, num_layers=0)


def test_infer_config_recovers_shapes():
    model = tiny_wan()
    assert infer_config(model.state_dict(), head_dim=32) == model.config


def test_infer_config_with_head_dim_not_dividing_dim_raises():
    with pytest.raises(WanFormatError, match="head_dim"):
        infer_config(tiny_wan().state_dict(), head_dim=128)


@pytest.mark.parametrize("prefix", ["", "model.", "model.diffusion_model."])
@torch.no_grad()
def test_each_key_prefix_loads(tmp_path, prefix):
    model = tiny_wan()
    path = str(tmp_path / "wan.safetensors")
    save_file({prefix + k: v.contiguous() for k, v in model.state_dict().items()}, path)
    loaded = load_wan(path, head_dim=32)
    x, context = tiny_inputs(model)
    assert torch.equal(loaded(x, torch.tensor([400.0]), context), model(x, torch.tensor([400.0]), context))


def test_diffusers_layout_raises_error_naming_the_layout(tmp_path):
    path = str(tmp_path / "diffusers.safetensors")
    save_file({"condition_embedder.time_embedder.linear_1.weight": torch.zeros(2, 2),
               "blocks.0.attn1.to_q.weight": torch.zeros(2, 2), "proj_out.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(WanFormatError, match="diffusers"):
        load_wan_state_dict(path)


def test_unknown_layout_raises_error_listing_missing_keys(tmp_path):
    path = str(tmp_path / "other.safetensors")
    save_file({"encoder.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(WanFormatError, match="patch_embedding.weight"):
        load_wan_state_dict(path)


def test_save_wan_in_bfloat16_round_trips(tmp_path):
    model = tiny_wan()
    path = str(tmp_path / "wan.safetensors")
    save_wan(model, path, dtype=torch.bfloat16)
    state_dict = load_file(path)
    assert all(t.dtype == torch.bfloat16 for t in state_dict.values())
    torch.testing.assert_close(state_dict["head.head.weight"], model.state_dict()["head.head.weight"].bfloat16())


# ------------------------------------------------------------------------------------------------- converter

def _fake_self_forcing_checkpoint(path, model, wrapper=""):
    generator = {f"model.{wrapper}{k}": v.clone() for k, v in model.state_dict().items()}
    torch.save({"generator": generator, "critic": {"w": torch.zeros(1)},
                "generator_ema": {k: v + 1.0 for k, v in generator.items()}}, path)


@pytest.mark.parametrize("wrapper", ["", "_fsdp_wrapped_module."])
def test_converter_writes_generator_ema_in_bfloat16_with_original_names(tmp_path, wrapper):
    from scripts.convert_self_forcing import convert

    model = tiny_wan()
    source, destination = str(tmp_path / "sf.pt"), str(tmp_path / "sf.safetensors")
    _fake_self_forcing_checkpoint(source, model, wrapper)
    convert(source, destination, head_dim=32)
    converted = load_file(destination)
    assert set(converted) == set(model.state_dict())
    assert all(t.dtype == torch.bfloat16 for t in converted.values())
    torch.testing.assert_close(converted["blocks.1.ffn.0.weight"], (model.blocks[1].ffn[0].weight + 1.0).bfloat16())
    assert load_wan(destination, head_dim=32).config == model.config


def test_converter_missing_key_names_what_was_found(tmp_path):
    from scripts.convert_self_forcing import convert

    source = str(tmp_path / "sf.pt")
    torch.save({"generator": {"model.x": torch.zeros(1)}}, source)
    with pytest.raises(WanFormatError, match="'generator'"):
        convert(source, str(tmp_path / "out.safetensors"))


def test_converter_command_line(tmp_path, capsys):
    from scripts.convert_self_forcing import main

    source, destination = str(tmp_path / "sf.pt"), str(tmp_path / "sf.safetensors")
    _fake_self_forcing_checkpoint(source, tiny_wan(**{**TINY, "dim": 128, "num_heads": 1}))
    main([source, destination, "--dtype", "fp16"])
    assert "dim 128" in capsys.readouterr().out
    assert load_file(destination)["head.modulation"].dtype == torch.float16


def test_pad_text_appends_zero_tokens_up_to_512():
    context = torch.randn(2, 7, 32)
    padded = pad_text(context)
    assert padded.shape == (2, 512, 32)
    assert torch.equal(padded[:, :7], context) and not padded[:, 7:].any()
