"""The Comfy Registry metadata (pyproject.toml [project] / [tool.comfy], .comfyignore) as the Registry's
specification asks: a node id without "ComfyUI", an icon that exists, the minimum ComfyUI version, an archive with
what ComfyUI loads and without the developer tooling."""
import fnmatch
import os
import re
import subprocess
import tomllib

from support import REPO
from support.workflows import SDVG

with open(os.path.join(REPO, "pyproject.toml"), "rb") as handle:
    PYPROJECT = tomllib.load(handle)
COMFY = PYPROJECT["tool"]["comfy"]


def test_node_id_follows_the_registry_rules_and_leaves_comfyui_out():
    name = PYPROJECT["project"]["name"]
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9]*([-_.][A-Za-z0-9]+)*", name) and len(name) < 100
    assert "comfyui" not in name.lower()
    assert re.fullmatch(r"\d+\.\d+\.\d+", PYPROJECT["project"]["version"])


def test_icon_points_at_a_square_png_of_at_most_400_pixels_in_the_repository():
    icon = COMFY["Icon"]
    path = icon.split("/main/", 1)[1]
    with open(os.path.join(REPO, path), "rb") as handle:
        header = handle.read(24)
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")
    assert width == height <= 400


def test_minimum_comfyui_version_is_declared_under_tool_comfy():
    assert COMFY["requires-comfyui"] == ">=0.3.64"
    assert "requires-comfyui" not in PYPROJECT["project"]  # comfy-cli reads it from [tool.comfy] only


def archive_files():
    """The git-tracked files minus .comfyignore's patterns: what `comfy node publish` packs."""
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.split("\0")[:-1]  # NUL-separated: template names hold spaces
    with open(os.path.join(REPO, ".comfyignore"), encoding="utf-8") as handle:
        patterns = [line.strip() for line in handle if line.strip() and not line.startswith("#")]

    def ignored(path):
        for pattern in patterns:
            anchored = pattern.strip("/")
            if pattern.endswith("/") and (path + "/").startswith(anchored + "/"):
                return True
            if fnmatch.fnmatch(path, anchored):
                return True
        return False

    return [path for path in tracked if not ignored(path)]


def test_the_archive_ships_what_comfyui_loads_and_not_the_developer_tooling():
    files = archive_files()
    for needed in ("__init__.py", "nodes/sdvg.py", "nodes/glue/placement.py", "samplers/methods/dts.py",
                   "samplers/models/wan.py", "js/speculative_stats.js", f"example_workflows/{SDVG}.json",
                   "scripts/convert_self_forcing.py", "scripts/convert_image_reward.py", "LICENSE", "README.md",
                   "requirements.txt", "pyproject.toml"):
        assert needed in files, needed
    assert not [path for path in files if path.startswith(("tests/", ".ci/", "bench/"))]
    assert all(os.path.isdir(os.path.join(REPO, folder)) for folder in COMFY["includes"])


def test_root_init_imported_as_a_lone_file_registers_nothing_and_does_not_fail():
    # pytest imports the repo's __init__.py on its own when the checkout's folder is no Python name (a clone
    # named comfyui-speculative-video); ComfyUI imports it as a package and gets the nodes.
    import pathlib
    import runpy

    lone = runpy.run_path(str(pathlib.Path(__file__).resolve().parents[2] / "__init__.py"))  # no parent package
    assert lone["NODE_CLASS_MAPPINGS"] == {} and lone["WEB_DIRECTORY"] == "./js"
