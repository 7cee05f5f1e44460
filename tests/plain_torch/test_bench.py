"""The toy world, its success check and router score, the shipped tiny models, and the benchmark's tables."""
import importlib.util
import os

import numpy as np
import pytest
import torch

from bench.check import IdentityDecoder, WorldRouter, analyse, is_success
from bench.posterior import smear_rate
from bench.world import (BEACON_WORLD, DEFAULT_WORLD, MAX_OBJECTS, SPRITE_SIZE, STAR_WORLD, TEXT_DIM, Condition,
                         WorldObject, bounce_track, latent_to_frames, object_track, render, sample_batch, sample_clip)
from support.bench import beacon_target, frozen, shipped_models, star_target, shuffled, wrong_colours, wrong_kinds

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


# ---------------------------------------------------------------------------------------------- star world

def background(clip, condition):
    """[T, H, W] bool: the pixels outside the conditioned sprites' 3x3 boxes."""
    outside = torch.ones(clip.shape[1:], dtype=torch.bool)
    for obj in condition.objects:
        for t, (x, y) in enumerate(object_track(obj)):
            outside[t, y:y + SPRITE_SIZE, x:x + SPRITE_SIZE] = False
    return outside


def test_star_world_draws_stars_the_condition_does_not_fix():
    condition, clip = sample_clip(3, STAR_WORLD)
    plain_condition, plain = sample_clip(3)
    assert torch.equal(condition.tokens(STAR_WORLD), plain_condition.tokens())  # same condition, same sprites
    stars = (clip == 0.0).all(dim=0) & background(clip, condition)  # a star is grey 0.5 = latent 0
    assert 0.2 < stars[background(clip, condition)].float().mean() < 0.3
    assert torch.equal(torch.where(stars[None], -1.0, clip), plain)  # without its stars, the default world's clip
    assert not (plain == 0.0).all(dim=0).any()  # the default world has no stars
    with pytest.raises(ValueError, match="rng"):
        render(condition, STAR_WORLD)


def test_star_world_check_accepts_any_stars_and_rejects_smeared_ones():
    for seed in range(4):
        condition, clip = sample_clip(seed, STAR_WORLD)
        other = render(condition, STAR_WORLD, np.random.default_rng(10_000 + seed))  # other stars, same condition
        assert is_success(clip, condition, STAR_WORLD) and is_success(other, condition, STAR_WORLD)
        assert is_success(sample_clip(seed)[1], condition, STAR_WORLD)  # no stars at all is one of the clips too
        blend = analyse(0.5 * (clip + other), condition, STAR_WORLD)  # what few coarse steps do to the stars
        assert not blend.success and any("stars smeared" in r for r in blend.reasons), seed
        assert blend.smeared.max() >= 3 and analyse(clip, condition, STAR_WORLD).smeared.max() == 0
        # the default world's check does not know stars: it sees grey pixels as unclean, not as failure
        assert analyse(clip, condition).smeared.max() == 0


def test_two_smeared_stars_pass_three_fail():
    condition, clip = sample_clip(1, STAR_WORLD)
    free = torch.nonzero(background(clip, condition)[0] & (clip[0, 0] == -1.0))[:3]
    smeared = clip.clone()
    for count, (y, x) in enumerate(free, start=1):
        smeared[:, 0, y, x] = -0.5  # half way between black (-1) and a star (0)
        assert is_success(smeared, condition, STAR_WORLD) == (count < 3)


def test_beacon_world_blinks_one_pixel_the_condition_does_not_fix():
    (x, y), = BEACON_WORLD.beacons
    lit_frames = []
    for seed in range(8):
        condition, clip = sample_clip(seed, BEACON_WORLD)
        plain_condition, plain = sample_clip(seed)
        assert torch.equal(condition.tokens(BEACON_WORLD), plain_condition.tokens())
        free = background(clip, condition)
        lit = (clip[:, :, y, x] == 0.0).all(dim=0) & free[:, y, x]  # lit = grey 0.5 = latent 0
        beacon = torch.zeros_like(free)
        beacon[:, y, x] = True
        # elsewhere the default world's clip (the beacon pixel itself: a sprite where one covers it, else dark or lit)
        assert torch.equal(torch.where(beacon[None], -1.0, clip), torch.where(beacon[None], -1.0, plain))
        lit_frames += lit[free[:, y, x]].tolist()
    assert 0.35 < np.mean(lit_frames) < 0.65  # lit with probability 1/2 in each frame
    with pytest.raises(ValueError, match="rng"):
        render(condition, BEACON_WORLD)


