"""The toy world, its success check and router score, the shipped tiny models, and the benchmark's tables."""
import importlib.util
import os

import numpy as np
import pytest
import torch

from bench.check import IdentityDecoder, WorldRouter, analyse, is_success
from bench.world import (DEFAULT_WORLD, MAX_OBJECTS, MULTIMODAL_WORLD, SPRITE_SIZE, TEXT_DIM, Condition, WorldObject,
                         bounce_track, latent_to_frames, object_track, render, sample_batch, sample_clip)
from support.bench import frozen, multimodal_target, shipped_models, shuffled, wrong_colours, wrong_kinds

SEEDS = range(12)


# ---------------------------------------------------------------------------------------------- world

def test_world_generator_is_deterministic_per_seed():
    condition_a, clip_a = sample_clip(7)
    condition_b, clip_b = sample_clip(7)
    assert torch.equal(clip_a, clip_b)
    assert torch.equal(condition_a.tokens(), condition_b.tokens())


def test_world_generator_differs_between_seeds():
    assert not torch.equal(sample_clip(7)[1], sample_clip(8)[1])


def test_training_batches_are_deterministic_per_seed():
    clips_a, context_a = sample_batch(np.random.default_rng(3), 4)
    clips_b, context_b = sample_batch(np.random.default_rng(3), 4)
    assert torch.equal(clips_a, clips_b) and torch.equal(context_a, context_b)


def test_clip_shape_and_range_match_the_world():
    _, clip = sample_clip(0)
    world = DEFAULT_WORLD
    assert clip.shape == (world.channels, world.frames, world.height, world.width)
    assert clip.min() == -1.0 and clip.max() == 1.0


def test_bounce_track_reflects_off_both_walls():
    assert bounce_track(1, -1, 6, 4).tolist() == [1, 0, 1, 2, 3, 4]
    assert bounce_track(3, 1, 5, 4).tolist() == [3, 4, 3, 2, 1]


def test_condition_tokens_encode_colour_kind_velocity_and_start_in_every_frame():
    frames = DEFAULT_WORLD.frames
    tokens = Condition([WorldObject("blue", "plus", (1, -1), start=(2, 5))]).tokens()
    assert tokens.shape == (MAX_OBJECTS * frames, TEXT_DIM)
    assert (tokens[:frames, 0] == 1).all() and tokens[frames:].abs().sum() == 0  # one present slot, two empty ones
    assert (tokens[:frames, 1 + 2] == 1).all()  # blue is the third colour
    assert (tokens[:frames, 1 + 6 + 1] == 1).all()  # plus is the second kind
    assert (tokens[:frames, 9] == 1).all() and (tokens[:frames, 10] == -1).all()
    assert torch.allclose(tokens[:frames, 11:13], torch.tensor([2 / 13, 5 / 13]).expand(frames, 2))


def test_condition_tokens_give_each_frame_its_index_and_the_conditioned_position():
    obj = WorldObject("red", "square", (1, 1), start=(12, 2))
    tokens = Condition([obj]).tokens()
    frame_one_hot, x_one_hot, y_one_hot = tokens[:12, 13:25], tokens[:12, 25:39], tokens[:12, 39:53]
    assert torch.equal(frame_one_hot, torch.eye(12))
    track = object_track(obj)  # x: 12, 13, 12, 11, ... (a bounce); y: 2, 3, 4, ...
    assert x_one_hot.argmax(dim=1).tolist() == track[:, 0].tolist() == [12, 13] + list(range(12, 2, -1))
    assert y_one_hot.argmax(dim=1).tolist() == track[:, 1].tolist()
    assert x_one_hot.sum() == 12 and y_one_hot.sum() == 12
    assert torch.allclose(tokens[:12, 53:55], torch.from_numpy(track).float() / 13)
    assert tokens[:, 55:].abs().sum() == 0


