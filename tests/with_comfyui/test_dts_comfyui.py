"""DTS nodes inside a real ComfyUI (in-process, CPU) with a tiny random Wan 2.1 T2V model made by the test.

Skipped unless COMFYUI_PATH points at a ComfyUI checkout.
"""
import logging
import math
from types import SimpleNamespace

import pytest
import torch

from scripts.tiny_comfyui_models import write_dts_tiny_wan


TINY_WAN_NAME = "dts_tiny_wan21_t2v.safetensors"
STEPS = 16  # fine schedule of the tests (users get 100)


@pytest.fixture(scope="module")
def comfy(comfy_nodes):
    """ComfyUI's modules the tests drive, imported once ComfyUI is on the path."""
    import comfy.ldm.wan.model
    import comfy.model_base
    import comfy.model_management
    import comfy.ops
    import comfy.utils
    import comfy_extras.nodes_custom_sampler as custom_sampler
    import comfy_extras.nodes_easycache as easycache
    import comfy_extras.nodes_hunyuan as hunyuan
    import folder_paths

    class Modules:
        pass

    modules = Modules()
    modules.nodes, modules.comfy, modules.custom_sampler = comfy_nodes, comfy, custom_sampler
    modules.easycache, modules.hunyuan, modules.folder_paths = easycache, hunyuan, folder_paths
    return modules


@pytest.fixture(scope="module")
def dts_nodes(comfy_pack):
    """The pack's nodes/dts.py module as ComfyUI's loader imported it."""
    return comfy_pack.nodes.dts


@pytest.fixture(scope="module")
def dts_run(comfy_pack):
    """The pack's nodes/glue/dts_run.py module (DTS inside ComfyUI) as ComfyUI's loader imported it."""
    return comfy_pack.nodes.glue.dts_run


@pytest.fixture(scope="module")
def tiny_wan(comfy, tmp_path_factory):
    """A random Wan 2.1 T2V DiT (dim 128, 2 layers) saved with original Wan key names, loaded by UNETLoader."""
    folder = tmp_path_factory.mktemp("models") / "diffusion_models"
    folder.mkdir()
    write_dts_tiny_wan(folder / TINY_WAN_NAME)
    comfy.folder_paths.add_model_folder_path("diffusion_models", str(folder), is_default=True)
    return comfy.nodes.UNETLoader().load_unet(TINY_WAN_NAME, "default")[0]


def conditioning(seed):
    """CONDITIONING stand-in for umT5 output (no tiny text encoder exists).

    16 tokens instead of umT5's 512 keep the tests fast; unit scale makes the random model's output depend
    clearly on the prompt, which the timestep-range tests need.
    """
    generator = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, 16, 4096, generator=generator), {}]]


@pytest.fixture(scope="module")
def prompts():
    return conditioning(1), conditioning(2)


@pytest.fixture
def latent(comfy):
    return comfy.hunyuan.EmptyHunyuanLatentVideo().generate(64, 64, 5, 1)[0]  # [1, 16, 2, 8, 8]


def fine_sigmas(comfy, model, steps=STEPS):
    return comfy.custom_sampler.BasicScheduler().get_sigmas(model, "simple", steps, 1.0)[0]


def sample_custom_advanced(comfy, model, sampler, sigmas, latent, positive, negative, cfg=1.0, seed=7):
    """SamplerCustomAdvanced with a CFGGuider (cfg 1 by default: one model evaluation per state, faster)."""
    noise = comfy.custom_sampler.RandomNoise().get_noise(seed)[0]
    guider = comfy.custom_sampler.CFGGuider().get_guider(model, positive, negative, cfg)[0]
    return comfy.custom_sampler.SamplerCustomAdvanced().sample(noise, guider, sampler, sigmas, latent)[0]["samples"]


def dts_sampler(dts_nodes, **options):
    """The DTS Sampler node's SAMPLER; the paper's distance rule unless `rule` is given (most tests here use it)."""
    values = dict(draft_stride=4, target_stride=2, chunk=3, threshold=0.0, increment=0.0, metric="rms",
                  max_parallel=0, rule="distance")
    values.update(options)
    return dts_nodes.DTSSampler().get_sampler(unique_id="dts-test", **values)[0]


def euler(comfy):
    return comfy.custom_sampler.KSamplerSelect().get_sampler("euler")[0]


