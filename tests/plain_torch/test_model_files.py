"""Loader errors as a new user meets them: a damaged or foreign file gives an error that names the file, says what
was expected there and what to do (samplers/models/files.py), for the ImageReward router and the Wan loader."""
import os
import pickle
import shutil

import pytest
import torch
from safetensors.torch import save_file

from samplers.models.files import ModelFileError
from samplers.models.reward_router import load_image_reward_router
from samplers.models.wan import load_wan_state_dict, save_wan
from support.reward import TINY, write_image_reward_folder, write_support_files
from support.wan import tiny_wan


@pytest.fixture(scope="module")
def reward_folder(tmp_path_factory):
    """A complete tiny ImageReward folder; tests copy it and damage one file of the copy."""
    folder = str(tmp_path_factory.mktemp("image_reward"))
    write_image_reward_folder(folder, TINY, seed=0)
    write_image_reward_folder(folder, TINY, seed=0, weights_name="ImageReward.safetensors")
    return folder


@pytest.fixture
def copy_of(reward_folder, tmp_path):
    folder = str(tmp_path / "image_reward")
    shutil.copytree(reward_folder, folder)
    return folder


def truncate(path):
    with open(path, "rb") as handle:
        data = handle.read()
    with open(path, "wb") as handle:
        handle.write(data[: len(data) // 2])


def load_router(folder, weights="ImageReward.pt"):
    return load_image_reward_router(os.path.join(folder, weights), [folder])


def check_message(error, path, *expected):
    message = str(error.value)
    assert path in message, message
    for text in expected:
        assert text in message, message


def test_the_undamaged_folder_loads(reward_folder):
    for weights in ("ImageReward.pt", "ImageReward.safetensors"):
        assert load_router(reward_folder, weights).aggregation == "min"


def test_a_corrupt_med_config_names_the_file_the_position_and_the_download(copy_of):
    path = os.path.join(copy_of, "med_config.json")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("{'hidden_size': 768,}")
    with pytest.raises(ModelFileError) as error:
        load_router(copy_of)
    check_message(error, path, "not valid JSON (line 1, column 2", "BLIP's BERT configuration",
                  "Download med_config.json again from the THUDM/ImageReward repository")


def test_a_med_config_that_is_not_an_object_is_named(copy_of):
    path = os.path.join(copy_of, "med_config.json")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("[1, 2]")
    with pytest.raises(ModelFileError) as error:
        load_router(copy_of)
    check_message(error, path, "got a JSON list", "Download med_config.json again")


def test_a_corrupt_tokenizer_config_and_a_binary_vocab_are_named(copy_of):
    path = os.path.join(copy_of, "tokenizer_config.json")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("{do_lower_case: true}")
    with pytest.raises(ModelFileError) as error:
        load_router(copy_of)
    check_message(error, path, "not valid JSON", "bert-base-uncased")
    write_support_files(copy_of, TINY, files=("tokenizer_config.json",))
    vocab = os.path.join(copy_of, "vocab.txt")
    shutil.copy(os.path.join(copy_of, "ImageReward.pt"), vocab)
    with pytest.raises(ModelFileError) as error:
        load_router(copy_of)
    check_message(error, vocab, "not a UTF-8 text file", "WordPiece vocabulary", "bert-base-uncased")


@pytest.mark.parametrize("damage", ["truncated", "garbled header"])
def test_a_damaged_safetensors_file_is_named_with_what_to_do(copy_of, damage):
    path = os.path.join(copy_of, "ImageReward.safetensors")
    if damage == "truncated":
        truncate(path)
    else:
        with open(path, "r+b") as handle:
            handle.write(b"\xff" * 8)
    with pytest.raises(ModelFileError) as error:
        load_router(copy_of, "ImageReward.safetensors")
    check_message(error, path, "not a readable safetensors file", "damaged or incomplete", "ImageReward weights",
                  "Download ImageReward.pt again", "scripts/convert_image_reward.py")


def test_a_truncated_pt_file_is_named_with_what_to_do(copy_of):
    path = os.path.join(copy_of, "ImageReward.pt")
    truncate(path)
    with pytest.raises(ModelFileError) as error:
        load_router(copy_of)
    check_message(error, path, "a truncated or damaged PyTorch file", "ImageReward weights",
                  "Download ImageReward.pt again from the THUDM/ImageReward repository")


@pytest.mark.parametrize("contents", [{"blip.visual_encoder.pos_embed": [1, 2, 3]}, {"weights": 1.5}])
def test_a_raw_pickle_is_not_a_weights_file(copy_of, contents):
    path = os.path.join(copy_of, "ImageReward.pt")
    with open(path, "wb") as handle:
        pickle.dump(contents, handle)
    with pytest.raises(ModelFileError) as error:
        load_router(copy_of)
    check_message(error, path, "not a PyTorch weights file", "saved with torch.save", "could run code",
                  "Download ImageReward.pt again")


def test_a_pickle_of_something_else_than_tensors_is_named(copy_of):
    path = os.path.join(copy_of, "ImageReward.pt")
    torch.save([torch.zeros(2)], path)
    with pytest.raises(ModelFileError) as error:
        load_router(copy_of)
    check_message(error, path, "expected ImageReward weights (a flat dict of tensors", "got list")
    torch.save({"scale": 2.0, "weight": torch.zeros(2)}, path)
    with pytest.raises(ModelFileError) as error:
        load_router(copy_of)
    check_message(error, path, "got a dict with Tensor, float")


def test_weights_of_another_model_are_named(copy_of):
    path = os.path.join(copy_of, "ImageReward.pt")
    torch.save({"encoder.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(ValueError) as error:
        load_router(copy_of)
    check_message(error, path, "not an ImageReward checkpoint", "THUDM/ImageReward")


def test_a_damaged_wan_safetensors_file_is_named_with_what_to_do(tmp_path):
    path = str(tmp_path / "wan.safetensors")
    save_wan(tiny_wan(), path)
    assert "patch_embedding.weight" in load_wan_state_dict(path)
    truncate(path)
    with pytest.raises(ModelFileError) as error:
        load_wan_state_dict(path)
    check_message(error, path, "not a readable safetensors file", "Wan 2.1 DiT weights", "Download it again")
    save_file({"x": torch.zeros(1)}, path)
    with open(path, "r+b") as handle:
        handle.write(b"\xff" * 8)
    with pytest.raises(ModelFileError, match="header too large"):
        load_wan_state_dict(path)


def test_the_self_forcing_converter_names_a_raw_pickle(tmp_path):
    import importlib.util

    from support import REPO

    spec = importlib.util.spec_from_file_location("convert_self_forcing",
                                                  os.path.join(REPO, "scripts", "convert_self_forcing.py"))
    converter = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(converter)
    path = str(tmp_path / "self_forcing_dmd.pt")
    with open(path, "wb") as handle:
        pickle.dump({"generator_ema": {"a": 1}}, handle)
    with pytest.raises(ModelFileError) as error:
        converter.convert(path, str(tmp_path / "out.safetensors"))
    check_message(error, path, "not a PyTorch weights file", "Self-Forcing checkpoint")


# ------------------------------------------------------------------------------- Self-Forcing checkpoints (.pt)

def self_forcing_layout(model, shift=1.0):
    """Self-Forcing's .pt layout: generator, generator_ema (here the generator + shift) and critic, keys "model."."""
    generator = {f"model.{name}": value.clone() for name, value in model.state_dict().items()}
    return {"generator": generator, "critic": {"model.w": torch.zeros(1)},
            "generator_ema": {name: value + shift for name, value in generator.items()}}


def test_self_forcing_reader_picks_generator_ema_then_generator_then_a_flat_state_dict(tmp_path):
    from samplers.models.self_forcing_files import read_self_forcing_checkpoint

    model, path = tiny_wan(), str(tmp_path / "self_forcing_dmd.pt")
    layout = self_forcing_layout(model)
    weight = model.state_dict()["head.head.weight"]
    for checkpoint, key, expected_key, shift in ((layout, "auto", "generator_ema", 1.0),
                                                 (layout, "generator", "generator", 0.0),
                                                 ({"generator": layout["generator"]}, "auto", "generator", 0.0),
                                                 (layout["generator"], "auto", None, 0.0)):
        torch.save(checkpoint, path)
        state_dict, chosen, config = read_self_forcing_checkpoint(path, key, head_dim=32)
        assert chosen == expected_key and set(state_dict) == set(model.state_dict()) and config == model.config
        assert torch.equal(state_dict["head.head.weight"], weight + shift)


def test_self_forcing_reader_names_the_file_the_missing_key_and_what_it_found(tmp_path):
    from samplers.models.self_forcing_files import read_self_forcing_checkpoint

    path = str(tmp_path / "self_forcing_dmd.pt")
    torch.save({"critic": {"model.w": torch.zeros(1)}, "step": torch.tensor(3)}, path)
    with pytest.raises(ModelFileError) as error:
        read_self_forcing_checkpoint(path)
    check_message(error, path, "['critic']", "generator_ema or generator", "gdhe17/Self-Forcing")
    with pytest.raises(ModelFileError) as error:
        read_self_forcing_checkpoint(path, "generator")
    check_message(error, path, "no 'generator' entry", "['critic']")


def test_self_forcing_reader_refuses_a_generator_of_another_shape_naming_the_parameter(tmp_path):
    from samplers.models.self_forcing_files import read_self_forcing_checkpoint
    from samplers.models.wan import WanFormatError

    path = str(tmp_path / "self_forcing_dmd.pt")
    layout = self_forcing_layout(tiny_wan())
    layout["generator_ema"]["model.blocks.0.ffn.2.weight"] = torch.zeros(3, 3)
    torch.save(layout, path)
    with pytest.raises(WanFormatError) as error:
        read_self_forcing_checkpoint(path, head_dim=32)
    check_message(error, path, "['generator_ema']", "blocks.0.ffn.2.weight has shape (3, 3)")
