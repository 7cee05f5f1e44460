"""One way to bring a model onto its device before its calls: runner, router and decoder alike.

ComfyUI's model management decides what stays on the device; when several models do not fit together it offloads
(part of) whichever ran least recently. Loading a model right before each of its calls brings it back; when it is
already loaded the call is a no-op.
"""


class Placed:
    """`obj` whose methods named in `calls` first load `patcher` through `comfy.model_management.load_models_gpu`
    (with room for `memory_required` bytes of activations); every other attribute is `obj`'s own."""

    def __init__(self, obj, patcher, calls, memory_required=0, force_full_load=False):
        self.obj, self.patcher, self.calls = obj, patcher, tuple(calls)
        self.memory_required, self.force_full_load = memory_required, force_full_load

    def place(self):
        import comfy.model_management

        comfy.model_management.load_models_gpu([self.patcher], memory_required=self.memory_required,
                                               force_full_load=self.force_full_load)

    def __getattr__(self, name):  # only called for names Placed itself does not have
        if name in ("obj", "calls"):  # not set yet (e.g. while copying): no recursion
            raise AttributeError(name)
        value = getattr(self.obj, name)
        if name not in self.calls:
            return value

        def placed_call(*args, **kwargs):
            self.place()
            return value(*args, **kwargs)

        return placed_call


def compute_dtype(model):
    """The dtype ComfyUI runs this MODEL in: its manual-cast dtype when weights are stored narrower, else theirs."""
    base_model = model.model
    return base_model.manual_cast_dtype if base_model.manual_cast_dtype is not None else base_model.get_dtype()
