"""DTS auto mode (samplers/methods/dts.py, `auto=True`) on synthetic models whose per-call cost is a known function
of the batch size, timed by a fake clock: the chosen chunk, the call counts and the fallback are deterministic."""
import math

import pytest
import torch

from support.dts import (TemplateMixtureDenoiser, make_noise, make_templates, reference_euler,
                         target_grid_positions)
from samplers.methods.dts import (AUTO_BUDGET, AUTO_REMEMBER_LAST, AUTO_REMEMBERED, AutoPlanner, format_stats,
                                   sample_dts, target_grid_steps)


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class CostedModel:
    """A denoiser whose every call advances the fake clock by cost(positions), positions = call batch / batch."""

    def __init__(self, denoiser, clock, cost, batch):
        self.denoiser, self.clock, self.cost, self.batch = denoiser, clock, cost, batch
        self.sizes = []

    def __call__(self, x, sigma):
        positions = x.shape[0] // self.batch
        self.sizes.append(positions)
        self.clock.now += self.cost(positions)
        return self.denoiser(x, sigma)


def linear(positions):  # a CPU: a batch costs as much as its samples one by one
    return 1.0 * positions


def flat_up_to(capacity):  # a GPU with headroom up to `capacity` positions, then linear
    return lambda positions: max(1.0, positions / capacity)


def fine_sigmas(num_steps):
    return torch.linspace(8.0, 0.0, num_steps + 1, dtype=torch.float64)


def run_auto(cost, num_steps=100, batch=1, clock=None, **options):
    options = dict(dict(draft_stride=10, target_stride=2, chunk=6, threshold=math.inf, increment=0.0,
                        rule="distance"), **options)
    clock = FakeClock() if clock is None else clock
    denoiser = TemplateMixtureDenoiser(make_templates())
    model = CostedModel(denoiser, clock, cost, batch)
    x = make_noise(batch=batch)
    stats = {}
    out = sample_dts(model, x, fine_sigmas(num_steps), stats=stats, auto=True, clock=clock, **options)
    return out, stats, model, clock, denoiser, x


def euler_reference(denoiser, x, num_steps, draft_stride=10, target_stride=2):
    return reference_euler(denoiser, x, fine_sigmas(num_steps),
                           target_grid_positions(num_steps, draft_stride, target_stride))


@pytest.mark.parametrize("batch", [1, 2])
def test_linear_cost_falls_back_to_exact_target_grid_euler(batch):
    out, stats, model, clock, denoiser, x = run_auto(linear, batch=batch)
    assert torch.equal(out, euler_reference(denoiser, x, 100))
    auto = stats["auto"]
    assert auto["choice"] == "euler" and auto["chunks"] == []
    assert "plain Euler" in auto["reason"] and "2: 2.00" in auto["reason"]
    # the first segment's 5 single calls measure c(1); one probe of 2 positions shows batching does not pay
    assert auto["probe_calls"] == 1 and auto["euler_segments"] == 10
    assert stats["calls"] == 50 + 1 and model.sizes.count(2) == 1 and stats["rounds"] == 0
    # wall time (fake clock): plain Euler's 50 calls plus the probe, within the 5 % measuring budget
    assert clock.now == 52.0 <= (1 + AUTO_BUDGET) * 50


@pytest.mark.parametrize("num_steps", [20, 40, 60, 100, 200])
def test_linear_cost_never_exceeds_euler_by_more_than_the_budget(num_steps):
    out, stats, _, clock, denoiser, x = run_auto(linear, num_steps=num_steps)
    euler_calls = target_grid_steps(num_steps, 10, 2)
    assert torch.equal(out, euler_reference(denoiser, x, num_steps))
    assert clock.now <= (1 + AUTO_BUDGET) * euler_calls
    if 2 * 1.0 > AUTO_BUDGET * euler_calls:  # a probe would not fit the budget: no probe at all
        assert stats["auto"]["probe_calls"] == 0 and "budget" in stats["auto"]["reason"]


def test_flat_cost_runs_dts_with_the_largest_chunk():
    out, stats, model, clock, _, _ = run_auto(flat_up_to(8))
    auto = stats["auto"]
    assert auto["choice"] == "dts" and auto["chunks"] == [2, 6, 6]
    # 5 measuring Euler calls to position 10, one probe of 2, a first round of chunk 2 that measures the
    # acceptance (to 30), then chunk 6 (to 90) and the last segment (one draft position, to 100)
    assert auto["euler_segments"] == 1 and auto["probe_calls"] == 1
    assert stats["positions"] == [30, 90, 100]
    assert stats["calls"] == 5 + 1 + (2 + 5) + (6 + 5) + (1 + 5) == 30
    assert max(model.sizes) == 6
    assert clock.now == 30.0 < 50.0  # each call costs one unit: time follows the sequential calls


