"""The pack's ComfyUI nodes: one table of node ids, classes and display names.

Each module keeps its own `NODES` list: V1 entries are (node_id, class, display name), V3 entries are the
io.ComfyNode classes, whose NODE_ID and DISPLAY_NAME their schema uses (read here without building the schema:
that would import ComfyUI modules, e.g. its samplers, while custom nodes load). This file only joins them; V1 and V3
nodes sit side by side while the files migrate one at a time.
"""
import importlib.util

_MODULES = []
# The V3 node files import ComfyUI's comfy_api. Outside ComfyUI (the plain-torch tests, scripts that use samplers/)
# the pack imports without nodes; inside ComfyUI comfy_api always exists, so nothing is left out there.
if importlib.util.find_spec("comfy_api") is not None:
    from . import dts, reward, sdvg

    _MODULES = [dts, sdvg, reward]

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
for _module in _MODULES:
    for _entry in _module.NODES:
        if isinstance(_entry, tuple):
            _node_id, _node_class, _display_name = _entry
        else:
            _node_id, _node_class, _display_name = _entry.NODE_ID, _entry, _entry.DISPLAY_NAME
        if _node_id in NODE_CLASS_MAPPINGS:
            raise RuntimeError(f"node id {_node_id!r} is registered twice")
        NODE_CLASS_MAPPINGS[_node_id] = _node_class
        NODE_DISPLAY_NAME_MAPPINGS[_node_id] = _display_name
