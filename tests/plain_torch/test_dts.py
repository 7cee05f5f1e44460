"""DTS sampler (samplers/methods/dts.py) on analytic denoisers with known answers; no ComfyUI needed."""
import math

import pytest
import torch

from support.dts import (GaussianDenoiser, RecordingModel, TemplateMixtureDenoiser, make_noise, make_templates,
                         reference_dts, reference_euler, target_grid_positions)
from samplers.methods.dts import draft_target_distance, format_stats, sample_dts, target_grid_steps

SIGMA_MAX = 8.0


def fine_sigmas(num_steps=40, sigma_max=SIGMA_MAX, sigma_min=0.0):
    return torch.linspace(sigma_max, sigma_min, num_steps + 1, dtype=torch.float64)


@pytest.fixture
def mixture():
    return TemplateMixtureDenoiser(make_templates())


def run(denoiser, x, sigmas, **options):
    """sample_dts with the paper's distance rule unless a test names its rule (most tests here check that rule)."""
    options.setdefault("rule", "distance")
    stats = {}
    model = RecordingModel(denoiser)
    out = sample_dts(model, x, sigmas, stats=stats, **options)
    return out, stats, model


@pytest.mark.parametrize("draft_stride, target_stride, num_steps", [(10, 2, 40), (7, 3, 30), (4, 4, 20)])
def test_zero_threshold_equals_target_grid_euler(mixture, draft_stride, target_stride, num_steps):
    sigmas = fine_sigmas(num_steps)
    x = make_noise(batch=2)
    out, stats, _ = run(mixture, x, sigmas, draft_stride=draft_stride, target_stride=target_stride, chunk=6,
                        threshold=0.0, increment=0.0)
    expected = reference_euler(mixture, x, sigmas, target_grid_positions(num_steps, draft_stride, target_stride))
    assert torch.equal(out, expected)


def test_zero_threshold_rejects_every_draft_that_differs(mixture):
    _, stats, _ = run(mixture, make_noise(), fine_sigmas(), draft_stride=10, target_stride=2, chunk=6,
                      threshold=0.0, increment=0.0)
    assert stats["accepted"] == [0] * stats["rounds"]
    assert stats["positions"] == [10, 20, 30, 40]


@pytest.mark.parametrize("threshold", [0.0, 1.0, math.inf])
def test_chunk_one_equals_target_grid_euler(mixture, threshold):
    sigmas = fine_sigmas(40)
    x = make_noise(batch=2)
    out, _, _ = run(mixture, x, sigmas, draft_stride=10, target_stride=2, chunk=1, threshold=threshold,
                    increment=0.5)
    assert torch.equal(out, reference_euler(mixture, x, sigmas, target_grid_positions(40, 10, 2)))


@pytest.mark.parametrize("num_steps, draft_stride, target_stride, chunk", [(100, 10, 2, 6), (37, 5, 2, 3),
                                                                            (20, 3, 1, 4)])
def test_infinite_threshold_equals_reference_rounds(mixture, num_steps, draft_stride, target_stride, chunk):
    sigmas = fine_sigmas(num_steps)
    x = make_noise()
    options = dict(draft_stride=draft_stride, target_stride=target_stride, chunk=chunk, threshold=math.inf,
                   increment=1.5)
    out, stats, _ = run(mixture, x, sigmas, **options)
    expected, accepted, positions = reference_dts(mixture, x, sigmas, **options)
    assert torch.equal(out, expected)
    assert stats["accepted"] == accepted == stats["drafted"]
    assert stats["positions"] == positions


def test_finite_threshold_equals_reference_rounds_with_partial_acceptance(mixture):
    sigmas = fine_sigmas(60)
    x = make_noise(seed=1)
    options = dict(draft_stride=6, target_stride=2, chunk=5, threshold=0.02, increment=0.01, metric="l2")
    out, stats, _ = run(mixture, x, sigmas, **options)
    expected, accepted, positions = reference_dts(mixture, x, sigmas, **options)
    # the case is only informative if some round accepted part of its chunk
    assert any(0 < a < d for a, d in zip(stats["accepted"], stats["drafted"])), stats["accepted"]
    assert stats["accepted"] == accepted
    assert stats["positions"] == positions
    assert torch.equal(out, expected)