def test_beacon_world_check_fails_one_smeared_beacon_and_no_covered_one():
    (x, y), = BEACON_WORLD.beacons
    for seed in range(6):
        condition, clip = sample_clip(seed, BEACON_WORLD)
        assert is_success(clip, condition, BEACON_WORLD), analyse(clip, condition, BEACON_WORLD).reasons
        free = background(clip, condition)[:, y, x]
        t = int(torch.nonzero(free)[0])
        smeared = clip.clone()
        smeared[:, t, y, x] = -0.5  # half way between dark (-1) and lit (0)
        analysis = analyse(smeared, condition, BEACON_WORLD)
        assert not analysis.success and any("beacon smeared" in r for r in analysis.reasons)
        assert analysis.smeared.tolist() == [float(i == t) for i in range(clip.shape[1])]
        # another background pixel half way is not the beacon world's detail: unclean, but not a failure
        other = clip.clone()
        other[:, t, (y + 5) % 16, (x + 5) % 16] = -0.5
        assert analyse(other, condition, BEACON_WORLD).smeared.max() == 0
    # a beacon under a conditioned sprite's box is not judged
    condition = Condition([WorldObject("red", "square", (0, 0), (x - 1, y - 1))])
    clip = render(condition, BEACON_WORLD, np.random.default_rng(0))
    clip[:, :, y - 1, x - 1] = -1.0  # the sprite has a hole; the box still covers the beacon
    clip[:, :, y, x] = -0.5
    assert analyse(clip, condition, BEACON_WORLD).smeared.max() == 0


def test_exact_posterior_euler_smears_the_beacon_at_10_steps_only():
    """bench/posterior.py, the calculation that shaped the beacon world: with the exact denoiser, Euler-10 leaves a
    few percent of two-way choices half way, Euler-50 and Euler-100 none (docs/bench.md cites these figures)."""
    assert 0.02 < smear_rate(10, draws=50_000) < 0.05
    assert smear_rate(50, draws=50_000) == smear_rate(100, draws=50_000) == 0.0


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
    assert {"target.safetensors", "drafter.safetensors", "target_stars.safetensors",
            "target_beacon.safetensors"} <= set(files)
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
    assert star_target().config == model_config("target_stars")
    assert beacon_target().config == model_config("target_beacon")


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
                     target_stars=star_target(), target_beacon=beacon_target(),
                     pictures=importlib.util.find_spec("matplotlib") is not None)
    finally:
        torch.set_num_threads(threads)  # run() sets its own thread count; leave the session's as it was
    return result, "\n".join(lines), out_dir


@pytest.mark.slow
def test_benchmark_prints_dts_table_with_every_column(tiny_run):
    _, printed, _ = tiny_run
    header = next(line for line in printed.splitlines() if line.startswith("| method | calls"))
    for column in ("calls", "evals", "wall", "distance to Euler-100", "success"):
        assert column in header
    for method in ("Euler-100", "Euler-50", "Euler-10", "DTS default (tolerance", "DTS paper"):
        assert f"| {method}" in printed
    for world in ("star world", "beacon world", "default world"):
        assert f"## DTS, {world}" in printed


def test_dts_goal_lines_compare_the_default_row_with_its_goal_per_world():
    from bench.run import DTS_DEFAULT_NAME, dts_goal_line

    def world(euler_100, euler_50, dts, dts_calls):
        rows = [dict(name=name, successes=k, seeds=32, success=k / 32, calls=calls)
                for name, k, calls in (("Euler-100", euler_100, 100.0), ("Euler-50", euler_50, 50.0),
                                       (DTS_DEFAULT_NAME, dts, dts_calls))]
        return dict(baseline="Euler-100", rows=rows)

    assert dts_goal_line(world(30, 30, 30, 33.0), "beacon").startswith("Goal (DTS default within 2 points")
    assert ": reached: +0.0 points at 3.03x" in dts_goal_line(world(30, 30, 30, 33.0), "beacon")
    assert "NOT reached: -3.1 points" in dts_goal_line(world(30, 30, 29, 20.0), "beacon")  # one seed is 3.1 points
    assert "NOT reached: +0.0 points at 2.50x" in dts_goal_line(world(30, 30, 30, 40.0), "beacon")
    assert ": reached: 62%" in dts_goal_line(world(20, 10, 20, 60.0), "stars")
    assert "NOT reached" in dts_goal_line(world(20, 10, 9, 30.0), "stars")
    assert dts_goal_line(world(20, 10, 9, 30.0), "default") == ""


