"""The example workflows in example_workflows/ (UI format, what ComfyUI's frontend saves and serves as templates).

Checked without ComfyUI: valid JSON; every node type is the pack's or in CORE_NODE_TYPES below; links agree with
the nodes' slots; each workflow has a Note naming the model files it loads; and the widget values of the pack's
nodes match the nodes' current inputs (count, order, type, bounds, fixed choices), so renaming or reordering an
input breaks this test instead of the users' saved workflows.

What needs ComfyUI: every node module (nodes/dts.py, nodes/reward.py, nodes/sdvg.py) is V3 and imports ComfyUI's
comfy_api, so the pack's nodes are read only by tests/with_comfyui/test_workflows_comfyui.py (in-process ComfyUI, on
every ComfyUI version the suite runs on): which node types are the pack's, and those nodes' widget values. Core
nodes' widget values are checked against a live server's /object_info by tests/with_server/test_e2e_comfyui.py.

Also here: the UI -> API conversion of tests/support/e2e.py on small hand-made cases.
"""
import pytest

from support.e2e import (CONTROL_AFTER_GENERATE, ConversionError, check_widget_value, drop_unreferenced,
                         is_widget_input, link_problems, ui_to_api, ui_widget_inputs)
from support.workflows import (DTS_SD15, DTS_WAN, EXPECTED_WORKFLOWS, LOADER_FOLDERS, MODEL_SUFFIXES, SDVG,
                               TITLE_HEIGHT, VUE_ROW_HEIGHT, WORKFLOW_FILES, load_workflow, node_box, overlapping_nodes,
                               v1_node_classes_readable_without_comfyui)


def test_every_node_file_is_v3_and_read_by_the_comfyui_suite():
    classes, needs_comfyui = v1_node_classes_readable_without_comfyui()
    assert classes == {} and needs_comfyui == ["dts", "reward", "sdvg"]


# ---------------------------------------------------------------------------------------------------------------

def test_the_three_example_workflows_exist():
    assert set(EXPECTED_WORKFLOWS) <= {name[:-5] for name in WORKFLOW_FILES}


@pytest.mark.parametrize("file_name", WORKFLOW_FILES)
def test_workflow_is_valid_json_in_ui_format(file_name):
    workflow = load_workflow(file_name)
    assert isinstance(workflow.get("nodes"), list) and workflow["nodes"], "a UI workflow has a list of nodes"
    assert isinstance(workflow.get("links"), list), "a UI workflow has a list of links"
    for node in workflow["nodes"]:
        assert {"id", "type", "pos", "size", "mode"} <= set(node), node.get("id")


@pytest.mark.parametrize("file_name", WORKFLOW_FILES)
def test_links_are_consistent(file_name):
    assert link_problems(load_workflow(file_name)) == []


@pytest.mark.parametrize("file_name", WORKFLOW_FILES)
def test_a_note_names_every_model_file_and_its_folder(file_name):
    workflow = load_workflow(file_name)
    notes = "\n".join(value for node in workflow["nodes"] if node["type"] in ("Note", "MarkdownNote")
                      for value in node.get("widgets_values") or [] if isinstance(value, str))
    assert notes, f"{file_name} has no Note"
    model_files = {value for node in workflow["nodes"] if node["type"] not in ("Note", "MarkdownNote")
                   for value in node.get("widgets_values") or []
                   if isinstance(value, str) and value.endswith((".safetensors", ".pt", ".ckpt"))}
    assert model_files, f"{file_name} loads no model file"
    for model_file in model_files:
        assert model_file in notes, f"the Note of {file_name} does not say where {model_file} goes"
    assert "models/" in notes, f"the Note of {file_name} does not name the model folders"


@pytest.mark.parametrize("file_name", WORKFLOW_FILES)
def test_no_two_nodes_overlap_title_bars_included(file_name):
    assert overlapping_nodes(load_workflow(file_name)) == []


def test_overlap_check_counts_the_title_bar_above_pos():
    lower = {"id": 2, "type": "Note", "pos": [0, 100], "size": [100, 50]}  # a note: drawn at its stored size
    assert node_box(lower) == (0, 100 - TITLE_HEIGHT, 100, 150)
    # The upper body ends 10 px above the lower body: the lower one's title bar covers that gap and more.
    upper = {"id": 1, "type": "Note", "pos": [0, 0], "size": [100, 90]}
    assert overlapping_nodes({"nodes": [upper, lower]}) == [(1, 2)]
    upper["size"] = [100, 70]
    assert overlapping_nodes({"nodes": [upper, lower]}) == []