def test_schedule_ending_above_zero_equals_reference_rounds(mixture):
    sigmas = fine_sigmas(30, sigma_max=3.0, sigma_min=0.5)  # a partial denoise: the last sigma is not 0
    x = make_noise(sigma_max=3.0)
    options = dict(draft_stride=5, target_stride=2, chunk=3, threshold=0.02, increment=0.01)
    out, _, _ = run(mixture, x, sigmas, **options)
    assert torch.equal(out, reference_dts(mixture, x, sigmas, **options)[0])


def test_calls_and_evals_follow_formula(mixture):
    sigmas = fine_sigmas(57)
    batch, draft_stride, target_stride = 3, 10, 3
    x = make_noise(batch=batch)
    _, stats, model = run(mixture, x, sigmas, draft_stride=draft_stride, target_stride=target_stride, chunk=4,
                          threshold=0.02, increment=0.01)
    expected_calls = expected_evals = 0
    start = 0
    for end, drafted in zip(stats["positions"], stats["drafted"]):
        segments = [min(start + (k + 1) * draft_stride, 57) - min(start + k * draft_stride, 57)
                    for k in range(drafted)]
        sub_steps = [math.ceil(length / target_stride) for length in segments]
        expected_calls += drafted + max(sub_steps)
        expected_evals += batch * (drafted + sum(sub_steps))
        start = end
    assert stats["calls"] == len(model.calls) == expected_calls
    assert stats["evals"] == sum(size for size, _, _ in model.calls) == expected_evals


def test_full_acceptance_call_count_matches_paper_formula(mixture):
    # 100 steps, strides 10/2, chunk 6, everything accepted: rounds of 6 and 4 drafts, 5 target sub-steps each
    _, stats, _ = run(mixture, make_noise(), fine_sigmas(100), draft_stride=10, target_stride=2, chunk=6,
                      threshold=math.inf, increment=0.0)
    assert stats["rounds"] == 2
    assert stats["calls"] == (6 + 5) + (4 + 5)
    assert stats["evals"] == (6 + 6 * 5) + (4 + 4 * 5)
    assert stats["target_grid_calls"] == 50 == target_grid_steps(100, 10, 2)


def test_batch_advances_to_smallest_position_every_sample_accepts(mixture):
    sigmas = fine_sigmas(60)
    options = dict(draft_stride=6, target_stride=2, chunk=5, threshold=0.02, increment=0.0)
    samples = [make_noise(seed=seed) for seed in range(5)]
    first_positions = [run(mixture, sample, sigmas, **options)[1]["positions"][0] for sample in samples]
    assert len(set(first_positions)) > 1, "the case needs samples that accept different amounts"
    _, stats, _ = run(mixture, torch.cat(samples), sigmas, **options)
    assert stats["positions"][0] == min(first_positions)


def test_batch_equals_reference_per_sample_rounds(mixture):
    sigmas = fine_sigmas(60)
    x = torch.cat([make_noise(seed=seed) for seed in range(5)])
    options = dict(draft_stride=6, target_stride=2, chunk=5, threshold=0.02, increment=0.01)
    out, stats, _ = run(mixture, x, sigmas, **options)
    expected, accepted, positions = reference_dts(mixture, x, sigmas, **options)
    assert stats["accepted"] == accepted and stats["positions"] == positions
    assert torch.equal(out, expected)


def test_target_calls_carry_per_sample_sigmas(mixture):
    sigmas = fine_sigmas(40)
    _, _, model = run(mixture, make_noise(batch=2), sigmas, draft_stride=10, target_stride=2, chunk=4,
                      threshold=math.inf, increment=0.0)
    first_target_call = model.calls[4]  # after the 4 drafts: the states at fine positions 0, 10, 20, 30
    size, sigma_vector, _ = first_target_call
    assert size == 8
    assert torch.equal(sigma_vector, sigmas[[0, 0, 10, 10, 20, 20, 30, 30]])


@pytest.mark.parametrize("max_parallel", [1, 2, 5])
def test_max_parallel_gives_identical_output(mixture, max_parallel):
    sigmas = fine_sigmas(60)
    x = make_noise(batch=2, seed=5)
    options = dict(draft_stride=6, target_stride=2, chunk=5, threshold=0.02, increment=0.01)
    uncapped, uncapped_stats, _ = run(mixture, x, sigmas, **options)
    capped, capped_stats, model = run(mixture, x, sigmas, max_parallel=max_parallel, **options)
    assert torch.equal(capped, uncapped)
    assert capped_stats["evals"] == uncapped_stats["evals"]
    assert max(size for size, _, _ in model.calls) <= max_parallel * 2