def test_flat_cost_with_every_draft_judged_equals_non_auto_dts_after_the_first_segment():
    # With an infinite threshold, auto (chunk 6 chosen) gives exactly DTS started from the first Euler segment.
    out, stats, _, _, denoiser, x = run_auto(flat_up_to(8))
    sigmas = fine_sigmas(100)
    start = reference_euler(denoiser, x, sigmas, [0, 2, 4, 6, 8, 10])
    rest = sample_dts(denoiser, start, sigmas[10:], draft_stride=10, target_stride=2, chunk=6, threshold=math.inf,
                      increment=0.0, rule="distance")
    assert torch.equal(out, rest)


def test_capacity_three_measures_the_chunk_and_keeps_it_while_it_pays():
    _, stats, model, clock, _, _ = run_auto(flat_up_to(3))
    auto = stats["auto"]
    assert auto["choice"] == "dts" and auto["chunks"] == [2, 6, 6]
    # measured: single calls, the probe and the first round (2), the second round (6)
    assert auto["cost_ratios"] == {"1": 1.0, "2": 1.0, "6": 2.0}
    # Euler would take 50 units; 5 + 1 + (2 + 5 * 1) + (6 + 5 * 2) + (1 + 5 * 1) = 35
    assert clock.now == 35.0


def test_capacity_two_chooses_dts_while_linear_from_two_keeps_the_choice_honest():
    _, stats, _, clock, _, _ = run_auto(flat_up_to(2))
    # a chunk-K round costs K + 5 * K / 2 units for K segments (3.5 per segment) against Euler's 5
    assert stats["auto"]["choice"] == "dts"
    assert clock.now < 50.0


def test_rejections_make_auto_fall_back_to_euler_and_the_result_stays_target_grid_euler():
    # Threshold 0 rejects every draft: the first DTS round (chunk 2, while p is only the prior) advances one
    # segment, the observed acceptance (1/2) makes every chunk slower than Euler, and the rest of the grid is
    # plain Euler: still exactly Euler's result, at the price of the probe and the round's two draft calls.
    out, stats, _, clock, denoiser, x = run_auto(flat_up_to(8), threshold=0.0)
    auto = stats["auto"]
    assert auto["chunks"] == [2] and auto["choice"] == "euler"
    assert "acceptance 0.50" in auto["reason"]
    assert torch.equal(out, euler_reference(denoiser, x, 100))
    assert stats["calls"] == 5 + 1 + (2 + 5) + 8 * 5 == 53


def test_one_at_a_time_target_is_never_chosen():
    out, stats, model, clock, denoiser, x = run_auto(flat_up_to(8), parallel_target=False)
    assert stats["auto"]["choice"] == "euler" and stats["auto"]["probe_calls"] == 0
    assert "one draft position per call" in stats["auto"]["reason"]
    assert set(model.sizes) == {1} and clock.now == 50.0
    assert torch.equal(out, euler_reference(denoiser, x, 100))


def test_max_parallel_caps_the_measured_and_chosen_group():
    _, stats, model, _, _, _ = run_auto(flat_up_to(8), max_parallel=3, chunk=6)
    assert stats["auto"]["choice"] == "dts"
    assert max(model.sizes) == 3


def test_equal_strides_leave_nothing_to_batch():
    _, stats, model, _, _, _ = run_auto(flat_up_to(8), draft_stride=2, target_stride=2)
    assert stats["auto"]["choice"] == "euler" and "nothing to batch" in stats["auto"]["reason"]
    assert set(model.sizes) == {1}


def test_a_schedule_shorter_than_one_draft_segment_is_plain_euler():
    out, stats, _, clock, denoiser, x = run_auto(flat_up_to(8), num_steps=8)
    assert stats["auto"]["choice"] == "euler" and "first (measuring)" in stats["auto"]["reason"]
    assert torch.equal(out, euler_reference(denoiser, x, 8)) and clock.now == 4.0
    assert "auto: plain Euler" in format_stats(stats)


def test_auto_off_records_no_auto_stats():
    stats = {}
    sample_dts(TemplateMixtureDenoiser(make_templates()), make_noise(), fine_sigmas(20), stats=stats)
    assert "auto" not in stats