def test_overlap_check_counts_the_rows_vue_nodes_draw():
    # A loader with one output and three widgets: stored 106 tall, drawn by Vue nodes as 5 rows (3 widgets, the
    # socket row, the footer), so a node 140 px below its pos overlaps it in Vue nodes though not on the classic canvas.
    loader = {"id": 1, "type": "CLIPLoader", "pos": [0, 0], "size": [100, 106], "outputs": [{"name": "CLIP"}],
              "widgets_values": ["umt5.safetensors", "wan", "default"]}
    assert node_box(loader) == (0, -TITLE_HEIGHT, 100, 5 * VUE_ROW_HEIGHT)
    below = {"id": 2, "type": "Note", "pos": [0, 140 + TITLE_HEIGHT], "size": [100, 50]}
    assert overlapping_nodes({"nodes": [loader, below]}) == [(1, 2)]
    below["pos"][1] = 5 * VUE_ROW_HEIGHT + TITLE_HEIGHT
    assert overlapping_nodes({"nodes": [loader, below]}) == []


@pytest.mark.parametrize("file_name", WORKFLOW_FILES)
def test_every_model_file_a_workflow_loads_has_a_download_entry(file_name):
    """ComfyUI's missing-models dialog reads a loader's properties.models: name, url, directory."""
    problems, loaded = [], 0
    for node in load_workflow(file_name)["nodes"]:
        files = [value for value in node.get("widgets_values") or []
                 if isinstance(value, str) and value.lower().endswith(MODEL_SUFFIXES)]
        entries = {entry["name"]: entry for entry in (node.get("properties") or {}).get("models", [])}
        for name in files if node["type"] not in ("Note", "MarkdownNote") else ():
            loaded += 1
            entry = entries.get(name)
            if entry is None:
                problems.append(f"node {node['id']} ({node['type']}) loads {name} without a models entry")
            elif not (entry["url"].startswith("https://huggingface.co/")
                      and entry["url"].split("?")[0].endswith("/" + name)
                      and entry["directory"] == LOADER_FOLDERS[node["type"]]):
                problems.append(f"node {node['id']} ({node['type']}): entry {entry} does not fetch {name} into "
                                f"{LOADER_FOLDERS[node['type']]}/")
    assert loaded and problems == []


def test_sdvg_template_loads_the_files_krea_and_self_forcing_publish():
    nodes = {node["type"]: node for node in load_workflow(f"{SDVG}.json")["nodes"]}
    assert nodes["UNETLoader"]["widgets_values"][0] == "krea-realtime-video-14b.safetensors"
    assert nodes["UNETLoader"]["properties"]["models"][0]["url"].startswith(
        "https://huggingface.co/krea/krea-realtime-video/")
    assert nodes["LoadCausalWanCheckpoint"]["widgets_values"] == ["self_forcing_dmd.pt", "default", "auto"]
    assert nodes["LoadCausalWanCheckpoint"]["properties"]["models"][0]["url"] == (
        "https://huggingface.co/gdhe17/Self-Forcing/resolve/main/checkpoints/self_forcing_dmd.pt")


def test_sdvg_note_states_what_fits_where_as_the_memory_plan_computes_it():
    from samplers.models.memory_plan import GIB, device_memory_rows

    note = next(node for node in load_workflow(f"{SDVG}.json")["nodes"] if node["type"] == "Note")
    text = note["widgets_values"][0]
    for _, *sizes in device_memory_rows():
        for size in sizes:
            assert f"{size / GIB:.1f} GiB" in text, (size / GIB, text)


def test_template_names_read_as_titles_and_travel_in_urls():
    """The frontend shows a custom-node template's file name as its title and (with - and _ as spaces) as its
    description; the name is also a URL path segment and a file name on every system."""
    for name in EXPECTED_WORKFLOWS:
        assert name.split()[0] in ("DTS", "SDVG") and " " in name and "_" not in name
        assert not set(name) & set('<>:"/\\|?*#%&+'), name