@pytest.mark.slow
def test_benchmark_prints_sdvg_table_with_every_column(tiny_run):
    _, printed, _ = tiny_run
    header = next(line for line in printed.splitlines() if line.startswith("| method | success"))
    for column in ("success [95% CI] of seeds (retention)", "McNemar", "DiT FLOPs per clip", "wall, CPU ms (speed-up)",
                   "accept", "target forwards", "router score"):
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
    assert auto["vs_target_grid_euler"] > 0 and auto["vs_target_grid_euler_median"] > 0 and auto["auto_reasons"]
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


def test_oracle_router_scores_exactly_the_per_frame_success_check():
    from bench.run import OracleRouter
    condition, clip = sample_clip(2)
    frames = latent_to_frames(clip)
    committed = frames[:3]
    router = OracleRouter(condition, history=lambda: committed)
    assert torch.equal(router.score(frames[3:6]), torch.ones(3))  # the true next block passes
    assert torch.equal(router.score(frames[6:9]), torch.zeros(3))  # a block from later does not follow frame 2
    assert [passes for _, passes in router.records] == [True, False]


@pytest.mark.slow
def test_benchmark_prints_the_oracle_router_row(tiny_run):
    result, printed, _ = tiny_run
    assert "| SDVG, success check as router |" in printed
    oracle = result["sdvg"]["rows"][-1]
    assert oracle["name"] == "SDVG, success check as router" and 0.0 <= oracle["accept"] <= 1.0


@pytest.mark.slow
def test_benchmark_json_keeps_what_each_sdvg_row_costs_and_scores(tiny_run):
    import json
    result, _, out_dir = tiny_run
    rows = json.loads((out_dir / "results.json").read_text())["sdvg"]["rows"]
    assert [row["name"] for row in rows] == [row["name"] for row in result["sdvg"]["rows"]]
    for row in rows:
        for key in ("name", "tau", "seeds", "success", "seconds", "flops", "interval", "target_forwards"):
            assert key in row, (row["name"], key)
        assert row["seeds"] == 1 and row["flops"] > 0
    by_name = {row["name"]: row for row in rows}
    # draft-only makes only block 0 with the target, so it costs fewer FLOPs than target-only
    assert by_name["draft-only"]["flops"] < by_name["target-only"]["flops"]
    assert by_name["draft-only"]["target_forwards"] < by_name["target-only"]["target_forwards"]


@pytest.mark.slow
def test_benchmark_prints_every_success_rate_with_its_interval_and_seed_count(tiny_run):
    _, printed, _ = tiny_run
    rows = [line for line in printed.splitlines() if line.startswith("| ") and "| method |" not in line
            and not line.startswith("| setting")]
    table_rows = [line for line in rows if "%" in line and "of 1 (" in line]
    assert len(table_rows) >= 8
    for line in table_rows:
        assert "[" in line and "] of 1" in line, line


def test_wilson_interval_of_known_counts():
    from bench.stats import rate, wilson
    low, high = wilson(0, 10)
    assert low == 0.0 and high == pytest.approx(1.959964 ** 2 / (10 + 1.959964 ** 2), rel=1e-6)
    low, high = wilson(10, 10)
    assert high == pytest.approx(1.0) and low == pytest.approx(10 / (10 + 1.959964 ** 2), rel=1e-6)
    assert wilson(21, 40) == pytest.approx((0.37497, 0.67065), abs=1e-5)
    assert rate(26, 32) == "81% [65, 91] of 32"


def test_mcnemar_exact_p_of_known_tables():
    from bench.stats import mcnemar
    assert mcnemar([True] * 5, [True] * 5) == (1.0, 0, 0)
    # 6 discordant seeds all one way: p = 2 / 2^6
    assert mcnemar([True] * 6 + [False], [False] * 7) == (pytest.approx(2 / 64), 6, 0)
    # 1 vs 4: p = 2 * (1 + 5) / 32
    a = [True, False, False, False, False]
    assert mcnemar(a, [not x for x in a]) == (pytest.approx(12 / 32), 1, 4)
    with pytest.raises(ValueError, match="same seeds"):
        mcnemar([True], [True, False])