def dts_log_lines(caplog):
    return [record.getMessage() for record in caplog.records if "DTS:" in record.getMessage()]


def test_pack_loads_through_comfyui_loader_and_registers_both_nodes(comfy_pack, comfy_nodes):
    for node_id, display_name in (("DTSSampler", "DTS Sampler"), ("DTSKSampler", "DTS KSampler")):
        assert node_id in comfy_pack.NODE_CLASS_MAPPINGS
        assert comfy_nodes.NODE_CLASS_MAPPINGS[node_id] is comfy_pack.NODE_CLASS_MAPPINGS[node_id]
        assert comfy_nodes.NODE_DISPLAY_NAME_MAPPINGS[node_id] == display_name


def test_every_node_input_has_a_tooltip_and_numbers_have_bounds(dts_nodes):
    for node_class in (dts_nodes.DTSSampler, dts_nodes.DTSKSampler):
        for name, (kind, spec) in node_class.INPUT_TYPES()["required"].items():
            assert spec.get("tooltip"), (node_class.__name__, name)
            if kind in ("INT", "FLOAT"):
                assert "min" in spec and "max" in spec, (node_class.__name__, name)


def test_tiny_wan_checkpoint_loads_as_wan21_through_unet_loader(comfy, tiny_wan):
    assert isinstance(tiny_wan.model, comfy.comfy.model_base.WAN21)
    assert tiny_wan.model.diffusion_model.dim == 128


@pytest.mark.slow
def test_dts_sampler_at_zero_threshold_equals_euler_on_stride_two_sigmas(comfy, dts_nodes, tiny_wan, prompts,
                                                                          latent):
    sigmas = fine_sigmas(comfy, tiny_wan)
    dts = sample_custom_advanced(comfy, tiny_wan, dts_sampler(dts_nodes), sigmas, latent, *prompts, cfg=3.0)
    reference = sample_custom_advanced(comfy, tiny_wan, euler(comfy), sigmas[::2], latent, *prompts, cfg=3.0)
    torch.testing.assert_close(dts, reference, rtol=1e-4, atol=1e-5)


def test_dts_sampler_at_zero_tolerance_equals_euler_on_stride_two_sigmas(comfy, dts_nodes, tiny_wan, prompts,
                                                                          latent):
    sigmas = fine_sigmas(comfy, tiny_wan)
    sampler = dts_sampler(dts_nodes, rule="tolerance", rtol=0.0, atol=0.0, threshold=0.0375, increment=0.005)
    dts = sample_custom_advanced(comfy, tiny_wan, sampler, sigmas, latent, *prompts, cfg=3.0)
    reference = sample_custom_advanced(comfy, tiny_wan, euler(comfy), sigmas[::2], latent, *prompts, cfg=3.0)
    torch.testing.assert_close(dts, reference, rtol=1e-4, atol=1e-5)


def test_a_call_without_the_new_widgets_runs_the_tolerance_rule_at_its_defaults(dts_nodes):
    # What a caller of the V1 method that predates rule / rtol / atol gets (a saved workflow gets the same from
    # the frontend, which fills missing widgets with their defaults).
    # the pack's own copy of the sampler constants (a top-level `samplers` is ComfyUI's comfy/samplers.py there)
    DEFAULT_ATOL, DEFAULT_RTOL = dts_nodes.DEFAULT_ATOL, dts_nodes.DEFAULT_RTOL
    sampler = dts_nodes.DTSSampler().get_sampler(draft_stride=10, target_stride=2, chunk=6, threshold=0.0375,
                                                 increment=0.005, metric="rms", max_parallel=0, auto=False)[0]
    assert (sampler.extra_options["rule"], sampler.extra_options["rtol"], sampler.extra_options["atol"]) == (
        "tolerance", DEFAULT_RTOL, DEFAULT_ATOL)


@pytest.mark.slow
@pytest.mark.parametrize("threshold", [0.0, math.inf])
def test_one_position_at_a_time_equals_batched_target(comfy, dts_nodes, tiny_wan, prompts, latent, threshold):
    sigmas = fine_sigmas(comfy, tiny_wan)
    batched_sampler = dts_sampler(dts_nodes, threshold=threshold)
    sequential_sampler = dts_with_forced_target_mode(dts_nodes, False, threshold=threshold)
    batched = sample_custom_advanced(comfy, tiny_wan, batched_sampler, sigmas, latent, *prompts)
    sequential = sample_custom_advanced(comfy, tiny_wan, sequential_sampler, sigmas, latent, *prompts)
    torch.testing.assert_close(sequential, batched, rtol=1e-4, atol=1e-5)