def test_condition_tokens_need_a_start_position():
    with pytest.raises(ValueError, match="no start position"):
        Condition([WorldObject("blue", "plus", (1, -1))]).tokens()
    with pytest.raises(ValueError, match="start must be in 0..13"):
        Condition([WorldObject("blue", "plus", (1, -1), start=(14, 0))]).tokens()


def test_ground_truth_objects_never_touch():
    for seed in SEEDS:
        condition, _ = sample_clip(seed)
        tracks = [object_track(o) for o in condition.objects]
        for i in range(len(tracks)):
            for j in range(i + 1, len(tracks)):
                assert (np.abs(tracks[i] - tracks[j]).max(axis=1) >= SPRITE_SIZE).all()


# ---------------------------------------------------------------------------------------------- multimodal world

def mirrored(condition):
    """The same condition with every horizontal velocity reversed (the other mode of the multimodal world)."""
    return Condition([WorldObject(o.colour, o.kind, (-o.velocity[0], o.velocity[1]), o.start)
                      for o in condition.objects])


def test_multimodal_tokens_give_both_candidate_x_positions_and_hide_the_x_direction():
    obj = WorldObject("red", "square", (1, 1), start=(5, 2))
    tokens = Condition([obj]).tokens(MULTIMODAL_WORLD)[:12]
    x_hot = tokens[:, 25:39]
    assert x_hot[0].sum() == 1 and (x_hot[1:].sum(dim=1) == 2).all()  # frame 0 shared, then two candidates
    assert x_hot[3].nonzero().flatten().tolist() == [2, 8]
    assert (tokens[:, 9] == 0).all() and (tokens[:, 10] == 1).all() and (tokens[:, 55] == 1).all()
    # the two directions give the same tokens: the condition leaves the clip bimodal
    assert torch.equal(Condition([obj]).tokens(MULTIMODAL_WORLD), mirrored(Condition([obj])).tokens(MULTIMODAL_WORLD))
    # vertical-only motion is not ambiguous, and the default world is unchanged
    vertical = Condition([WorldObject("red", "square", (0, 1), start=(5, 2))]).tokens(MULTIMODAL_WORLD)[:12]
    assert (vertical[:, 25:39].sum(dim=1) == 1).all() and (vertical[:, 55] == 0).all()
    assert (Condition([obj]).tokens()[:12, 25:39].sum(dim=1) == 1).all()


def test_multimodal_success_accepts_either_direction_and_rejects_their_blend():
    blends_failed = 0
    for seed in SEEDS:
        condition, clip = sample_clip(seed, MULTIMODAL_WORLD)
        other = render(mirrored(condition), MULTIMODAL_WORLD)
        assert is_success(clip, condition, MULTIMODAL_WORLD) and is_success(other, condition, MULTIMODAL_WORLD)
        if not torch.equal(clip, other):
            assert not is_success(0.5 * (clip + other), condition, MULTIMODAL_WORLD), seed
            assert not is_success(other, condition), seed  # the default world's check wants the conditioned one
            blends_failed += 1
    assert blends_failed >= len(SEEDS) // 2


def test_multimodal_conditions_keep_both_modes_of_every_object_apart():
    from bench.world import candidate_objects
    for seed in SEEDS:
        condition, _ = sample_clip(seed, MULTIMODAL_WORLD)
        tracks = [[object_track(c) for c in candidate_objects(o, MULTIMODAL_WORLD)] for o in condition.objects]
        for i in range(len(tracks)):
            for j in range(i + 1, len(tracks)):
                for a in tracks[i]:
                    for b in tracks[j]:
                        assert (np.abs(a - b).max(axis=1) >= SPRITE_SIZE).all()


# ---------------------------------------------------------------------------------------------- success check

def test_success_check_accepts_ground_truth_clips():
    for seed in range(40):
        condition, clip = sample_clip(seed)
        assert is_success(clip, condition), (seed, analyse(clip, condition).reasons)


