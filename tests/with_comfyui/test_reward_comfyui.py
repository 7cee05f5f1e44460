"""The ImageReward nodes inside a real ComfyUI: the `image_reward` model folder, the loader node, the score node.

In-process tests import ComfyUI on the CPU; the graph test starts a ComfyUI server of its own with a base directory
whose models/image_reward/ holds a tiny random ImageReward (as a user installs the real one) and runs
Load ImageReward Router -> ImageReward Score -> PreviewAny on an EmptyImage batch.
"""
import importlib
import importlib.util
import os
import shutil

import pytest
import torch

from support import e2e as e2e_support
# Imported before ComfyUI: once ComfyUI's nodes.py has run, `samplers` could mean comfy/samplers.py.
from support.reward import PROMPTS, TINY, random_frames, write_image_reward_folder, write_support_files
from samplers.methods.sdvg import aggregate
from samplers.models.reward_router import load_image_reward_router
from support import REPO


PACK_FOLDER = "comfyui-speculative-video"


@pytest.fixture(scope="module")
def reward_nodes(comfy_pack):
    return importlib.import_module(f"{comfy_pack.__name__}.nodes.reward")


@pytest.fixture(scope="module")
def tiny_models(comfy_nodes, tmp_path_factory):
    """A folder registered as the first `image_reward` path, holding a tiny random ImageReward.pt and its files.

    First, so that the checkout's own models/image_reward/ (which may hold the real ImageReward.pt) cannot shadow
    it: ComfyUI resolves a model name in the order of the folder list."""
    import folder_paths

    folder = str(tmp_path_factory.mktemp("image_reward_models"))
    weights, model = write_image_reward_folder(folder, TINY, seed=3)
    folder_paths.add_model_folder_path("image_reward", folder, is_default=True)
    folder_paths.filename_list_cache.pop("image_reward", None)
    return folder, weights, model


@pytest.fixture
def isolated_folder_entry(tmp_path_factory, monkeypatch):
    """Restore ComfyUI's `image_reward` folder entry after a test that rebuilds it; during the test ComfyUI's
    models directory is an empty one, so that files in the checkout's models/image_reward/ cannot be found."""
    import folder_paths

    monkeypatch.setattr(folder_paths, "models_dir", str(tmp_path_factory.mktemp("empty_models")))
    saved = folder_paths.folder_names_and_paths.get("image_reward")
    saved = (list(saved[0]), set(saved[1])) if saved else None
    yield folder_paths
    if saved is None:
        folder_paths.folder_names_and_paths.pop("image_reward", None)
    else:
        folder_paths.folder_names_and_paths["image_reward"] = saved
    folder_paths.filename_list_cache.pop("image_reward", None)


def test_nodes_are_registered_with_display_names_and_the_router_socket(comfy_pack):
    mappings, names = comfy_pack.NODE_CLASS_MAPPINGS, comfy_pack.NODE_DISPLAY_NAME_MAPPINGS
    assert names["LoadImageRewardRouter"] == "Load ImageReward Router"
    assert names["ImageRewardScore"] == "ImageReward Score"
    assert tuple(mappings["LoadImageRewardRouter"].RETURN_TYPES) == ("REWARD_ROUTER",)
    assert mappings["ImageRewardScore"].INPUT_TYPES()["required"]["router"][0] == "REWARD_ROUTER"


@pytest.mark.parametrize("node_id", ["LoadImageRewardRouter", "ImageRewardScore"])
def test_every_input_has_a_tooltip_and_numbers_have_bounds(comfy_pack, node_id):
    for name, spec in comfy_pack.NODE_CLASS_MAPPINGS[node_id].INPUT_TYPES()["required"].items():
        assert spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
        if spec[0] in ("INT", "FLOAT"):
            assert "min" in spec[1] and "max" in spec[1], f"{node_id}.{name} has no bounds"


def test_loading_the_pack_registers_models_image_reward_for_weight_files(comfy_pack):
    import folder_paths

    paths, extensions = folder_paths.folder_names_and_paths["image_reward"]
    assert os.path.join(folder_paths.models_dir, "image_reward") in paths
    assert {".pt", ".safetensors"} <= set(extensions) and ".json" not in extensions


