"""What the V3 node files share: features of ComfyUI's node API newer than the oldest supported ComfyUI (0.3.64),
used only where the running ComfyUI has them (detected, never read off a version string)."""
import inspect

from comfy_api.latest import io

# Where the pack's nodes appear in the node library.
SAMPLING_CATEGORY = "sampling/speculative"
LOADERS_CATEGORY = "loaders/speculative"

# `advanced` inputs (folded away in the node until the user opens them) arrived after 0.3.64.
ADVANCED_INPUTS = "advanced" in inspect.signature(io.WidgetInput.__init__).parameters


def advanced():
    """Keyword arguments that mark an input as advanced where ComfyUI supports it (else none: a plain widget)."""
    return {"advanced": True} if ADVANCED_INPUTS else {}


def node_id(cls, unique_id=None):
    """The running node's id: ComfyUI gives V3 nodes their hidden inputs on `cls.hidden`; callers of the V1 method
    names pass `unique_id` themselves."""
    if unique_id is not None:
        return unique_id
    hidden = getattr(cls, "hidden", None)
    return getattr(hidden, "unique_id", None)