def timestep_range_prompts(comfy, prompts):
    """Prompt A for the first half of the schedule, prompt B for the second (a mixed-sigma hazard)."""
    set_range = comfy.nodes.ConditioningSetTimestepRange().set_range
    first = set_range(conditioning(3), 0.0, 0.5)[0]
    second = set_range(conditioning(4), 0.5, 1.0)[0]
    return comfy.nodes.ConditioningCombine().combine(first, second)[0], prompts[1]


def dts_with_forced_target_mode(dts_nodes, parallel_target, **options):
    sampler = dts_sampler(dts_nodes, **options)
    sampler.extra_options["parallel_target"] = parallel_target
    return sampler


# Threshold +inf: every draft is accepted, so the targets of later draft states (whose sigmas differ from the
# batch's first one) decide the result. (At threshold 0 only the first state's target is ever kept.)
@pytest.mark.slow
def test_timestep_range_conditioning_is_evaluated_one_position_at_a_time(comfy, dts_nodes, tiny_wan, prompts,
                                                                         latent, caplog):
    caplog.set_level(logging.INFO)
    positive, negative = timestep_range_prompts(comfy, prompts)
    sigmas = fine_sigmas(comfy, tiny_wan)
    detected = sample_custom_advanced(comfy, tiny_wan, dts_sampler(dts_nodes, threshold=math.inf), sigmas,
                                      latent, positive, negative)
    assert "one at a time (conditioning timestep range)" in dts_log_lines(caplog)[-1]
    sequential = sample_custom_advanced(comfy, tiny_wan, dts_with_forced_target_mode(dts_nodes, False,
                                                                                     threshold=math.inf),
                                        sigmas, latent, positive, negative)
    assert torch.equal(detected, sequential)


def test_new_dts_inputs_come_after_every_older_one_with_their_defaults(dts_nodes):
    # saved workflows are positional: the widgets added for auto mode, then for the tolerance rule, come after
    # every older one
    # the pack's own copy of the sampler constants (a top-level `samplers` is ComfyUI's comfy/samplers.py there)
    DEFAULT_ATOL, DEFAULT_RTOL = dts_nodes.DEFAULT_ATOL, dts_nodes.DEFAULT_RTOL
    for node_class in (dts_nodes.DTSSampler, dts_nodes.DTSKSampler):
        required = node_class.INPUT_TYPES()["required"]
        assert list(required)[-5:] == ["max_parallel", "auto", "rule", "rtol", "atol"]
        assert required["auto"][0] == "BOOLEAN" and required["auto"][1]["default"] is False
        assert required["rule"][1]["default"] == "tolerance"
        assert (required["rtol"][1]["default"], required["atol"][1]["default"]) == (DEFAULT_RTOL, DEFAULT_ATOL)


@pytest.mark.slow
def test_auto_with_timestep_range_conditioning_runs_target_grid_euler(comfy, dts_nodes, tiny_wan, prompts, latent,
                                                                      caplog):
    # A one-at-a-time target never beats plain Euler: auto runs Euler on the target grid, the threshold-0 result.
    caplog.set_level(logging.INFO)
    positive, negative = timestep_range_prompts(comfy, prompts)
    sigmas = fine_sigmas(comfy, tiny_wan)
    auto = sample_custom_advanced(comfy, tiny_wan, dts_sampler(dts_nodes, threshold=math.inf, auto=True), sigmas,
                                  latent, positive, negative)
    line = dts_log_lines(caplog)[-1]
    assert "auto: plain Euler" in line and "one draft position per call" in line
    reference = sample_custom_advanced(comfy, tiny_wan, dts_sampler(dts_nodes, threshold=0.0), sigmas, latent,
                                       positive, negative)
    assert torch.equal(auto, reference)


