"""The pack's ComfyUI nodes: one table of node ids, classes and display names.

Each module keeps its own `NODES` list of (node_id, class, display name); this file only joins them.
"""
from . import dts, reward, sdvg

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
for _module in (dts, sdvg, reward):
    for _node_id, _node_class, _display_name in _module.NODES:
        if _node_id in NODE_CLASS_MAPPINGS:
            raise RuntimeError(f"node id {_node_id!r} is registered twice")
        NODE_CLASS_MAPPINGS[_node_id] = _node_class
        NODE_DISPLAY_NAME_MAPPINGS[_node_id] = _display_name