def test_success_check_accepts_frames_as_well_as_latents():
    condition, clip = sample_clip(1)
    assert is_success(latent_to_frames(clip), condition)


def test_success_check_rejects_shuffled_clips():
    for seed in SEEDS:
        condition, clip = sample_clip(seed)
        assert not is_success(shuffled(clip, seed), condition), seed


def test_success_check_rejects_a_clip_shifted_from_the_conditioned_start():
    # The right objects and motion, started two pixels away from the conditioned start.
    for seed in SEEDS:
        condition, _ = sample_clip(seed, num_objects=1)
        obj = condition.objects[0]
        limit = DEFAULT_WORLD.width - SPRITE_SIZE
        moved_x = obj.start[0] + 2 if obj.start[0] + 2 <= limit else obj.start[0] - 2
        moved = Condition([WorldObject(obj.colour, obj.kind, obj.velocity, (moved_x, obj.start[1]))])
        assert not is_success(render(moved), condition)


def test_success_check_fits_the_start_of_a_bare_condition():
    condition, clip = sample_clip(3)
    bare = Condition([WorldObject(o.colour, o.kind, o.velocity) for o in condition.objects])
    assert is_success(clip, bare)


def test_success_check_rejects_frozen_clips():
    for seed in SEEDS:
        condition, clip = sample_clip(seed)
        assert not is_success(frozen(clip), condition), seed


def test_success_check_rejects_wrong_colour_clips():
    for seed in SEEDS:
        condition, clip = sample_clip(seed)
        assert not is_success(wrong_colours(clip), condition), seed


def test_success_check_rejects_wrong_kind_clips():
    for seed in SEEDS:
        condition, _ = sample_clip(seed)
        assert not is_success(wrong_kinds(condition), condition), seed


def test_success_check_rejects_pure_noise():
    condition, _ = sample_clip(0)
    world = DEFAULT_WORLD
    noise = torch.randn(3, world.frames, world.height, world.width, generator=torch.Generator().manual_seed(0))
    assert not is_success(noise.clamp(-1, 1), condition)


def test_success_check_rejects_a_clip_missing_one_frame_of_an_object():
    condition, clip = sample_clip(2)
    clip = clip.clone()
    clip[:, 5] = -1.0  # blank frame
    assert not is_success(clip, condition)


# ---------------------------------------------------------------------------------------------- router score

def test_router_scores_ground_truth_frames_as_perfect():
    condition, clip = sample_clip(4)
    scores = WorldRouter(condition).score(latent_to_frames(clip), "")
    assert torch.equal(scores, torch.ones(DEFAULT_WORLD.frames))


def test_router_scores_frozen_frames_below_ground_truth():
    condition, clip = sample_clip(4)
    scores = WorldRouter(condition).score(latent_to_frames(frozen(clip)), "")
    assert scores.min() < 0.9


def test_router_judges_new_frames_against_committed_history():
    # A block that repeats the last committed frame is fine on its own but breaks the committed motion.
    condition, clip = sample_clip(6)
    frames = latent_to_frames(clip)
    decoder = IdentityDecoder()
    decoder.advance(frames[:6])
    router = WorldRouter(condition, history=decoder.committed_frames)
    good = router.score(frames[6:9], "")
    stuck = router.score(frames[5:6].expand(3, -1, -1, -1), "")
    assert torch.equal(good, torch.ones(3))
    assert stuck.min() < good.min()


def test_frame_passes_marks_the_frames_that_break_the_clip():
    from bench.check import frame_passes
    condition, clip = sample_clip(2)
    clip = clip.clone()
    clip[:, 5] = -1.0  # blank frame
    passes = frame_passes(analyse(clip, condition), condition)
    assert passes.tolist() == [t != 5 for t in range(12)]


