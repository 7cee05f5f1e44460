"""The speculative block loop: baselines from the same code path, seeding, decisions, decoder protocol, stats."""
import math

import pytest
import torch

from samplers.models.causal_runner import CausalWanRunner
from samplers.methods.sdvg import SELF_FORCING_SIGMAS, block_generator, generate_block, speculative_generate
from support.wan import tiny_inputs, tiny_wan, single_thread  # noqa: F401  (autouse fixture)

BLOCK_SHAPE = (1, 4, 3, 4, 4)
NUM_BLOCKS = 3


class CountingRunner:
    """Wraps a runner and counts predict / commit calls."""

    def __init__(self, runner):
        self.runner = runner
        self.predicts = 0
        self.commits = 0

    def __getattr__(self, name):
        return getattr(self.runner, name)

    def predict(self, block, sigma):
        self.predicts += 1
        return self.runner.predict(block, sigma)

    def commit(self, block):
        self.commits += 1
        self.runner.commit(block)


class StreamingDecoder:
    """A fake streaming decoder: frames depend on the latent and on the committed history (the streaming state)."""

    def __init__(self):
        self.history = 0.0
        self.decoded = []
        self.advanced = []

    def decode(self, latent):
        self.decoded.append(latent.clone())
        frames = torch.sigmoid(latent[0, :3].permute(1, 2, 3, 0) + self.history)  # [F, H, W, 3]
        return frames, latent.mean().item()

    def advance(self, pending):
        self.advanced.append(pending)
        self.history += pending


class ScriptedRouter:
    """Returns pre-set per-frame scores, one list per call."""

    def __init__(self, scores, aggregation="min"):
        self.scores = list(scores)
        self.aggregation = aggregation
        self.calls = 0

    def score(self, frames, prompt):
        assert frames.ndim == 4 and frames.shape[-1] == 3
        self.calls += 1
        return torch.tensor(self.scores.pop(0), dtype=torch.float32)


def make_models():
    return tiny_wan(seed=1), tiny_wan(seed=2, ffn_dim=192)


def make_runners(drafter_model, target_model, context):
    runners = []
    for model in (drafter_model, target_model):
        runner = CausalWanRunner(model, latent_height=4, latent_width=4, max_frames=3 * NUM_BLOCKS,
                                 frames_per_block=3)
        runner.reset(context)
        runners.append(CountingRunner(runner))
    return runners


def run(tau, router=None, seed=0, **options):
    drafter_model, target_model = make_models()
    _, context = tiny_inputs(drafter_model)
    drafter, target = make_runners(drafter_model, target_model, context)
    decoder = StreamingDecoder()
    stats = {}
    latent, frames = speculative_generate(drafter, target, decoder, router, "a prompt", num_blocks=NUM_BLOCKS,
                                          block_shape=BLOCK_SHAPE, tau=tau, seed=seed, stats=stats, **options)
    return dict(latent=latent, frames=frames, stats=stats, drafter=drafter, target=target, decoder=decoder)


def single_model_video(which, seed=0, first_block_from_target=False):
    """Hand-written baseline: one model generates every block and commits it (block 0 optionally from the target)."""
    drafter_model, target_model = make_models()
    _, context = tiny_inputs(drafter_model)
    drafter, target = make_runners(drafter_model, target_model, context)
    runner = target if which == "target" else drafter
    blocks = []
    for index in range(NUM_BLOCKS):
        if index == 0 and first_block_from_target:
            block = generate_block(target, BLOCK_SHAPE, SELF_FORCING_SIGMAS, block_generator(seed, 0, "target"))
        else:
            block = generate_block(runner, BLOCK_SHAPE, SELF_FORCING_SIGMAS, block_generator(seed, index, which))
        runner.commit(block)
        blocks.append(block)
    return torch.cat(blocks, dim=2)