def test_max_parallel_splits_target_calls(mixture):
    _, uncapped, _ = run(mixture, make_noise(), fine_sigmas(100), draft_stride=10, target_stride=2, chunk=6,
                         threshold=math.inf, increment=0.0)
    _, capped, _ = run(mixture, make_noise(), fine_sigmas(100), draft_stride=10, target_stride=2, chunk=6,
                       threshold=math.inf, increment=0.0, max_parallel=4)
    assert uncapped["calls"] == (6 + 5) + (4 + 5)
    assert capped["calls"] == (6 + 5 * 2) + (4 + 5 * 1)


def test_sequential_target_gives_identical_output_with_one_sigma_per_call(mixture):
    sigmas = fine_sigmas(60)
    x = make_noise(batch=2, seed=5)
    options = dict(draft_stride=6, target_stride=2, chunk=5, threshold=0.02, increment=0.01)
    parallel, _, _ = run(mixture, x, sigmas, **options)
    sequential, stats, model = run(mixture, x, sigmas, parallel_target=False, **options)
    assert torch.equal(sequential, parallel)
    assert stats["parallel_target"] is False
    for size, sigma_vector, _ in model.calls:
        assert size == 2 and bool((sigma_vector == sigma_vector[0]).all())


def test_rms_distance_equals_l2_over_sqrt_numel():
    a, b = make_noise(batch=3, seed=1), make_noise(batch=3, seed=2)
    l2 = draft_target_distance(a, b, "l2")
    rms = draft_target_distance(a, b, "rms")
    assert torch.equal(rms, l2 / math.sqrt(a[0].numel()))
    assert torch.allclose(l2.double(), (a - b).flatten(1).norm(dim=1), rtol=1e-6)


def test_rms_run_records_l2_distances_over_sqrt_numel(mixture):
    sigmas, x = fine_sigmas(40), make_noise()
    options = dict(draft_stride=10, target_stride=2, chunk=4, threshold=math.inf, increment=0.0)
    _, l2_stats, _ = run(mixture, x, sigmas, metric="l2", **options)
    _, rms_stats, _ = run(mixture, x, sigmas, metric="rms", **options)
    numel = x[0].numel()
    for l2_round, rms_round in zip(l2_stats["distances"], rms_stats["distances"]):
        assert rms_round == pytest.approx([d / math.sqrt(numel) for d in l2_round], rel=1e-6)


def test_rms_threshold_scaled_by_sqrt_numel_accepts_like_l2(mixture):
    sigmas, x = fine_sigmas(60), make_noise(seed=1)
    numel = x[0].numel()
    options = dict(draft_stride=6, target_stride=2, chunk=5)
    _, l2_stats, _ = run(mixture, x, sigmas, metric="l2", threshold=0.02, increment=0.01, **options)
    _, rms_stats, _ = run(mixture, x, sigmas, metric="rms", threshold=0.02 / math.sqrt(numel),
                          increment=0.01 / math.sqrt(numel), **options)
    assert any(0 < a < d for a, d in zip(l2_stats["accepted"], l2_stats["drafted"])), l2_stats["accepted"]
    assert rms_stats["accepted"] == l2_stats["accepted"]


def test_thresholds_grow_by_increment_per_round(mixture):
    _, stats, _ = run(mixture, make_noise(), fine_sigmas(40), draft_stride=10, target_stride=2, chunk=2,
                      threshold=0.0, increment=1.5)
    assert stats["thresholds"] == [0.0 + 1.5 * r for r in range(stats["rounds"])]


def test_zero_threshold_result_is_closer_to_exact_gaussian_solution_than_draft_euler():
    denoiser = GaussianDenoiser(c=1.0)
    sigmas = fine_sigmas(100, sigma_max=8.0, sigma_min=0.0)
    x = make_noise(batch=2)
    exact = denoiser.exact(x, 8.0, 0.0)
    dts = sample_dts(denoiser, x, sigmas, rule="distance", draft_stride=10, target_stride=2, chunk=6, threshold=0.0,
                     increment=0.0)
    draft_only = reference_euler(denoiser, x, sigmas, list(range(0, 101, 10)))
    dts_error, draft_error = (dts - exact).norm(), (draft_only - exact).norm()
    assert dts_error < 0.5 * draft_error


def test_gaussian_drafts_are_accepted_where_the_trajectory_is_straight():
    # Where s >> c the Gaussian ODE is nearly linear in s: a moderate threshold accepts whole chunks there.
    denoiser = GaussianDenoiser(c=0.05)
    _, stats, _ = run(denoiser, make_noise(), fine_sigmas(100, sigma_max=80.0, sigma_min=1.0), draft_stride=10,
                      target_stride=2, chunk=6, threshold=1.0, increment=0.0)
    assert stats["accepted"][0] == 6


