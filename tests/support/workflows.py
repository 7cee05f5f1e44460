"""The example workflows and the pack's node inputs: what a saved workflow must keep matching.

Widget values of the pack's nodes must match the nodes' current inputs (count, order, type, bounds, fixed choices),
so renaming or reordering an input breaks a test instead of the users' saved workflows.
"""
import importlib
import importlib.util
import json
import os
import sys
import types

from support.e2e import (CONTROL_AFTER_GENERATE, ConversionError, check_widget_value, is_widget_input, ordered_inputs, ui_widget_inputs,
                         widget_values_by_name)
from support import REPO

WORKFLOW_DIR = os.path.join(REPO, "example_workflows")
# The frontend shows a custom-node template's file name as its title (and, with - and _ as spaces, as its
# description): the names read as titles.
DTS_WAN = "DTS Sampler, Wan 2.1 1.3B text to video"
DTS_SD15 = "DTS KSampler, SD 1.5 text to image"
SDVG = "SDVG video, Self-Forcing drafts, Krea 14B verifies"
EXPECTED_WORKFLOWS = (DTS_WAN, DTS_SD15, SDVG)
WORKFLOW_FILES = sorted(name for name in os.listdir(WORKFLOW_DIR) if name.endswith(".json"))

# ComfyUI core node types (0.3.x) the examples may use. A type outside this list and outside the pack fails the
# test: a user without that custom node would open a workflow with a red "missing node".
CORE_NODE_TYPES = {
    # frontend-only
    "Note", "MarkdownNote", "PrimitiveNode", "Reroute",
    # loaders
    "CheckpointLoaderSimple", "UNETLoader", "CLIPLoader", "DualCLIPLoader", "VAELoader", "LoraLoader",
    "LoraLoaderModelOnly", "CLIPVisionLoader",
    # conditioning, text and latents
    "PrimitiveStringMultiline", "CLIPTextEncode", "ConditioningZeroOut", "EmptyLatentImage", "EmptyHunyuanLatentVideo", "EmptySD3LatentImage",
    "WanImageToVideo",
    # sampling
    "KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced", "BasicScheduler", "KSamplerSelect",
    "RandomNoise", "CFGGuider", "BasicGuider", "ModelSamplingSD3", "ModelSamplingDiscrete",
    # decoding and outputs
    "VAEDecode", "VAEDecodeTiled", "SaveImage", "PreviewImage", "SaveAnimatedWEBP", "SaveWEBM", "CreateVideo",
    "SaveVideo", "PreviewAny",
}
# Combo inputs whose options are the user's model files: their values differ per install, only their type is checked.
FILE_LIST_INPUTS = {"ckpt_name", "unet_name", "clip_name", "vae_name", "model_name", "lora_name"}
MODEL_FILE_INPUTS = FILE_LIST_INPUTS
PACK_NAME = "speculative_video_pack_under_test"
BARE_PACK_NAME = "speculative_video_pack_bare"
NODE_MODULES = ("dts", "reward", "sdvg")  # nodes/<name>.py


def load_workflow(file_name):
    with open(os.path.join(WORKFLOW_DIR, file_name), encoding="utf-8") as handle:
        return json.load(handle)


def import_pack():
    """The pack imported as a package under a synthetic name (never as top-level `nodes`)."""
    if PACK_NAME in sys.modules:
        return sys.modules[PACK_NAME]
    spec = importlib.util.spec_from_file_location(PACK_NAME, os.path.join(REPO, "__init__.py"),
                                                  submodule_search_locations=[REPO])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_NAME] = module
    spec.loader.exec_module(module)
    return module


def import_node_module(name):
    """nodes/<name>.py of the pack, imported without running the pack's __init__ files (they register every node,
    and the V3 node modules import ComfyUI's comfy_api): how a V1 node module is read without ComfyUI."""
    if BARE_PACK_NAME not in sys.modules:
        for module_name, folder in ((BARE_PACK_NAME, REPO), (f"{BARE_PACK_NAME}.nodes", os.path.join(REPO, "nodes"))):
            module = types.ModuleType(module_name)
            module.__path__ = [folder]
            sys.modules[module_name] = module
    return importlib.import_module(f"{BARE_PACK_NAME}.nodes.{name}")


def v1_node_classes_readable_without_comfyui():
    """{node_id: class} of the node modules that import without ComfyUI (the V1 ones), and the names of the modules
    that need it (the V3 ones, whose inputs the ComfyUI suite checks)."""
    classes, needs_comfyui = {}, []
    for name in NODE_MODULES:
        try:
            with HideComfyUI():
                module = import_node_module(name)
        except ImportError:
            module = None
        if module is None or not all(isinstance(entry, tuple) for entry in module.NODES):  # V3: classes
            needs_comfyui.append(name)
            continue
        classes.update({node_id: node_class for node_id, node_class, _ in module.NODES})
    return classes, needs_comfyui


def node_info(node_class):
    """The /object_info-shaped description ComfyUI gives for a node class: a V3 node's own V1 description (what the
    server sends), or one built from a V1 node's INPUT_TYPES."""
    if hasattr(node_class, "GET_NODE_INFO_V1"):
        info = node_class.GET_NODE_INFO_V1()
        return {"input": info["input"], "input_order": info["input_order"]}
    inputs = node_class.INPUT_TYPES()
    return {"input": inputs, "input_order": {section: list(inputs[section]) for section in ("required", "optional")
                                             if section in inputs}}