@pytest.mark.slow
def test_timestep_range_conditioning_breaks_a_forced_batched_target(comfy, dts_nodes, tiny_wan, prompts, latent):
    # Why the detection exists: the batched target applies the first state's prompt to every state.
    positive, negative = timestep_range_prompts(comfy, prompts)
    sigmas = fine_sigmas(comfy, tiny_wan)
    batched, sequential = (
        sample_custom_advanced(comfy, tiny_wan, dts_with_forced_target_mode(dts_nodes, mode, threshold=math.inf),
                               sigmas, latent, positive, negative) for mode in (True, False))
    assert not torch.allclose(batched, sequential, rtol=1e-3, atol=1e-3)


@pytest.mark.slow
def test_denoise_mask_is_detected_and_matches_euler(comfy, dts_nodes, tiny_wan, prompts, latent, caplog):
    caplog.set_level(logging.INFO)
    mask = torch.zeros(1, 64, 64)
    mask[:, :, 32:] = 1.0
    masked = comfy.nodes.SetLatentNoiseMask().set_mask(
        {"samples": torch.randn(latent["samples"].shape, generator=torch.Generator().manual_seed(5))}, mask)[0]
    sigmas = fine_sigmas(comfy, tiny_wan)
    dts = sample_custom_advanced(comfy, tiny_wan, dts_sampler(dts_nodes), sigmas, masked, *prompts)
    reference = sample_custom_advanced(comfy, tiny_wan, euler(comfy), sigmas[::2], masked, *prompts)
    torch.testing.assert_close(dts, reference, rtol=1e-4, atol=1e-5)
    assert "one at a time (denoise mask)" in dts_log_lines(caplog)[-1]


@pytest.mark.parametrize("cache_node", ["EasyCacheNode", "LazyCacheNode"])
def test_easycache_model_is_refused_with_an_error_naming_it(comfy, dts_nodes, tiny_wan, prompts, latent,
                                                            cache_node):
    cached = getattr(comfy.easycache, cache_node).execute(tiny_wan, 0.2, 0.15, 0.95, False).result[0]
    with pytest.raises(ValueError, match="EasyCache or LazyCache"):
        sample_custom_advanced(comfy, cached, dts_sampler(dts_nodes), fine_sigmas(comfy, cached), latent, *prompts)


def fake_sampler_model(*cond_dicts):
    """Stands in for the KSamplerX0Inpaint -> guider chain, holding processed positive conditioning."""
    return SimpleNamespace(inner_model=SimpleNamespace(conds={"positive": list(cond_dicts), "negative": [{}]}))


SCHEDULE = torch.tensor([1.0, 0.9, 0.7, 0.4, 0.0])


@pytest.mark.parametrize("cond, expected", [
    ({}, []),
    ({"timestep_start": 1.0, "timestep_end": 0.0}, []),  # covers the whole schedule: always active
    ({"timestep_start": 0.8, "timestep_end": 0.0}, ["conditioning timestep range"]),
    ({"timestep_start": 1.0, "timestep_end": 0.5}, ["conditioning timestep range"]),
    ({"control": object()}, ["ControlNet"]),
    ({"hooks": object()}, ["conditioning hooks"]),
])
def test_mixed_sigma_hazards_in_conditioning(dts_run, cond, expected):
    assert dts_run.mixed_sigma_hazards(fake_sampler_model(cond), {}, SCHEDULE) == expected


def test_mixed_sigma_hazards_from_denoise_mask_and_wrappers(dts_run):
    extra_args = {"denoise_mask": torch.ones(1, 1, 1, 8, 8),
                  "model_options": {"transformer_options": {"wrappers": {"diffusion_model": {"cache": [print]}}}}}
    assert dts_run.mixed_sigma_hazards(fake_sampler_model({}), extra_args, SCHEDULE) == [
        "denoise mask", "model wrapper"]
    harmless = {"model_options": {"transformer_options": {"wrappers": {"outer_sample": {"x": [print]}}}}}
    assert dts_run.mixed_sigma_hazards(fake_sampler_model({}), harmless, SCHEDULE) == []


@pytest.mark.slow
def test_model_wrapper_is_detected(comfy, dts_nodes, tiny_wan, prompts, latent, caplog):
    caplog.set_level(logging.INFO)
    wrapped = tiny_wan.clone()
    wrapped.set_model_unet_function_wrapper(lambda apply_model, args: apply_model(args["input"], args["timestep"],
                                                                                  **args["c"]))
    sample_custom_advanced(comfy, wrapped, dts_sampler(dts_nodes), fine_sigmas(comfy, wrapped), latent, *prompts)
    assert "one at a time (model wrapper)" in dts_log_lines(caplog)[-1]