def test_seed_ranges_have_one_job_each_and_the_tables_use_the_report_range():
    from bench.run import Settings
    from bench.world import CHOICE_SEEDS, REPORT_SEEDS, TRAINING_SEEDS
    ranges = [set(TRAINING_SEEDS), set(CHOICE_SEEDS), set(REPORT_SEEDS)]
    assert all(not (a & b) for i, a in enumerate(ranges) for b in ranges[i + 1:])
    quick = Settings.quick()
    assert quick.seeds == "report" and quick.seed(0) == REPORT_SEEDS.start
    assert min(quick.dts_seeds, quick.beacon_dts_seeds, quick.default_dts_seeds, quick.sdvg_seeds) >= 32
    assert Settings(seeds="choice").seed(3) == CHOICE_SEEDS.start + 3
    with pytest.raises(ValueError, match="Settings.seeds"):
        Settings(seeds="eval").seed(0)


def test_main_job_writes_into_a_git_ignored_folder():
    import subprocess
    from bench.run import RESULTS_DIR
    root = os.path.dirname(os.path.dirname(RESULTS_DIR))
    if not os.path.exists(os.path.join(root, ".git")):
        pytest.skip("not a git checkout")
    probe = os.path.join(os.path.relpath(RESULTS_DIR, root), "tables.md")
    ignored = subprocess.run(["git", "check-ignore", "-q", probe], cwd=root)
    assert ignored.returncode == 0, f"{probe} is not git-ignored"


def test_distillation_loss_is_zero_only_for_the_teachers_velocity():
    # The drafter learns v = noise - x0 of the target's clip on one block after clean committed blocks: a model
    # that returns exactly that velocity has zero loss, and the loss ignores every other frame.
    from bench.models import DRAFTER_SIGMAS
    from bench.train import distil_step

    clips = torch.randn(2, 3, 12, 16, 16)
    context = torch.zeros(2, 36, TEXT_DIM)
    seen = {}

    class Oracle(torch.nn.Module):
        def forward(self, noisy, timestep, context, frames_per_block):
            seen["timestep"] = timestep.clone()
            sigma = timestep[:, None, :, None, None] / 1000.0
            frames = noisy.shape[2]
            clean = clips[:, :, :frames]
            noise = torch.where(sigma > 0, (noisy - (1 - sigma) * clean) / sigma.clamp(min=1e-6), 0.0)
            out = noise - clean
            out[:, :, :-3] = 123.0  # whatever it says about committed frames must not count
            return out

    loss = distil_step(Oracle(), clips, context, torch.Generator().manual_seed(0), 3, DRAFTER_SIGMAS)
    assert float(loss) == pytest.approx(0.0, abs=1e-8)
    timestep = seen["timestep"]
    assert timestep.shape[1] >= 6 and (timestep[:, :-3] == 0).all()  # block 0 is never the drafter's
    assert {round(float(t) / 1000, 4) for t in timestep[:, -3:].flatten()} <= {0.9999, 0.75, 0.5, 0.25}


def test_drafter_starts_from_the_targets_weights_on_its_channels():
    # The distilled drafter is initialised from the target (bench.train.slice_target): its embeddings, its one
    # layer and its head are the target's restricted to DRAFTER_CHANNELS, and so is its position embedding.
    from bench.models import DRAFTER_CHANNELS, build_model, model_position_embedding
    from bench.train import init_weights, slice_target
    target = build_model("target")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in target.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
    drafter = slice_target(init_weights(build_model("drafter")), target.state_dict(), layer=1)
    channels = list(DRAFTER_CHANNELS)
    assert len(channels) == drafter.config.dim
    assert torch.equal(drafter.patch_embedding.weight, target.patch_embedding.weight[channels])
    assert torch.equal(drafter.head.head.weight, target.head.head.weight[:, channels])
    assert torch.equal(drafter.blocks[0].self_attn.q.weight, target.blocks[1].self_attn.q.weight[:96][:, channels])
    assert torch.equal(drafter.blocks[0].cross_attn.o.weight, target.blocks[1].cross_attn.o.weight[channels][:, :96])
    projection = target.time_projection[1].weight.reshape(6, 128, 128)
    assert torch.equal(drafter.time_projection[1].weight.reshape(6, 96, 96), projection[:, channels][:, :, channels])
    assert torch.equal(model_position_embedding(96, 3, 4, 4, 6), model_position_embedding(128, 3, 4, 4, 6)[channels])