def test_callback_reports_monotone_positions_ending_at_last_step(mixture):
    events = []
    sigmas = fine_sigmas(60)
    out = sample_dts(mixture, make_noise(seed=1), sigmas, callback=events.append, rule="distance", draft_stride=6,
                     target_stride=2, chunk=4, threshold=0.02, increment=0.01)
    assert len(events) > 2
    steps = [event["i"] for event in events]
    assert steps == sorted(set(steps))
    assert steps[-1] == len(sigmas) - 2  # ComfyUI shows i + 1 of len(sigmas) - 1: the bar reaches 100 %
    assert torch.equal(events[-1]["x"], out)
    assert torch.equal(events[-1]["denoised"], out)  # the last step lands on sigma 0: x == denoised


def test_interrupt_runs_before_every_model_call(mixture):
    counted = []
    _, stats, _ = run(mixture, make_noise(), fine_sigmas(40), draft_stride=10, target_stride=2, chunk=3,
                      threshold=0.02, increment=0.01, interrupt=lambda: counted.append(1))
    assert len(counted) == stats["calls"]


def test_interrupt_exception_cancels_sampling(mixture):
    class Cancelled(Exception):
        pass

    model = RecordingModel(mixture)

    def interrupt():
        if len(model.calls) == 3:
            raise Cancelled

    with pytest.raises(Cancelled):
        sample_dts(model, make_noise(), fine_sigmas(40), interrupt=interrupt)
    assert len(model.calls) == 3


def test_extra_args_reach_every_model_call(mixture):
    _, _, model = run(mixture, make_noise(), fine_sigmas(20), extra_args={"seed": 1, "model_options": {}})
    assert all(keys == ["model_options", "seed"] for _, _, keys in model.calls)


def test_stats_line_names_rounds_and_calls(mixture):
    _, stats, _ = run(mixture, make_noise(), fine_sigmas(40), threshold=math.inf)
    line = format_stats(stats)
    assert f"{stats['rounds']} rounds" in line and f"{stats['calls']} sequential model calls" in line


@pytest.mark.parametrize("options, sigmas, message", [
    (dict(draft_stride=2, target_stride=3), None, "target_stride"),
    (dict(draft_stride=0), None, "draft_stride"),
    (dict(target_stride=0), None, "target_stride"),
    (dict(chunk=0), None, "chunk"),
    (dict(threshold=-1.0), None, "threshold"),
    (dict(threshold=float("nan")), None, "threshold"),
    (dict(increment=-0.5), None, "increment"),
    (dict(metric="cosine"), None, "metric"),
    (dict(max_parallel=0), None, "max_parallel"),
    (dict(), torch.tensor([1.0, 2.0, 0.0]), "sigmas"),
    (dict(), torch.tensor([1.0, 1.0, 0.0]), "sigmas"),
    (dict(), torch.tensor([1.0]), "sigmas"),
    (dict(), torch.tensor([1.0, -0.5]), "sigmas"),
])
def test_bad_inputs_raise_errors_naming_the_input(options, sigmas, message):
    calls = []
    sigmas = fine_sigmas(20) if sigmas is None else sigmas
    with pytest.raises((ValueError, TypeError), match=message):
        sample_dts(lambda x, s: calls.append(1) or x, make_noise(), sigmas, **options)
    assert calls == []


def test_non_integer_stride_raises_type_error():
    with pytest.raises(TypeError, match="draft_stride"):
        sample_dts(lambda x, s: x, make_noise(), fine_sigmas(20), draft_stride=2.5)


# --- the tolerance rule (the default): accept d_k when dist(d_k, t_k) <= rtol_r * dist(t_k, d_{k-1}) + atol -------

class DiagonalGaussianDenoiser:
    """Data ~ N(0, diag(v)) with a different variance per value: D(x, s) = x * v / (v + s^2). Linear in x, so a
    model and input scaled by c give states scaled by c; for c a power of two, exactly (every operation of DTS
    and of this denoiser commutes bit for bit with it). Values settle at different noise levels, so drafts and
    targets disagree by amounts that change along the schedule."""

    def __init__(self, shape=(2, 3, 4, 4)):
        self.variance = torch.logspace(-2, 1, math.prod(shape), dtype=torch.float64).reshape(shape)

    def __call__(self, x, sigma):
        s2 = (sigma ** 2).reshape((-1,) + (1,) * (x.ndim - 1))
        return x * self.variance / (self.variance + s2)