@pytest.mark.parametrize("file_name, pack_nodes", [
    (f"{DTS_WAN}.json", {"DTSSampler"}),
    (f"{DTS_SD15}.json", {"DTSKSampler"}),
    (f"{SDVG}.json", {"SDVGSpeculativeVideo", "LoadImageRewardRouter", "LoadCausalWanCheckpoint"}),
])
def test_workflow_uses_its_pack_nodes(file_name, pack_nodes):
    types = {node["type"] for node in load_workflow(file_name)["nodes"]}
    assert pack_nodes <= types


def test_dts_wan_workflow_runs_dts_on_a_100_step_schedule():
    nodes = load_workflow(f"{DTS_WAN}.json")["nodes"]
    scheduler = next(node for node in nodes if node["type"] == "BasicScheduler")
    assert scheduler["widgets_values"][1] == 100  # BasicScheduler widgets: scheduler, steps, denoise


# ---------------------------------------------------------------------------------------------------------------
# UI -> API conversion (tests/support/e2e.py)

SAMPLER_INFO = {
    "input": {"required": {"model": ["MODEL"], "seed": ["INT", {"default": 0, "min": 0}],
                           "steps": ["INT", {"default": 20, "min": 1, "max": 100}],
                           "name": [["a", "b"]], "hidden_link": ["FLOAT", {"forceInput": True}]},
              "optional": {"strength": ["FLOAT", {"default": 1.0, "min": 0.0, "max": 2.0}]}},
    "input_order": {"required": ["model", "seed", "steps", "name", "hidden_link"], "optional": ["strength"]},
}
LOADER_INFO = {"input": {"required": {"file": [["x.safetensors"]]}}, "input_order": {"required": ["file"]}}


def tiny_ui_workflow():
    return {
        "last_node_id": 3, "last_link_id": 1,
        "nodes": [
            {"id": 1, "type": "Loader", "mode": 0, "inputs": [],
             "outputs": [{"name": "MODEL", "type": "MODEL", "links": [1]}], "widgets_values": ["x.safetensors"]},
            {"id": 2, "type": "Sampler", "mode": 0,
             "inputs": [{"name": "model", "type": "MODEL", "link": 1},
                        {"name": "hidden_link", "type": "FLOAT", "link": None},
                        {"name": "steps", "type": "INT", "widget": {"name": "steps"}, "link": None}],
             "outputs": [], "widgets_values": [7, "randomize", 12, "b", 0.5]},
            {"id": 3, "type": "Note", "mode": 0, "inputs": [], "outputs": [], "widgets_values": ["hello"]},
        ],
        "links": [[1, 1, 0, 2, 0, "MODEL"]],
    }


def test_seed_input_gets_a_control_after_generate_slot():
    assert ui_widget_inputs(SAMPLER_INFO) == ["seed", CONTROL_AFTER_GENERATE, "steps", "name", "strength"]


def test_control_after_generate_flag_adds_the_slot_to_any_int_input():
    info = {"input": {"required": {"noise": ["INT", {"control_after_generate": True}]}}}
    assert ui_widget_inputs(info) == ["noise", CONTROL_AFTER_GENERATE]


def test_a_dynamic_combos_chosen_option_brings_its_widgets_named_under_it_and_hidden_inputs_show_none():
    codec = ["COMFY_DYNAMICCOMBO_V3", {"options": [
        {"key": "auto", "inputs": {"required": {}}},
        {"key": "h264", "inputs": {"required": {"crf": ["FLOAT", {"default": 23.0}]}}}]}]
    info = {"input": {"required": {
        "prefix": ["STRING", {}],
        "format": ["COMFY_DYNAMICCOMBO_V3", {"options": [{"key": "mp4", "inputs": {"required": {"codec": codec}}}]}]},
        "optional": {"codec": [codec[0], dict(codec[1], hidden=True)]}}}
    assert ui_widget_inputs(info, ["v", "mp4", "auto"]) == ["prefix", "format", "format.codec"]
    assert ui_widget_inputs(info, ["v", "mp4", "h264", 20.0]) == ["prefix", "format", "format.codec",
                                                                  "format.codec.crf"]


def test_force_input_is_a_socket_not_a_widget():
    assert not is_widget_input(["FLOAT", {"forceInput": True}])
    assert is_widget_input([["a", "b"]]) and is_widget_input(["COMBO", {"options": ["a"]}])