class HideComfyUI:
    """Make `import comfy...` / `import folder_paths` fail while active, unless ComfyUI is already imported.

    With COMFYUI_PATH set, ComfyUI is importable but must not be imported casually (it would pick a CUDA device);
    this keeps "readable without ComfyUI" meaning the same in both runs.
    """

    BLOCKED = ("comfy", "comfy_api", "comfy_execution", "folder_paths", "comfy_extras", "latent_preview")

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.BLOCKED:
            raise ImportError(f"{name} is hidden: this check runs without ComfyUI")
        return None

    def __enter__(self):
        if "comfy" not in sys.modules:
            sys.meta_path.insert(0, self)
        return self

    def __exit__(self, *exc):
        if self in sys.meta_path:
            sys.meta_path.remove(self)


def pack_nodes_in_workflows(node_classes):
    """[(workflow file, UI node)] for every node of the pack ({node_id: class}) used by an example workflow."""
    return [(file_name, node) for file_name in WORKFLOW_FILES for node in load_workflow(file_name)["nodes"]
            if node["type"] in node_classes]


def widget_problems(node, info):
    """Why a UI node's widgets_values do not fit the node's current inputs ([] when they fit)."""
    try:
        values = widget_values_by_name(node, info)
    except ConversionError as error:
        return [str(error)]
    problems = []
    specs = dict(ordered_inputs(info))
    # The frontend saves each input's name too (sockets, and widgets as inputs with a "widget" entry): a renamed
    # input keeps the count of values but not the names.
    saved_widgets = [entry["widget"]["name"] for entry in node.get("inputs") or [] if entry.get("widget")]
    current_widgets = [name for name in ui_widget_inputs(info) if name != CONTROL_AFTER_GENERATE]
    if saved_widgets and saved_widgets != current_widgets:
        problems.append(f"node {node['id']} ({node['type']}): saved widget inputs {saved_widgets}, "
                        f"the node now has {current_widgets}")
    # Sockets by name, in any order: a saved node keeps its own input slots (its links name a slot of the saved
    # list) and the prompt sent to the server names each input, so a socket that moves from required to optional
    # (SDVG's router) still connects; a renamed, added or removed socket does not.
    saved_sockets = sorted(entry["name"] for entry in node.get("inputs") or [] if not entry.get("widget"))
    current_sockets = sorted(name for name, spec in ordered_inputs(info) if not is_widget_input(spec))
    if saved_sockets != current_sockets:
        problems.append(f"node {node['id']} ({node['type']}): saved sockets {saved_sockets}, "
                        f"the node now has {current_sockets}")
    for name, value in values.items():
        problem = check_widget_value(name, specs[name], value, check_choices=name not in FILE_LIST_INPUTS)
        if problem:
            problems.append(f"node {node['id']} ({node['type']}): {problem}")
    names = ui_widget_inputs(info)
    raw = node.get("widgets_values") or []
    for index, name in enumerate(names):
        if name == CONTROL_AFTER_GENERATE and raw[index] not in ("fixed", "increment", "decrement", "randomize"):
            problems.append(f"node {node['id']}: control_after_generate value {raw[index]!r}")
    return problems


# LiteGraph draws a node's title bar above `pos` (LiteGraph.NODE_TITLE_HEIGHT = 30): `pos` is the body's corner.
TITLE_HEIGHT = 30


# Vue nodes (Comfy.VueNodes.Enabled) draw a node taller than its stored size: a row per pair of input / output
# sockets and per widget, plus a footer row (node badge, "show advanced", errors). Rows seen in the browser check's
# screenshots at 50 % zoom: about 27 canvas px on frontends 1.49 and 1.58, 34 on 1.37; the larger is used.
VUE_ROW_HEIGHT = 34


def vue_height(node):
    """Height below `pos` of a node drawn by Vue nodes (an estimate; notes keep their stored size)."""
    if node["type"] in ("Note", "MarkdownNote"):
        return node["size"][1]
    inputs = node.get("inputs", [])
    sockets = sum(1 for entry in inputs if "widget" not in entry)
    values = node.get("widgets_values")
    widgets = len(values) if isinstance(values, list) else sum(1 for entry in inputs if "widget" in entry)
    return (max(sockets, len(node.get("outputs", []))) + widgets + 1) * VUE_ROW_HEIGHT


def node_box(node):
    """(left, top, right, bottom) of a UI node as drawn in either canvas, title bar included."""
    (x, y), (width, height) = node["pos"], node["size"]
    return x, y - TITLE_HEIGHT, x + width, y + max(height, vue_height(node))


def overlapping_nodes(workflow):
    """[(id, id)] of the node pairs whose drawn boxes overlap (touching edges do not)."""
    boxes = [(node["id"], node_box(node)) for node in workflow["nodes"]]
    return [(first, second) for index, (first, (l1, t1, r1, b1)) in enumerate(boxes)
            for second, (l2, t2, r2, b2) in boxes[index + 1:] if l1 < r2 and l2 < r1 and t1 < b2 and t2 < b1]


# Folder of models/ each loader reads (what a download entry's `directory` must name).
LOADER_FOLDERS = {"CheckpointLoaderSimple": "checkpoints", "UNETLoader": "diffusion_models",
                  "LoadCausalWanCheckpoint": "diffusion_models", "CLIPLoader": "text_encoders", "VAELoader": "vae",
                  "LoadImageRewardRouter": "image_reward"}
MODEL_SUFFIXES = (".safetensors", ".sft", ".pt", ".pth", ".ckpt")
