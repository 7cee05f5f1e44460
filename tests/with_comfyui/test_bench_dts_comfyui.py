"""scripts/bench_dts_comfyui.py's report at one seed, inside a real ComfyUI (in-process, CPU): its tables keep their
shape and the facts that hold whatever the timings, so the script cannot rot.

Skipped unless COMFYUI_PATH points at a ComfyUI checkout.
"""
import pytest
import torch

from scripts.bench_dts_comfyui import MODEL_NAMES, SUCCESS_REASON, report, tiny_models

pytestmark = pytest.mark.slow  # the module's one report samples 3 models x 4 methods

METHODS = ["Euler-100", "Euler-50", "Euler-10", "DTS"]  # at the DTS Sampler's default strides 10 / 2
COLUMNS = ["method", "success", "sequential calls", "evaluations / sample", "drafts accepted",
           "RMS distance to Euler-100 (relative)", "CPU wall / sample"]


def cells(line):
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


@pytest.fixture(scope="module")
def tables(comfy_nodes, comfy_pack, tmp_path_factory):
    """{model title: {method: {column: cell}}} parsed from the report of one seed, and the report's text (each
    table followed by its note on DTS's draft-to-target ratios)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        folder = str(tmp_path_factory.mktemp("bench_dts_models"))
        text = report(comfy_nodes, comfy_pack, tiny_models(comfy_nodes, folder), [0])
    finally:
        torch.set_num_threads(threads)
    parsed = {}
    for section in text.split("### ")[1:]:
        title, table, note = section.strip().split("\n\n")
        assert note.startswith("DTS's drafts, distance to their target as a share of the target's own step")
        header, rule, *rows = table.splitlines()
        assert cells(header) == COLUMNS and set(rule) <= set("|-")
        parsed[title] = {cells(row)[0]: dict(zip(COLUMNS, cells(row))) for row in rows}
    return parsed, text


def test_the_report_has_one_table_per_model_with_one_row_per_method(tables):
    parsed, _ = tables
    assert [title.split(", latent")[0] for title in parsed] == list(MODEL_NAMES)
    assert [list(rows) for rows in parsed.values()] == [METHODS] * 3


def test_euler_100_is_the_reference_of_every_ratio(tables):
    for rows in tables[0].values():
        row = rows["Euler-100"]
        assert row["sequential calls"] == "100.0 (1.00x)" and row["evaluations / sample"] == "100.0 (1.00x)"
        assert row["RMS distance to Euler-100 (relative)"] == "0.0000 (0.0%)"
        assert row["CPU wall / sample"].endswith("(1.00x)")


def test_euler_on_k_steps_makes_k_calls_of_one_state(tables):
    for rows in tables[0].values():
        assert rows["Euler-50"]["sequential calls"] == rows["Euler-50"]["evaluations / sample"] == "50.0 (0.50x)"
        assert rows["Euler-10"]["sequential calls"] == rows["Euler-10"]["evaluations / sample"] == "10.0 (0.10x)"


def test_dts_makes_fewer_than_100_calls_and_more_evaluations_than_euler_50(tables):
    # the counts at the diffusion model equal DTS's own statistics (run_model asserts it for every run)
    for rows in tables[0].values():
        calls = float(rows["DTS"]["sequential calls"].split()[0])
        evaluations = float(rows["DTS"]["evaluations / sample"].split()[0])
        assert calls < 100 and evaluations > 50


def test_only_dts_reports_accepted_drafts(tables):
    for rows in tables[0].values():
        assert [rows[method]["drafts accepted"] for method in METHODS[:3]] == ["—"] * 3
        accepted, drafted = rows["DTS"]["drafts accepted"].split()[0].split("/")
        assert 0 <= int(accepted) <= int(drafted) and int(drafted) > 0


def test_success_is_not_applicable_and_the_report_says_why(tables):
    parsed, text = tables
    assert all(row["success"] == "n/a" for rows in parsed.values() for row in rows.values())
    assert f"success: n/a ({SUCCESS_REASON})" in text
