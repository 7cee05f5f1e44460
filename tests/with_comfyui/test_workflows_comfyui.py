"""The pack's node inputs against the example workflows, for the nodes whose INPUT_TYPES import ComfyUI (DTS KSampler
lists ComfyUI's schedulers, Load ImageReward Router lists the model folder)."""
import pytest

from support.workflows import import_pack, node_info, pack_nodes_in_workflows, widget_problems


@pytest.fixture(scope="module")
def pack():
    return import_pack()


def test_pack_widget_values_match_inputs_in_comfyui(comfy_nodes, pack):
    problems, checked = [], set()
    for file_name, node in pack_nodes_in_workflows(pack):
        info = node_info(pack.NODE_CLASS_MAPPINGS[node["type"]])
        checked.add(node["type"])
        problems += [f"{file_name}: {problem}" for problem in widget_problems(node, info)]
    assert checked >= {"DTSSampler", "DTSKSampler", "SDVGSpeculativeVideo", "LoadImageRewardRouter"}, checked
    assert problems == []
