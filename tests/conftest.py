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
import os
import sys

import pytest

from scripts.tiny_comfyui_models import import_comfyui_on_cpu, load_pack
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


@pytest.fixture(scope="session")
def comfy_nodes():
    """ComfyUI's `nodes` module (in-process, CPU)."""
    if not COMFYUI_PATH:
        pytest.skip(SKIP_REASON)
    return import_comfyui_on_cpu(COMFYUI_PATH)


@pytest.fixture(scope="session")
def comfy_pack(comfy_nodes):
    """This pack, loaded through ComfyUI's own custom-node loader (the module object it created)."""
    return load_pack(comfy_nodes, REPO)