def test_extra_model_paths_yaml_folder_is_kept_first_and_lists_only_weights(reward_nodes, isolated_folder_entry,
                                                                          tmp_path):
    """ComfyUI reads extra_model_paths.yaml before it loads custom nodes: the yaml's folder must survive the
    pack's registration, ahead of models/image_reward, and the model list must not show the support files."""
    # By path: once ComfyUI is imported, `utils` on sys.path is comfy/utils.py, not ComfyUI's utils package.
    spec = importlib.util.spec_from_file_location(
        "comfyui_extra_config", os.path.join(os.environ["COMFYUI_PATH"], "utils", "extra_config.py"))
    extra_config = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(extra_config)
    folder_paths = isolated_folder_entry
    shared = tmp_path / "shared_models" / "image_reward"
    write_image_reward_folder(str(shared), TINY, seed=4)
    config = tmp_path / "extra_model_paths.yaml"
    config.write_text(f"other_ui:\n    base_path: {tmp_path / 'shared_models'}\n    image_reward: image_reward\n")
    folder_paths.folder_names_and_paths.pop("image_reward", None)
    extra_config.load_extra_path_config(str(config))
    paths = reward_nodes.register_image_reward_folder()
    assert paths[0] == str(shared)
    assert os.path.join(folder_paths.models_dir, "image_reward") in paths
    folder_paths.filename_list_cache.pop("image_reward", None)
    assert folder_paths.get_filename_list("image_reward") == ["ImageReward.pt"]


def test_loader_node_lists_and_loads_weights_from_an_image_reward_folder(comfy_pack, tiny_models):
    loader = comfy_pack.NODE_CLASS_MAPPINGS["LoadImageRewardRouter"]
    kind, spec = loader.INPUT_TYPES()["required"]["model_name"]
    assert kind == "COMBO" and "ImageReward.pt" in spec["options"]
    (router,) = loader().load("ImageReward.pt", "quantile", 0.25, "default", "auto", 16)
    import comfy.model_patcher

    assert isinstance(router.patcher, comfy.model_patcher.ModelPatcher)
    assert router.aggregation == "quantile:0.25"
    assert router.model.dtype == torch.float32  # auto on the CPU


def test_comfyui_layers_and_model_management_give_the_plain_torch_scores(comfy_pack, tiny_models):
    """The node builds the network from ComfyUI's layer classes and scores through load_models_gpu; the numbers
    are those of the plain torch router."""
    import comfy.model_management

    folder, weights, _ = tiny_models
    (router,) = comfy_pack.NODE_CLASS_MAPPINGS["LoadImageRewardRouter"]().load(
        "ImageReward.pt", "min", 0.1, "cpu", "fp32", 16)
    frames = random_frames(3, 40, 72, seed=1)
    first = router.score(frames, PROMPTS[0])
    comfy.model_management.unload_all_models()
    again = router.score(frames, PROMPTS[0])
    plain = load_image_reward_router(weights, [folder]).score(frames, PROMPTS[0])
    torch.testing.assert_close(first, plain, atol=1e-6, rtol=0)
    torch.testing.assert_close(again, plain, atol=1e-6, rtol=0)
    assert any(loaded.model is router.patcher for loaded in comfy.model_management.current_loaded_models)


def test_score_node_gives_per_frame_scores_text_and_the_routers_aggregate(comfy_pack, tiny_models):
    (router,) = comfy_pack.NODE_CLASS_MAPPINGS["LoadImageRewardRouter"]().load(
        "ImageReward.pt", "mean", 0.1, "default", "fp32", 2)
    frames = random_frames(5, 40, 72, seed=2)
    scores, text, value = comfy_pack.NODE_CLASS_MAPPINGS["ImageRewardScore"]().score(router, frames, PROMPTS[1])
    assert tuple(comfy_pack.NODE_CLASS_MAPPINGS["ImageRewardScore"].OUTPUT_IS_LIST) == (True, False, False)
    assert len(scores) == 5 and all(isinstance(score, float) for score in scores)
    torch.testing.assert_close(torch.tensor(scores), router.score(frames, PROMPTS[1]), atol=1e-6, rtol=0)
    assert value == pytest.approx(aggregate(scores, "mean"))
    assert text.splitlines()[0].startswith(f"mean = {value:.4f}")
    assert text.splitlines()[1:] == [f"frame {index}: {score:.4f}" for index, score in enumerate(scores)]