def test_target_grid_cuts_every_draft_segment_by_the_target_stride():
    from bench.run import target_grid
    from samplers.methods.dts import target_grid_steps
    assert target_grid(100, dict(draft_stride=10, target_stride=2)) == list(range(0, 101, 2))
    assert target_grid(23, dict(draft_stride=10, target_stride=3)) == [0, 3, 6, 9, 10, 13, 16, 19, 20, 23]
    assert len(target_grid(23, dict(draft_stride=10, target_stride=3))) - 1 == target_grid_steps(23, 10, 3)


def test_spearman_of_known_rankings():
    from bench.run import spearman
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([0.2, 0.9, 0.5, 0.7], [False, True, False, True]) == pytest.approx(0.8944, abs=1e-4)
    assert spearman([1, 2, 3], [True, True, True]) is None


# ---------------------------------------------------------------------------------------------- shipped models

def test_shipped_weights_fit_the_size_budget():
    from bench.models import WEIGHTS_DIR
    files = [name for name in os.listdir(WEIGHTS_DIR) if name.endswith(".safetensors")]
    assert {"target.safetensors", "drafter.safetensors", "target_mm.safetensors"} <= set(files)
    assert sum(os.path.getsize(os.path.join(WEIGHTS_DIR, name)) for name in files) <= 10 * 1024 * 1024


def test_shipped_models_denoise_a_noised_ground_truth_clip_into_a_passing_clip():
    # The easy half of the job: at sigma 0.3 the target recovers every object of a noised clip.
    target, _ = shipped_models()
    condition, clip = sample_clip(5)
    noise = torch.randn(clip.shape, generator=torch.Generator().manual_seed(5))
    from bench.models import FlowDenoiser
    denoised = FlowDenoiser(target, condition.tokens()[None])((0.7 * clip + 0.3 * noise)[None], torch.tensor([0.3]))
    analysis = analyse(denoised[0], condition)
    assert analysis.success, analysis.reasons


def test_shipped_weights_load_with_their_configs():
    from bench.models import model_config
    target, drafter = shipped_models()
    assert target.config == model_config("target")
    assert drafter.config == model_config("drafter")
    assert multimodal_target().config == model_config("target_mm")


def test_block_by_block_runner_sees_the_same_absolute_positions_as_the_whole_clip():
    # The bench's position embedding must give block k of the causal runner the frame indices 3k..3k+2 that the
    # whole-clip (block-causal) forward gives it, or SDVG would run a different model than DTS.
    from bench.models import PositionalCausalRunner, build_model
    model = build_model("drafter").eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(0.05 * torch.randn(parameter.shape, generator=generator))
        condition, clip = sample_clip(0)
        context = condition.tokens()[None]
        whole = model(clip[None], torch.tensor([0.0]), context, frames_per_block=3)
        runner = PositionalCausalRunner(model, latent_height=16, latent_width=16, max_frames=12, frames_per_block=3)
        runner.reset(context)
        runner.commit(clip[None, :, 0:3])
        runner.commit(clip[None, :, 3:6])
        third = runner.predict(clip[None, :, 6:9], 0.0)
    assert torch.allclose(third, whole[:, :, 6:9], atol=1e-4)
    assert model.patch_embedding.frame_offset == 0  # reset after every runner call


def test_drafter_is_at_least_five_times_cheaper_per_call_in_flops():
    from bench.train import forward_flops
    assert forward_flops("target") >= 5 * forward_flops("drafter")


@pytest.mark.slow
def test_shipped_target_denoises_a_passing_clip_for_a_fixed_seed():
    from bench.models import FlowDenoiser, euler_sample, flow_sigmas
    from bench.run import SHIFT, initial_noise
    target, _ = shipped_models()
    condition, _ = sample_clip(1000)
    clip = euler_sample(FlowDenoiser(target, condition.tokens()[None]), initial_noise(1000),
                        flow_sigmas(20, shift=SHIFT))[0]
    analysis = analyse(clip, condition)
    assert analysis.success, analysis.reasons