def test_planner_interpolates_and_extrapolates_measured_costs():
    planner = AutoPlanner(num_steps=100, draft_stride=10, target_stride=2, chunk=8, max_parallel=None,
                          parallel_target=True)
    for seconds in (3.0, 1.0, 1.0):  # the median ignores a slow first call
        planner.observe(1, seconds)
    planner.observe(4, 2.0)
    assert planner.cost(1) == 1.0 and planner.cost(4) == 2.0
    assert planner.cost(2) == pytest.approx(1.0 + 1.0 / 3.0)
    assert planner.cost(8) == 4.0  # beyond the largest measured size: in proportion


@pytest.mark.parametrize("cost", [linear, flat_up_to(8)])
def test_auto_callback_reports_monotone_positions_ending_at_the_last_step(cost):
    seen = []
    run_auto(cost, callback=lambda info: seen.append(info["i"]), disable=True)
    assert seen == sorted(seen) and len(set(seen)) == len(seen) and seen[-1] == 99


def test_memory_skips_the_probe_after_enough_runs_and_keeps_the_exact_euler_result():
    memory = {}
    clock = FakeClock()
    probes = []
    for run in range(AUTO_REMEMBERED + 2):
        start = clock.now
        out, stats, model, _, denoiser, x = run_auto(linear, clock=clock, auto_memory=memory)
        probes.append(stats["auto"]["probe_calls"])
        assert torch.equal(out, euler_reference(denoiser, x, 100))
        assert stats["auto"]["choice"] == "euler"
    # the first AUTO_REMEMBERED runs probe 2 positions once each; later runs take the remembered ratio
    assert probes == [1] * AUTO_REMEMBERED + [0, 0]
    assert clock.now - start == 50.0  # the last run: exactly plain Euler's 50 calls
    assert stats["auto"]["remembered"] == [2] and "remembered from earlier runs" in stats["auto"]["reason"]
    (key, remembered), = memory.items()
    assert key == ((1,) + tuple(x.shape[1:]), str(x.dtype), str(x.device))
    assert remembered == {"cost_ratios": {2: [2.0] * AUTO_REMEMBERED}}  # plain Euler judged no draft


def test_memory_is_per_input_shape_and_keeps_the_last_ratios():
    memory = {}
    for _ in range(AUTO_REMEMBERED):
        run_auto(linear, auto_memory=memory)
    _, stats, _, _, _, _ = run_auto(linear, batch=2, auto_memory=memory)
    assert stats["auto"]["probe_calls"] == 1 and len(memory) == 2  # another shape is measured afresh
    for _ in range(AUTO_REMEMBER_LAST + 3):
        planner = AutoPlanner(num_steps=100, draft_stride=10, target_stride=2, chunk=6, max_parallel=None,
                              parallel_target=True, memory=memory.setdefault("k", {}), options="o")
        planner.observe(1, 1.0)
        planner.observe(2, 1.5)
        planner.remember()
    assert memory["k"]["cost_ratios"][2] == [1.5] * AUTO_REMEMBER_LAST


def test_remembered_cheap_batches_choose_dts_without_probing():
    memory = {}
    for _ in range(AUTO_REMEMBERED):
        run_auto(flat_up_to(8), auto_memory=memory)
    _, stats, model, _, _, _ = run_auto(flat_up_to(8), auto_memory=memory)
    auto = stats["auto"]
    assert auto["choice"] == "dts" and auto["probe_calls"] == 0 and auto["remembered"] == [2, 6]  # what the first decision took from the memory
    assert stats["calls"] == 5 + (6 + 5) + (3 + 5)  # the measuring segment, then the same rounds, no probe


def test_memory_carries_the_acceptance_of_earlier_runs_with_the_same_options():
    # Threshold 0 rejects every draft: the first run pays for one DTS round before it falls back; a later run
    # starts from that acceptance and runs plain Euler at once. Other options start afresh.
    memory = {}
    _, first, _, _, _, _ = run_auto(flat_up_to(8), threshold=0.0, auto_memory=memory)
    assert first["auto"]["chunks"] == [2] and first["auto"]["choice"] == "euler"
    out, second, model, _, denoiser, x = run_auto(flat_up_to(8), threshold=0.0, auto_memory=memory)
    assert second["auto"]["chunks"] == [] and second["auto"]["acceptance"] == 0.5
    assert torch.equal(out, euler_reference(denoiser, x, 100))
    (remembered,) = memory.values()
    assert remembered["acceptance"] == {(10, 2, 0.0, 0.0, "l2", "distance", 0.01, 0.0): [0, 1]}  # the first run judged one draft
    _, other, _, _, _, _ = run_auto(flat_up_to(8), threshold=math.inf, auto_memory=memory)
    assert other["auto"]["chunks"] == [2, 6, 6]
