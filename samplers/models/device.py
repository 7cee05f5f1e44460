"""Where a module's weights live."""


def model_device(model):
    """The device of the module's first parameter (where a fully loaded module computes)."""
    return next(model.parameters()).device
