#!/usr/bin/env bash
# Reference fidelity of the ImageReward router: compare the pack with the `image-reward` package (THUDM) itself.
#
# image-reward 1.5 cannot be imported next to current transformers (>= 4.56), so it gets an environment of its own:
# transformers 4.55.4, timm 0.6.13, fairscale 0.4.13, clip-anytorch with setuptools < 81 (its `clip` needs
# pkg_resources), and torch 2.14.1 + torchvision 0.29.1 (the package and timm import torchvision; no torchvision
# wheel imports beside the CPU-only torch 2.13.0). Then the tests marked `reference` run in the pack's own
# environment (the python that runs this script, or $PYTHON) and call the package through that environment's python.
#
#   bash .ci/reference_image_reward.sh                # builds .venv-image-reward once, then reuses it
#   IMAGE_REWARD_VENV=/path FRESH=1 bash .ci/reference_image_reward.sh   # rebuild from scratch
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${IMAGE_REWARD_VENV:-.venv-image-reward}"
PYTHON="${PYTHON:-python}"
MARKER="$VENV/.image-reward-ready"

if [ "${FRESH:-0}" = "1" ]; then
    rm -rf "$VENV"
fi
if [ ! -f "$MARKER" ]; then
    start=$(date +%s)
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q "setuptools<81" wheel
    "$VENV/bin/python" -m pip install -q torch==2.14.1 torchvision==0.29.1
    # fairscale ships only a source archive whose build needs torch: build it against the torch just installed.
    "$VENV/bin/python" -m pip install -q --no-build-isolation fairscale==0.4.13
    "$VENV/bin/python" -m pip install -q image-reward==1.5 transformers==4.55.4 timm==0.6.13 clip-anytorch \
        "setuptools<81" safetensors
    # A dependency may lift setuptools again; clip-anytorch needs pkg_resources.
    "$VENV/bin/python" -m pip install -q "setuptools<81"
    HF_HUB_OFFLINE=1 "$VENV/bin/python" -c "import ImageReward, transformers; print('image-reward imports with transformers', transformers.__version__)"
    touch "$MARKER"
    echo "reference environment built in $(( $(date +%s) - start )) s"
fi

export IMAGE_REWARD_REFERENCE_PYTHON="$(cd "$VENV" && pwd)/bin/python"
start=$(date +%s)
"$PYTHON" -m pytest -q -s -m reference tests/plain_torch/test_reward_full_size.py
echo "reference tests ran in $(( $(date +%s) - start )) s"