def test_loader_node_names_a_missing_support_file_and_its_folder(comfy_pack, tiny_models, tmp_path,
                                                                  isolated_folder_entry):
    folder_paths = isolated_folder_entry
    lonely = tmp_path / "lonely"
    write_support_files(str(lonely), TINY, files=("vocab.txt", "tokenizer_config.json"))
    shutil.copy(tiny_models[1], lonely / "Lonely.pt")
    folder_paths.folder_names_and_paths["image_reward"] = ([str(lonely)], {".pt", ".safetensors"})
    folder_paths.filename_list_cache.pop("image_reward", None)
    # FileNotFoundError: ComfyUI's loader imports the pack's modules under names of its own.
    with pytest.raises(FileNotFoundError) as error:
        comfy_pack.NODE_CLASS_MAPPINGS["LoadImageRewardRouter"]().load("Lonely.pt", "min", 0.1, "cpu", "fp32", 16)
    assert type(error.value).__name__ == "ImageRewardFilesMissing"
    assert error.value.missing == ["med_config.json"]
    assert str(lonely) in str(error.value)


def test_loader_node_names_a_corrupt_support_file_and_says_what_to_do(comfy_pack, tiny_models, tmp_path,
                                                                      isolated_folder_entry):
    folder_paths = isolated_folder_entry
    damaged = tmp_path / "damaged"
    write_support_files(str(damaged), TINY)
    (damaged / "med_config.json").write_text("{'hidden_size': 768,}")
    shutil.copy(tiny_models[1], damaged / "Damaged.pt")
    folder_paths.folder_names_and_paths["image_reward"] = ([str(damaged)], {".pt", ".safetensors"})
    folder_paths.filename_list_cache.pop("image_reward", None)
    with pytest.raises(ValueError) as error:
        comfy_pack.NODE_CLASS_MAPPINGS["LoadImageRewardRouter"]().load("Damaged.pt", "min", 0.1, "cpu", "fp32", 16)
    assert type(error.value).__name__ == "ModelFileError"
    message = str(error.value)
    assert str(damaged / "med_config.json") in message and "not valid JSON" in message
    assert "Download med_config.json again" in message


def test_score_node_rejects_something_that_is_not_a_router(comfy_pack):
    with pytest.raises(ValueError, match="router: expected a REWARD_ROUTER"):
        comfy_pack.NODE_CLASS_MAPPINGS["ImageRewardScore"]().score(object(), torch.rand(1, 8, 8, 3), "x")


@pytest.mark.slow
def test_score_node_runs_in_a_comfyui_server_graph_with_weights_in_models_image_reward(comfy_nodes,
                                                                                        tmp_path_factory):
    base = tmp_path_factory.mktemp("reward-comfyui")
    write_image_reward_folder(os.path.join(base, "models", "image_reward"), TINY, seed=5)
    e2e_support.link_into(os.path.join(base, "custom_nodes"), REPO, PACK_FOLDER)
    prompt = {
        "1": {"class_type": "LoadImageRewardRouter",
              "inputs": {"model_name": "ImageReward.pt", "aggregation": "min", "quantile": 0.1, "device": "default",
                         "dtype": "auto", "frames_per_batch": 16}},
        "2": {"class_type": "EmptyImage", "inputs": {"width": 96, "height": 64, "batch_size": 3, "color": 0x336699}},
        "3": {"class_type": "ImageRewardScore", "inputs": {"router": ["1", 0], "images": ["2", 0],
                                                           "prompt": PROMPTS[0]}},
        "4": {"class_type": "PreviewAny", "inputs": {"source": ["3", 1]}},
    }
    with e2e_support.ComfyUIServer(os.environ["COMFYUI_PATH"], base, e2e_support.free_port(8303, 8303)) as server:
        kind, spec = server.get_json("/object_info/LoadImageRewardRouter")["LoadImageRewardRouter"]["input"][
            "required"]["model_name"]
        assert kind == "COMBO" and spec["options"] == ["ImageReward.pt"]  # a V3 node spells its list this way
        entry = server.wait_for_history(server.queue_prompt(prompt), timeout=600)
        assert entry["status"]["status_str"] == "success", e2e_support.history_error(entry)
        text = "".join(entry["outputs"]["4"]["text"])
    lines = text.splitlines()
    assert lines[0].startswith("min = ") and len(lines) == 4
    # EmptyImage gives three identical frames: one score, three times.
    assert len({line.split(": ")[1] for line in lines[1:]}) == 1