def test_tau_plus_inf_equals_target_only():
    result = run(math.inf)
    assert torch.equal(result["latent"], single_model_video("target"))
    assert result["drafter"].predicts == 0 and result["drafter"].commits == 0


def test_tau_minus_inf_equals_draft_only_with_block_zero_from_target():
    result = run(-math.inf, router=ScriptedRouter([]))
    assert torch.equal(result["latent"], single_model_video("drafter", first_block_from_target=True))
    assert result["target"].predicts == len(SELF_FORCING_SIGMAS)  # block 0 only
    assert result["stats"]["acceptance_rate"] == 1.0


def test_all_drafts_rejected_equals_target_only():
    result = run(0.5, router=ScriptedRouter([[0.0, 0.0, 0.0]] * (NUM_BLOCKS - 1)))
    assert torch.equal(result["latent"], single_model_video("target"))
    assert result["stats"]["acceptance_rate"] == 0.0


def test_same_seed_gives_identical_output():
    first = run(0.0, router=ScriptedRouter([[1.0] * 3, [-1.0] * 3]), seed=7)
    second = run(0.0, router=ScriptedRouter([[1.0] * 3, [-1.0] * 3]), seed=7)
    assert torch.equal(first["latent"], second["latent"])
    assert torch.equal(first["frames"], second["frames"])


def test_different_seeds_give_different_output():
    assert not torch.equal(run(math.inf, seed=1)["latent"], run(math.inf, seed=2)["latent"])


def test_accepted_draft_is_committed_and_rejected_draft_is_regenerated_by_the_target():
    result = run(0.0, router=ScriptedRouter([[0.5, 0.2, 0.1], [0.5, -0.1, 0.9]]))
    decisions = [(b["source"], b["accepted"]) for b in result["stats"]["blocks"]]
    assert decisions == [("target", False), ("drafter", True), ("target", False)]
    # The target regenerates block 2 with its own noise for block 2.
    assert result["target"].predicts == 2 * len(SELF_FORCING_SIGMAS)


def test_min_aggregation_rejects_what_mean_accepts():
    scores = [[0.9, -0.5, 0.9]] * (NUM_BLOCKS - 1)
    assert not run(0.0, router=ScriptedRouter(scores), aggregation="min")["stats"]["blocks"][1]["accepted"]
    assert run(0.0, router=ScriptedRouter(scores), aggregation="mean")["stats"]["blocks"][1]["accepted"]


def test_first_block_is_drafted_when_not_forced():
    result = run(0.0, router=ScriptedRouter([[1.0] * 3] * NUM_BLOCKS), force_target_first_block=False)
    assert [b["source"] for b in result["stats"]["blocks"]] == ["drafter"] * NUM_BLOCKS
    assert result["target"].predicts == 0


def test_both_caches_hold_the_committed_history_the_target_committing_only_before_it_generates():
    result = run(0.0, router=ScriptedRouter([[1.0] * 3, [-1.0] * 3]))
    # The last block needs no commit: every earlier block went to both models. The drafter commits each block; the
    # target, which skipped block 1, commits blocks 0 and 1 in one call right before it regenerates block 2.
    assert result["drafter"].commits == NUM_BLOCKS - 1 and result["target"].commits == 1
    assert result["drafter"].committed_frames == result["target"].committed_frames == 3 * (NUM_BLOCKS - 1)


def test_drafts_are_decoded_without_advancing_and_committed_frames_are_reused():
    result = run(0.0, router=ScriptedRouter([[1.0] * 3, [-1.0] * 3]))
    decoder = result["decoder"]
    # Decodes: block 0 (target), block 1 draft (accepted, reused), block 2 draft (rejected) + block 2 target.
    assert len(decoder.decoded) == 4
    assert len(decoder.advanced) == NUM_BLOCKS
    assert decoder.advanced == pytest.approx([block.mean().item() for block in result["latent"].split(3, dim=2)])
    assert result["frames"].shape == (3 * NUM_BLOCKS, 4, 4, 3)


