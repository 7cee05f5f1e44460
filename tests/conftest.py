"""Shared test set-up.

- The repo root goes on sys.path so tests import `samplers` and `bench` directly.
- Tests marked `comfyui` need a ComfyUI checkout at COMFYUI_PATH; without it they are skipped and the
  reason is printed (`-ra`). ComfyUI's folder goes *ahead* of the repo root so that `import nodes` means
  ComfyUI's nodes.py, never this pack's nodes/ package.
- Modules in tests/ can import each other by name (tests/ is on sys.path too).
"""
import asyncio
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(REPO, "tests")
COMFYUI_PATH = os.environ.get("COMFYUI_PATH")

for _path in (TESTS, REPO):
    if _path not in sys.path:
        sys.path.insert(0, _path)
if COMFYUI_PATH:
    COMFYUI_PATH = os.path.abspath(COMFYUI_PATH)
    sys.path.insert(0, COMFYUI_PATH)

SKIP_REASON = "COMFYUI_PATH is not set: point it at a ComfyUI checkout to run the tests marked `comfyui`"


def pytest_report_header(config):
    return f"COMFYUI_PATH: {COMFYUI_PATH or '(unset: tests marked comfyui are skipped)'}"


def pytest_collection_modifyitems(config, items):
    if COMFYUI_PATH:
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if "comfyui" in item.keywords:
            item.add_marker(skip)


def import_comfyui_on_cpu():
    """Import ComfyUI in-process, forced to the CPU, and return its `nodes` module."""
    import comfy.options  # noqa: F401  (argument parsing stays off: ComfyUI is used as a library)
    from comfy.cli_args import args

    args.cpu = True  # must precede the first import of comfy.model_management
    import comfy.model_management  # noqa: F401
    import nodes as comfy_nodes

    assert os.path.abspath(comfy_nodes.__file__).startswith(COMFYUI_PATH), comfy_nodes.__file__
    return comfy_nodes


@pytest.fixture(scope="session")
def comfy_nodes():
    """ComfyUI's `nodes` module (in-process, CPU)."""
    if not COMFYUI_PATH:
        pytest.skip(SKIP_REASON)
    return import_comfyui_on_cpu()


@pytest.fixture(scope="session")
def comfy_pack(comfy_nodes):
    """This pack, loaded through ComfyUI's own custom-node loader (the module object it created)."""
    ok = asyncio.run(comfy_nodes.load_custom_node(REPO))
    assert ok, "ComfyUI's loader failed to import the pack (see the log above)"
    return sys.modules[REPO.replace(".", "_x_")]