@pytest.mark.slow
def test_plain_conditioning_keeps_the_batched_target(comfy, dts_nodes, tiny_wan, prompts, latent, caplog):
    caplog.set_level(logging.INFO)
    sample_custom_advanced(comfy, tiny_wan, dts_sampler(dts_nodes), fine_sigmas(comfy, tiny_wan), latent, *prompts)
    assert "one at a time" not in dts_log_lines(caplog)[-1]


def dts_ksampler(dts_nodes, model, prompts, latent, **options):
    values = dict(seed=7, steps=STEPS, cfg=3.0, scheduler="simple", denoise=1.0, draft_stride=4, target_stride=2,
                  chunk=3, threshold=0.02, increment=0.005, metric="rms", max_parallel=0, rule="distance")
    values.update(options)
    return dts_nodes.DTSKSampler().sample(model=model, positive=prompts[0], negative=prompts[1],
                                          latent_image=latent, unique_id="dts-ksampler-test", **values)[0]


@pytest.mark.slow
def test_dts_ksampler_runs_with_cfg_and_logs_its_statistics(comfy, dts_nodes, tiny_wan, prompts, latent, caplog):
    caplog.set_level(logging.INFO)
    out = dts_ksampler(dts_nodes, tiny_wan, prompts, latent, cfg=5.0)["samples"]
    assert out.shape == latent["samples"].shape and torch.isfinite(out).all()
    assert not torch.equal(out, dts_ksampler(dts_nodes, tiny_wan, prompts, latent, cfg=1.0)["samples"])
    assert f"DTS: {STEPS} fine steps" in dts_log_lines(caplog)[-1]


@pytest.mark.slow
def test_dts_ksampler_equals_sampler_custom_advanced_with_dts_sampler(comfy, dts_nodes, tiny_wan, prompts, latent):
    node = dts_ksampler(dts_nodes, tiny_wan, prompts, latent)["samples"]
    sampler = dts_sampler(dts_nodes, threshold=0.02, increment=0.005)
    custom = sample_custom_advanced(comfy, tiny_wan, sampler, fine_sigmas(comfy, tiny_wan), latent, *prompts,
                                    cfg=3.0)
    assert torch.equal(node, custom)


@pytest.mark.slow
def test_progress_bar_advances_monotonically_to_the_total(comfy, dts_nodes, tiny_wan, prompts, latent):
    updates = []
    utils = comfy.comfy.utils
    previous_hook = utils.PROGRESS_BAR_HOOK
    utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: updates.append((value, total)))
    try:
        dts_ksampler(dts_nodes, tiny_wan, prompts, latent)
    finally:
        utils.set_progress_bar_global_hook(previous_hook)
    values = [value for value, _ in updates]
    assert len(values) > 1 and values == sorted(values)
    assert updates[-1] == (STEPS, STEPS)


@pytest.mark.slow
def test_statistics_event_reaches_the_frontend_as_strict_json(comfy, dts_nodes, tiny_wan, prompts, latent,
                                                               monkeypatch):
    import json
    import sys

    # A stand-in for ComfyUI's `server` module (importing the real one starts the web app's imports).
    sent = []
    fake_server = SimpleNamespace(client_id="client", send_sync=lambda event, data, sid=None: sent.append((event,
                                                                                                          data)))
    monkeypatch.setitem(sys.modules, "server", SimpleNamespace(PromptServer=SimpleNamespace(instance=fake_server)))
    dts_ksampler(dts_nodes, tiny_wan, prompts, latent, steps=8, threshold=math.inf)
    assert len(sent) == 1
    event, payload = sent[0]
    assert event == "speculative_video.stats"
    assert payload["node"] == "dts-ksampler-test" and payload["kind"] == "dts"
    stats = payload["stats"]
    for key in ("calls", "evals", "rounds", "accepted", "thresholds", "fine_steps", "draft_stride", "target_stride",
                "chunk", "seconds"):
        assert key in stats, key
    assert stats["fine_steps"] == 8 and stats["thresholds"] == ["inf"]  # JSON has no Infinity
    json.dumps(payload, allow_nan=False)