def test_stats_report_every_block_and_totals():
    stats = run(0.0, router=ScriptedRouter([[1.0] * 3, [-1.0] * 3]))["stats"]
    assert [b["index"] for b in stats["blocks"]] == list(range(NUM_BLOCKS))
    assert [b["score"] for b in stats["blocks"]] == [None, 1.0, -1.0]
    assert stats["acceptance_rate"] == 0.5
    assert stats["num_blocks"] == NUM_BLOCKS and stats["tau"] == 0.0 and stats["mode"] == "speculative"
    assert stats["blocks"][1]["router_seconds"] > 0 and stats["blocks"][1]["drafter_seconds"] > 0
    assert stats["estimated_target_only_seconds"] > 0 and stats["estimated_speedup"] > 0


def test_infinite_tau_is_reported_as_a_number():
    # The strict-JSON form ("inf") is the ComfyUI side's rule (nodes/glue/stats_events.py), checked through the node
    # in tests/with_comfyui/test_sdvg_comfyui.py.
    assert run(math.inf)["stats"]["tau"] == math.inf


def test_callback_reports_each_committed_block():
    events = []
    result = run(math.inf, callback=events.append)
    assert [e["block"] for e in events] == list(range(NUM_BLOCKS))
    assert torch.equal(torch.cat([e["x0"] for e in events], dim=2), result["latent"])


def test_interrupt_stops_between_model_calls():
    class Stop(Exception):
        pass

    calls = []

    def interrupt():
        calls.append(1)
        if len(calls) == 3:
            raise Stop

    with pytest.raises(Stop):
        run(math.inf, interrupt=interrupt)


def test_finite_tau_without_router_raises():
    with pytest.raises(ValueError, match="router"):
        run(0.0, router=None)


def test_runner_with_committed_frames_raises():
    drafter_model, target_model = make_models()
    x, context = tiny_inputs(drafter_model, frames=3)
    drafter, target = make_runners(drafter_model, target_model, context)
    target.commit(x)
    with pytest.raises(ValueError, match="reset"):
        speculative_generate(drafter, target, None, None, "", num_blocks=1, block_shape=BLOCK_SHAPE, tau=math.inf)


class ConstantVelocity:
    """predict returns a fixed v; records the states it was called with."""

    def __init__(self, v):
        self.v = v
        self.seen = []

    def predict(self, block, sigma):
        self.seen.append((block.clone(), sigma))
        return self.v


def test_generate_block_renoises_with_the_lcm_rule():
    v = torch.full(BLOCK_SHAPE, 0.25)
    runner = ConstantVelocity(v)
    sigmas = [1.0, 0.5]
    out = generate_block(runner, BLOCK_SHAPE, sigmas + [0.0], torch.Generator().manual_seed(3))
    noise = torch.Generator().manual_seed(3)
    first = torch.randn(BLOCK_SHAPE, generator=noise)
    second = torch.randn(BLOCK_SHAPE, generator=noise)
    x0 = first - 1.0 * v
    x = 0.5 * x0 + 0.5 * second
    torch.testing.assert_close(runner.seen[1][0], x, rtol=0, atol=1e-6)
    torch.testing.assert_close(out, x - 0.5 * v, rtol=0, atol=1e-6)
    assert [s for _, s in runner.seen] == sigmas


def test_increasing_sigmas_raise():
    with pytest.raises(ValueError, match="decreasing"):
        generate_block(ConstantVelocity(None), BLOCK_SHAPE, [0.5, 0.9], torch.Generator())


class ClockedRunner:
    """A fake runner whose calls advance a model clock by fixed costs (no real model)."""

    def __init__(self, clock, predict_cost, commit_cost):
        self.clock, self.predict_cost, self.commit_cost = clock, predict_cost, commit_cost
        self.committed_frames = 0
        self.frames_per_block = BLOCK_SHAPE[2]

    def predict(self, block, sigma):
        self.clock[0] += self.predict_cost
        return torch.zeros_like(block)

    def commit(self, block):
        self.clock[0] += self.commit_cost