def test_conversion_maps_widgets_by_input_order_and_links_to_node_slots():
    prompt = ui_to_api(tiny_ui_workflow(), {"Loader": LOADER_INFO, "Sampler": SAMPLER_INFO})
    assert prompt == {
        "1": {"class_type": "Loader", "inputs": {"file": "x.safetensors"}},
        "2": {"class_type": "Sampler", "inputs": {"model": ["1", 0], "seed": 7, "steps": 12, "name": "b",
                                                  "strength": 0.5}},
    }


def test_conversion_applies_overrides_by_type_or_id():
    prompt = ui_to_api(tiny_ui_workflow(), {"Loader": LOADER_INFO, "Sampler": SAMPLER_INFO},
                       overrides={"Sampler": {"steps": 3}, "1": {"file": "tiny.safetensors"}})
    assert prompt["2"]["inputs"]["steps"] == 3 and prompt["1"]["inputs"]["file"] == "tiny.safetensors"


def test_conversion_refuses_a_widget_count_that_does_not_match_the_inputs():
    workflow = tiny_ui_workflow()
    workflow["nodes"][1]["widgets_values"] = [7, 12, "b", 0.5]  # control_after_generate missing
    with pytest.raises(ConversionError, match="4 widget values for 5 widgets"):
        ui_to_api(workflow, {"Loader": LOADER_INFO, "Sampler": SAMPLER_INFO})


def test_widget_check_reports_values_out_of_bounds_and_unknown_choices():
    assert "above the maximum" in check_widget_value("steps", SAMPLER_INFO["input"]["required"]["steps"], 1000)
    assert "not one of" in check_widget_value("name", SAMPLER_INFO["input"]["required"]["name"], "c")
    assert check_widget_value("name", SAMPLER_INFO["input"]["required"]["name"], "c", check_choices=False) is None


def test_link_check_finds_a_link_the_target_input_does_not_hold():
    workflow = tiny_ui_workflow()
    workflow["nodes"][1]["inputs"][0]["link"] = None
    assert link_problems(workflow) == ["link 1: input 0 of node 2 does not hold it"]


def test_drop_unreferenced_keeps_output_nodes_and_what_they_use():
    prompt = {"1": {"class_type": "A", "inputs": {}}, "2": {"class_type": "B", "inputs": {"x": ["1", 0]}},
              "3": {"class_type": "C", "inputs": {}}}
    assert set(drop_unreferenced(prompt, keep_types={"B"})) == {"1", "2"}


def test_sdvg_example_types_the_prompt_once_for_the_text_encoder_and_the_router():
    workflow = load_workflow(f"{SDVG}.json")
    nodes = {node["id"]: node for node in workflow["nodes"]}
    links = {link[0]: link for link in workflow["links"]}

    def source(node_type, input_name):
        node = next(node for node in nodes.values() if node["type"] == node_type)
        entry = next(entry for entry in node["inputs"] if entry["name"] == input_name)
        return links[entry["link"]][1:3] if entry.get("link") is not None else None

    text_source = source("CLIPTextEncode", "text")
    assert text_source is not None and text_source == source("SDVGSpeculativeVideo", "router_prompt")
    assert nodes[text_source[0]]["widgets_values"][0].strip()


def test_conversion_gives_widgets_appended_after_the_save_their_defaults():
    info = {"input": {"required": {"images": ["IMAGE"], "fps": ["FLOAT", {"default": 30.0}],
                                   "bit_depth": [["8-bit", "10-bit"], {"default": "8-bit"}]}},
            "input_order": {"required": ["images", "fps", "bit_depth"]}}
    workflow = {"nodes": [{"id": 1, "type": "CreateVideo", "mode": 0, "widgets_values": [16],
                           "inputs": [{"name": "images", "type": "IMAGE", "link": None},
                                      {"name": "fps", "type": "FLOAT", "widget": {"name": "fps"}, "link": None}],
                           "outputs": []}], "links": []}
    assert ui_to_api(workflow, {"CreateVideo": info})["1"]["inputs"] == {"fps": 16, "bit_depth": "8-bit"}
    workflow["nodes"][0]["inputs"][1]["widget"]["name"] = "rate"  # a renamed widget is no appended one
    with pytest.raises(ConversionError, match="1 widget values for 2 widgets"):
        ui_to_api(workflow, {"CreateVideo": info})
