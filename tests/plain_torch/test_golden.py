"""Golden vectors of the reference code (Self-Forcing and Krea realtime protocols, ../shared/golden/README.md):
every case in the folder SDVG_GOLDEN_DIR (default ../shared/golden from the repo root) runs through the pack's own
CausalWanRunner and block loop, fed the recorded noise, and matches the float32 outputs to the README's 1e-4."""
import os

import pytest

from support.golden import case_names, golden_dir, run_case
from support.wan import single_thread  # noqa: F401  (autouse fixture)

ATOL = 1e-4  # the README's float32 tolerance (values up to ~4.8)
FOLDER = golden_dir()
CASES = case_names(FOLDER) if os.path.isdir(FOLDER) else []


def test_golden_folder_has_cases():
    if not os.path.isdir(FOLDER):
        pytest.skip(f"golden: no folder {FOLDER} (set SDVG_GOLDEN_DIR to a folder of golden cases)")
    assert CASES, f"golden: {FOLDER} holds no case (<name>.json with a protocol + <name>.safetensors)"


@pytest.mark.parametrize("case", CASES or [pytest.param(None, marks=pytest.mark.skip(
    reason=f"golden: no cases in {FOLDER} (set SDVG_GOLDEN_DIR)"))])
def test_golden_case_matches_reference(case, record_property):
    result = run_case(FOLDER, case)
    errors = result["max_error"]
    worst = max(errors, key=errors.get)
    record_property("max_error", errors[worst])
    print(f"golden {case} ({result['meta']['protocol']}): largest error {errors[worst]:.2e} at {worst} "
          f"over {len(errors)} tensors")
    assert errors[worst] <= ATOL, f"{case}: {worst} is {errors[worst]:.3e} away (atol {ATOL})"
