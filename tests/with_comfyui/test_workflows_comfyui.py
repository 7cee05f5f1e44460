"""The pack as ComfyUI loads it against the example workflows, on every ComfyUI version the suite runs on: every node
type is the pack's or core's, and the widget values of the pack's nodes match their inputs (V3 nodes as their
schema describes them to the frontend, V1 nodes from INPUT_TYPES)."""
import pytest

from support.workflows import (SDVG, CORE_NODE_TYPES, WORKFLOW_FILES, import_pack, load_workflow, node_info,
                               pack_nodes_in_workflows, widget_problems)


@pytest.fixture(scope="module")
def pack(comfy_nodes):
    return import_pack()


@pytest.mark.parametrize("file_name", WORKFLOW_FILES)
def test_every_node_type_is_the_packs_or_core(file_name, pack):
    unknown = {node["type"] for node in load_workflow(file_name)["nodes"]} - CORE_NODE_TYPES - set(
        pack.NODE_CLASS_MAPPINGS)
    assert not unknown, f"{file_name} uses node types that are neither the pack's nor core: {sorted(unknown)}"


def test_pack_widget_values_match_inputs_in_comfyui(pack):
    problems, checked = [], set()
    for file_name, node in pack_nodes_in_workflows(pack.NODE_CLASS_MAPPINGS):
        info = node_info(pack.NODE_CLASS_MAPPINGS[node["type"]])
        checked.add(node["type"])
        problems += [f"{file_name}: {problem}" for problem in widget_problems(node, info)]
    assert checked >= {"DTSSampler", "DTSKSampler", "SDVGSpeculativeVideo", "LoadImageRewardRouter",
                       "LoadCausalWanCheckpoint"}, checked
    assert problems == []


def sdvg_node_and_info(pack):
    node = next(node for node in load_workflow(f"{SDVG}.json")["nodes"]
                if node["type"] == "SDVGSpeculativeVideo")
    return node, node_info(pack.NODE_CLASS_MAPPINGS["SDVGSpeculativeVideo"])


def test_a_renamed_pack_input_is_reported(pack):
    node, info = sdvg_node_and_info(pack)
    assert widget_problems(node, info) == []
    required = info["input"]["required"]
    info["input"]["required"] = {("threshold" if name == "tau" else name): spec for name, spec in required.items()}
    info["input_order"]["required"] = [("threshold" if name == "tau" else name)
                                       for name in info["input_order"]["required"]]
    assert any("threshold" in problem for problem in widget_problems(node, info))


def test_a_new_pack_input_is_reported(pack):
    node, info = sdvg_node_and_info(pack)
    info["input"]["required"]["extra_knob"] = ("INT", {"default": 1})
    info["input_order"]["required"].append("extra_knob")
    assert any("widget values for" in problem for problem in widget_problems(node, info))