class ClockedDecoder(StreamingDecoder):
    def __init__(self, clock):
        super().__init__()
        self.clock = clock

    def decode(self, latent):
        self.clock[0] += 2.0
        return super().decode(latent)


def clocked_run(monkeypatch, tau, scores=()):
    import samplers.methods.sdvg as sdvg

    clock = [0.0]
    monkeypatch.setattr(sdvg.time, "perf_counter", lambda: clock[0])
    stats = {}
    speculative_generate(ClockedRunner(clock, 1.0, 1.0), ClockedRunner(clock, 10.0, 7.0), ClockedDecoder(clock),
                         ScriptedRouter(scores), "", num_blocks=4, block_shape=BLOCK_SHAPE, tau=tau, stats=stats)
    return stats


def test_estimated_target_only_seconds_equal_a_target_only_run_under_a_model_clock(monkeypatch):
    target_only = clocked_run(monkeypatch, math.inf)
    assert target_only["seconds"] == 4 * (4 * 10.0 + 2.0) + 3 * 7.0
    mixed = clocked_run(monkeypatch, 0.0, [[1.0] * 3, [-1.0] * 3, [1.0] * 3])
    assert mixed["estimated_target_only_seconds"] == target_only["seconds"]
    assert mixed["estimated_speedup"] == target_only["seconds"] / mixed["seconds"]


def test_schedules_are_the_references_float32_table_values():
    from samplers.methods.schedules import KREA_REALTIME_SCHEDULE, SCHEDULES, scheduler_sigma

    assert SELF_FORCING_SIGMAS == (1.0, 0.9375, 0.8333333134651184, 0.625)
    assert KREA_REALTIME_SCHEDULE.timesteps == (1000.0, 937.5, 833.3333129882812, 625.0, 0.0)
    assert KREA_REALTIME_SCHEDULE.sigmas == SELF_FORCING_SIGMAS + (0.004980080295354128,)
    assert scheduler_sigma(0.0) == 0.004980080295354128 and scheduler_sigma(1000.0) == 1.0
    assert SCHEDULES["self_forcing"].timesteps is None  # timestep = 1000 sigma


def test_replaced_noise_source_feeds_every_draw():
    draws = []

    def noise(block_index, model):
        def draw(step, shape):
            draws.append((block_index, model, step))
            return torch.zeros(shape)
        return draw

    runner = ConstantVelocity(torch.zeros(BLOCK_SHAPE))
    runner.commit = lambda block: None
    speculative_generate(None, runner, None, None, "", num_blocks=2, block_shape=BLOCK_SHAPE, tau=math.inf,
                         noise=noise)
    steps = len(SELF_FORCING_SIGMAS)
    assert draws == [(k, "target", j) for k in range(2) for j in range(steps)]


def test_estimated_target_only_time_counts_the_krea_targets_recompute_and_reencodes():
    from samplers.methods.sdvg import sdvg_stats

    records = [dict(index=k, source="target", drafted=False, score=None, accepted=False) for k in range(3)]
    clocks = [dict(target=1.0, decode=0.5, target_commit=2.0), dict(target=1.0, decode=0.5, target_commit=2.0,
                                                                     reencode=0.25), dict(target=1.0, decode=0.5)]
    common = dict(tau=math.inf, aggregation="min", target_steps=5)
    plain = sdvg_stats(records, clocks, 10.0, **common)["estimated_target_only_seconds"]
    krea = sdvg_stats(records, clocks, 10.0, target_reencodes=True, **common)["estimated_target_only_seconds"]
    assert plain == 3 * (1.0 + 0.5) + 2 * 2.0  # the commit (Krea: the recompute) of every block but the last
    assert krea == plain + 0.25