def test_cancel_stops_sampling(comfy, dts_nodes, tiny_wan, prompts, latent):
    model_management = comfy.comfy.model_management
    model_management.interrupt_current_processing(True)
    try:
        with pytest.raises(model_management.InterruptProcessingException):
            dts_ksampler(dts_nodes, tiny_wan, prompts, latent)
    finally:
        model_management.interrupt_current_processing(False)


def test_a_base_exception_interrupt_mid_run_propagates_and_the_next_run_equals_a_clean_one(
        comfy, dts_nodes, tiny_wan, prompts, latent, monkeypatch):
    """Newer ComfyUI's interrupt derives from BaseException: nothing in the pack may catch, delay or re-label it."""
    class Interrupted(BaseException):
        pass

    clean = dts_ksampler(dts_nodes, tiny_wan, prompts, latent)["samples"]
    calls = []

    def interrupt_at_the_fourth_check():
        calls.append(1)
        if len(calls) == 4:
            raise Interrupted

    monkeypatch.setattr(comfy.comfy.model_management, "throw_exception_if_processing_interrupted",
                        interrupt_at_the_fourth_check)
    with pytest.raises(Interrupted):
        dts_ksampler(dts_nodes, tiny_wan, prompts, latent)
    assert len(calls) == 4  # raised mid-run, propagated at once
    monkeypatch.undo()
    assert torch.equal(dts_ksampler(dts_nodes, tiny_wan, prompts, latent)["samples"], clean)


def test_steps_the_scheduler_cannot_make_strictly_decreasing_are_refused_naming_steps_and_scheduler(
        dts_nodes, tiny_wan, prompts, latent, monkeypatch):
    import comfy.model_management

    levels = len(tiny_wan.get_model_object("model_sampling").sigmas)
    calls = []
    monkeypatch.setattr(comfy.model_management, "throw_exception_if_processing_interrupted", lambda: calls.append(1))
    with pytest.raises(ValueError, match=rf"steps: scheduler 'simple' cannot make {levels + 1} strictly decreasing "
                                         rf"noise levels for this model \(this model's discrete schedule has {levels} "
                                         r"noise levels\): sigmas must be strictly decreasing .*Lower steps"):
        dts_ksampler(dts_nodes, tiny_wan, prompts, latent, steps=levels + 1)
    assert calls == []  # refused before the first model call


def test_bad_strides_raise_an_error_naming_the_input(dts_nodes):
    with pytest.raises(ValueError, match="target_stride"):
        dts_nodes.DTSSampler().get_sampler(draft_stride=2, target_stride=4, chunk=6, threshold=0.0375,
                                           increment=0.005, metric="rms", max_parallel=0)


@pytest.mark.slow
def test_auto_remembers_its_measurements_per_loaded_model(comfy, dts_nodes, dts_run, tiny_wan, prompts, latent,
                                                          monkeypatch):
    # From the fourth run of the same model and latent shape on, auto takes the measured cost of a 2-position
    # call from the earlier runs instead of probing it (a server keeps one memory per loaded model). What it
    # then chooses depends on this machine's timings; the stats say what it took from the memory.
    import importlib

    AUTO_REMEMBERED = importlib.import_module(dts_run.sample_dts.__module__).AUTO_REMEMBERED  # the pack's copy
    reported = []
    monkeypatch.setattr(dts_run, "report_stats", lambda kind, node_id, stats, line: reported.append(stats))
    sigmas = fine_sigmas(comfy, tiny_wan, steps=100)  # long enough for a probe within the measuring budget
    dts_run.AUTO_MEMORY.clear()
    for _ in range(AUTO_REMEMBERED + 1):
        sample_custom_advanced(comfy, tiny_wan, dts_sampler(dts_nodes, threshold=0.0, auto=True), sigmas,
                               latent, *prompts)
    autos = [stats["auto"] for stats in reported]
    assert [a["remembered"] for a in autos[:AUTO_REMEMBERED]] == [[]] * AUTO_REMEMBERED
    assert 2 in autos[-1]["remembered"]
    (memory,) = dts_run.AUTO_MEMORY.values()
    (shape, remembered), = memory.items()
    assert shape[0] == tuple(latent["samples"].shape) and len(remembered["cost_ratios"][2]) >= AUTO_REMEMBERED
