"""Shared test set-up.

Tests are grouped by what they need, and the folder decides the markers:
- plain_torch/: torch only;
- with_comfyui/: a ComfyUI checkout at COMFYUI_PATH, imported in-process on the CPU (marker `comfyui`);
- with_server/: a real ComfyUI server started by the tests (markers `comfyui`, `server`, `slow`);
- js/: Node's test runner (`node --test tests/js/`), not pytest.
Without COMFYUI_PATH the `comfyui` tests are skipped and the reason is printed (`-ra`).

The repo root and tests/ are on sys.path through pytest's `pythonpath` setting (pyproject.toml), so tests import
`samplers`, `bench` and the helper package `support`. ComfyUI's folder goes *ahead* of them, as ComfyUI's own
main.py puts it, so that `import nodes` means ComfyUI's nodes.py, never this pack's nodes/ package.
"""
import asyncio
import os
import sys

import pytest

from support import REPO

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
if COMFYUI_PATH:
    COMFYUI_PATH = os.path.abspath(COMFYUI_PATH)
    sys.path.insert(0, COMFYUI_PATH)

SKIP_REASON = "COMFYUI_PATH is not set: point it at a ComfyUI checkout to run the tests marked `comfyui`"
FOLDER_MARKERS = {"with_comfyui": ("comfyui",), "with_server": ("comfyui", "server", "slow")}


def pytest_report_header(config):
    return f"COMFYUI_PATH: {COMFYUI_PATH or '(unset: tests marked comfyui are skipped)'}"


def pytest_collection_modifyitems(config, items):
    tests_dir = os.path.join(REPO, "tests")
    for item in items:
        folder = os.path.relpath(str(item.path), tests_dir).split(os.sep)[0]
        for marker in FOLDER_MARKERS.get(folder, ()):
            item.add_marker(marker)
        if "comfyui" in item.keywords and not COMFYUI_PATH:
            item.add_marker(pytest.mark.skip(reason=SKIP_REASON))


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