@pytest.mark.slow
def test_shipped_models_generate_a_passing_clip_block_by_block():
    from bench.run import run_sdvg_once
    target, drafter = shipped_models()
    condition, _ = sample_clip(1000)
    clip, stats, _ = run_sdvg_once(drafter, target, condition, 1000, float("inf"))
    analysis = analyse(clip, condition)
    assert stats["mode"] == "target_only"
    assert analysis.success, analysis.reasons


# ---------------------------------------------------------------------------------------------- benchmark

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from bench.run import Settings, run
    target, drafter = shipped_models()
    settings = Settings.tiny()
    threads = torch.get_num_threads()
    out_dir = tmp_path_factory.mktemp("bench_results")
    lines = []
    try:
        result = run(settings, out_dir=str(out_dir), log=lines.append, target=target, drafter=drafter,
                     target_mm=multimodal_target(), pictures=importlib.util.find_spec("matplotlib") is not None)
    finally:
        torch.set_num_threads(threads)  # run() sets its own thread count; leave the session's as it was
    return result, "\n".join(lines), out_dir


@pytest.mark.slow
def test_benchmark_prints_dts_table_with_every_column(tiny_run):
    _, printed, _ = tiny_run
    header = next(line for line in printed.splitlines() if line.startswith("| method | calls"))
    for column in ("calls", "evals", "wall", "distance to Euler-100", "success"):
        assert column in header
    for method in ("Euler-100", "Euler-50", "Euler-10", "DTS paper"):
        assert f"| {method}" in printed


@pytest.mark.slow
def test_benchmark_prints_sdvg_table_with_every_column(tiny_run):
    _, printed, _ = tiny_run
    header = next(line for line in printed.splitlines() if line.startswith("| method | wall"))
    for column in ("speedup", "accept", "retention", "router score", "success"):
        assert column in header
    for method in ("target-only", "draft-only", "SDVG tau"):
        assert f"| {method}" in printed


@pytest.mark.slow
def test_benchmark_baselines_are_ratio_one(tiny_run):
    result, _, _ = tiny_run
    assert "| Euler-100 | 100.0 (1.00x) | 100.0 (1.00x) |" in result["tables"]
    target_only = result["sdvg"]["rows"][0]
    assert target_only["name"] == "target-only" and target_only["accept"] is None


@pytest.mark.slow
def test_benchmark_dts_paper_setting_uses_fewer_sequential_calls_than_euler_100(tiny_run):
    result, _, _ = tiny_run
    rows = {row["name"].split(" (")[0]: row for row in result["dts"]["rows"]}
    assert rows["DTS paper"]["calls"] < rows["Euler-100"]["calls"]


@pytest.mark.slow
def test_benchmark_prints_auto_rows_and_their_wall_time_against_the_target_grid(tiny_run):
    result, printed, _ = tiny_run
    assert "| DTS paper auto |" in printed
    auto = next(row for row in result["dts"]["rows"] if row["name"] == "DTS paper auto")
    assert auto["vs_target_grid_euler"] > 0 and auto["auto_reasons"]
    assert "wall vs plain Euler on the same grid, timed alongside" in printed
    assert auto["paired_euler_seconds"] > 0


@pytest.mark.slow
def test_benchmark_prints_the_router_correlation_and_what_transfers(tiny_run):
    result, printed, _ = tiny_run
    assert "Router vs success (Spearman rank correlation)" in printed
    assert result["sdvg"]["router"]["drafts"] >= 1
    assert "What transfers to a GPU" in printed


@pytest.mark.slow
def test_benchmark_writes_tables_plot_strip_and_gif(tiny_run):
    pytest.importorskip("matplotlib", reason="matplotlib (the pack's test extra) draws the plot")
    _, _, out_dir = tiny_run
    for name in ("tables.md", "results.json", "frontiers.png", "strip.png", "clips.gif"):
        assert (out_dir / name).stat().st_size > 0, name
