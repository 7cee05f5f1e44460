"""Golden vectors of the reference code (Self-Forcing and Krea realtime protocols, ../shared/golden/README.md):
every case in the folder SDVG_GOLDEN_DIR (default ../shared/golden from the repo root) runs through the pack's own
CausalWanRunner and block loop, fed the recorded noise, and matches the float32 outputs to the README's 1e-4."""
import os

import torch

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


@pytest.mark.parametrize("protocols", [("self_forcing", "krea_realtime"), ("krea_realtime", "krea_realtime"),
                                       ("self_forcing", "self_forcing")], ids="+".join)
def test_golden_models_give_the_eager_orders_video_with_the_lazy_target(protocols):
    """The golden cases' two DiTs, stand-in VAE and context in a speculative run: the lazy target gives the eager
    order's video, bit for bit for a krea_realtime target, within float32 rounding for a self_forcing one."""
    if "krea_target" not in CASES:
        pytest.skip(f"golden: no krea_target case in {FOLDER} (set SDVG_GOLDEN_DIR)")
    from samplers.methods.sdvg import speculative_generate
    from support.golden import run_speculative_pair
    from support.sdvg_eager import eager_speculative_generate

    for scores in ((1, 1, 1, 1), (1, 0, 1, 0), (0, 1, 1, 0), (0, 0, 0, 0)):
        lazy = run_speculative_pair(FOLDER, speculative_generate, protocols, scores)
        eager = run_speculative_pair(FOLDER, eager_speculative_generate, protocols, scores)
        assert lazy[2] == eager[2] == ["target"] + ["drafter" if s else "target" for s in scores]
        if protocols[1] == "krea_realtime":
            assert torch.equal(lazy[0], eager[0]) and torch.equal(lazy[1], eager[1])
        else:
            torch.testing.assert_close(lazy[0], eager[0], rtol=0, atol=1e-5)
