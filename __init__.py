"""comfyui-speculative-video: DTS and SDVG as ComfyUI nodes.

ComfyUI imports this folder as a package; everything it needs comes from `nodes/`
through a relative import (ComfyUI has a top-level module called `nodes`).
"""
if __package__:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
else:  # imported as a lone file (pytest, in a checkout whose folder name is no Python name): nothing to register
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}

WEB_DIRECTORY = "./js"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