@pytest.mark.parametrize("draft_stride, target_stride, num_steps", [(10, 2, 40), (7, 3, 30), (4, 4, 20)])
def test_zero_tolerance_equals_target_grid_euler(mixture, draft_stride, target_stride, num_steps):
    sigmas = fine_sigmas(num_steps)
    x = make_noise(batch=2)
    out, stats, _ = run(mixture, x, sigmas, draft_stride=draft_stride, target_stride=target_stride, chunk=6,
                        rule="tolerance", rtol=0.0, atol=0.0, threshold=0.0375, increment=0.005)
    expected = reference_euler(mixture, x, sigmas, target_grid_positions(num_steps, draft_stride, target_stride))
    assert torch.equal(out, expected)
    assert stats["tolerances"] == [0.0] * stats["rounds"]


def test_tolerance_rule_is_the_default():
    stats = {}
    sample_dts(TemplateMixtureDenoiser(make_templates()), make_noise(), fine_sigmas(20), stats=stats)
    assert stats["rule"] == "tolerance"


@pytest.mark.parametrize("scale", [4.0, 2.0 ** -5, 2.0 ** 10])
def test_tolerance_rule_accepts_the_same_drafts_when_model_and_latent_are_scaled(scale):
    denoiser = DiagonalGaussianDenoiser()
    x = make_noise(batch=2)
    sigmas = fine_sigmas(60)
    options = dict(draft_stride=10, target_stride=2, chunk=4, rule="tolerance", rtol=0.02, atol=0.0,
                   threshold=1.0, increment=0.5)
    out, stats, _ = run(denoiser, x, sigmas, **options)
    scaled_out, scaled_stats, _ = run(denoiser, x * scale, sigmas, **options)
    assert 0 < sum(stats["accepted"]) < sum(stats["drafted"])  # the rule decided something in this run
    assert scaled_stats["accepted"] == stats["accepted"] and scaled_stats["positions"] == stats["positions"]
    assert scaled_stats["ratios"] == stats["ratios"]
    assert torch.equal(scaled_out, out * scale)


def test_distance_rule_depends_on_the_latent_scale():
    # The contrast to the test above: the paper's raw distance accepts more drafts of a smaller latent.
    denoiser = DiagonalGaussianDenoiser()
    x = make_noise(batch=2)
    options = dict(draft_stride=10, target_stride=2, chunk=4, rule="distance", threshold=0.05, increment=0.0)
    _, stats, _ = run(denoiser, x, fine_sigmas(60), **options)
    _, small, _ = run(denoiser, x / 64, fine_sigmas(60), **options)
    assert sum(small["accepted"]) > sum(stats["accepted"])


def test_tolerance_grows_per_round_as_the_distance_threshold_does(mixture):
    _, stats, _ = run(mixture, make_noise(), fine_sigmas(40), draft_stride=10, target_stride=2, chunk=2,
                      rule="tolerance", rtol=0.1, atol=0.25, threshold=2.0, increment=0.5)
    assert stats["tolerances"] == [0.1 * (2.0 + 0.5 * r) / 2.0 for r in range(stats["rounds"])]
    assert stats["thresholds"] == [0.25] * stats["rounds"]


@pytest.mark.parametrize("rule, loose, strict", [("tolerance", dict(rtol=math.inf), dict(rtol=0.0, atol=0.0)),
                                                 ("distance", dict(threshold=math.inf), dict(threshold=0.0))])
def test_call_counts_of_both_rules_at_their_extremes(mixture, rule, loose, strict):
    # 100 fine steps, strides 10 / 2, chunk 6 (docs/dts.md's table): every draft accepted costs 20 calls and 60
    # evaluations, every draft that differs from its target rejected 95 and 270 (a draft identical to its target,
    # here where the mixture's estimate has settled on one template, is accepted at zero tolerance, as at
    # threshold 0); plain Euler on the target grid takes 50.
    options = dict(draft_stride=10, target_stride=2, chunk=6, rule=rule, increment=0.0)
    _, accepted, _ = run(mixture, make_noise(), fine_sigmas(100), **options, **loose)
    _, rejected, _ = run(mixture, make_noise(), fine_sigmas(100), **options, **strict)
    assert (accepted["calls"], accepted["evals"], accepted["accepted"]) == (20, 60, [6, 4])
    assert (rejected["calls"], rejected["evals"]) == (95, 270)
    assert rejected["target_grid_calls"] == 50
