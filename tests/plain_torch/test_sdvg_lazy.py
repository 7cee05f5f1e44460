"""The lazy target gives the eager order's video; costs are counted per model and kind, in calls and FLOPs; non-finite
values stop the loop naming the block and the model.

The eager order (every model that predicts again commits right after every block) lives in tests/support/sdvg_eager.py
as the reference. Tiny models, both protocols on either side, a fake streaming decoder and a fake frame encoder.
"""
import itertools
import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import samplers.models.wan as wan
from samplers.methods.schedules import KREA_REALTIME_SCHEDULE, SCHEDULES
from samplers.methods.sdvg import speculative_generate
from samplers.models.causal_runner import CausalWanRunner
from samplers.models.flops import forward_flops
from samplers.models.wan import WanConfig, time_modulation
from support.sdvg_eager import eager_speculative_generate
from support.wan import tiny_inputs, tiny_wan, single_thread  # noqa: F401  (autouse fixture)

NUM_BLOCKS = 5
BLOCK_SHAPE = (1, 4, 3, 4, 4)
SCHEDULE = {"self_forcing": SCHEDULES["self_forcing"], "krea_realtime": KREA_REALTIME_SCHEDULE}
PROTOCOL_PAIRS = list(itertools.product(("self_forcing", "krea_realtime"), repeat=2))  # (drafter, target)


class FakeStreamingDecoder:
    """Frames that depend on the latent and on the committed history; the first latent frame ever gives 1 frame,
    every later one 4 (as the Wan VAE), so Krea's pixel buffer moves as it does in use."""

    def __init__(self):
        self.history, self.started = 0.0, False

    def decode(self, latent):
        frames = []
        for index in range(latent.shape[2]):
            image = torch.sigmoid(latent[0, :3, index].permute(1, 2, 0) + self.history)  # [H, W, 3]
            count = 1 if not self.started and index == 0 else 4
            frames.extend(image * (0.9 + 0.02 * step) for step in range(count))
        return torch.stack(frames), float(latent.mean())

    def advance(self, pending):
        self.history += pending
        self.started = True


class FakeEncoder:
    """A frame [H, W, 3] -> a latent frame [1, 4, 1, H, W]; records its calls."""

    def __init__(self):
        self.calls = 0

    def encode(self, frame):
        self.calls += 1
        pixels = frame.permute(2, 0, 1) * 2.0 - 1.0
        return torch.cat([pixels, pixels.mean(0, keepdim=True)])[None, :, None]


class PatternRouter:
    """Scores the k-th draft `scores[k]` on every frame; records the frames it saw."""

    def __init__(self, scores, aggregation="min"):
        self.scores, self.aggregation, self.seen = list(scores), aggregation, []

    def score(self, frames, prompt):
        self.seen.append(frames.clone())
        return torch.full((frames.shape[0],), float(self.scores[len(self.seen) - 1]))


def runners(protocols, frames=3 * NUM_BLOCKS, window=None):
    """(drafter, target) CausalWanRunners reset with one text context, under the given protocols."""
    models = (tiny_wan(seed=1), tiny_wan(seed=2, ffn_dim=192, num_layers=3))
    _, context = tiny_inputs(models[0])
    built = []
    for model, protocol in zip(models, protocols):
        options = dict(local_attn_frames=window, sink_frames=1) if window and protocol == "self_forcing" else {}
        runner = CausalWanRunner(model, latent_height=4, latent_width=4, max_frames=frames, frames_per_block=3,
                                 protocol=protocol, context_frames=3, **options)
        runner.reset(context)
        built.append(runner)
    return built


def generate(generate_fn, protocols, tau, scores=(), seed=0, window=None, **options):
    drafter, target = runners(protocols, window=window)
    encoder = FakeEncoder()
    stats = {}
    latent, frames = generate_fn(drafter, target, FakeStreamingDecoder(), PatternRouter(scores), "a prompt",
                                 num_blocks=NUM_BLOCKS, block_shape=BLOCK_SHAPE, tau=tau, seed=seed, stats=stats,
                                 drafter_sigmas=SCHEDULE[protocols[0]], target_sigmas=SCHEDULE[protocols[1]],
                                 encoder=encoder, **options)
    return dict(latent=latent, frames=frames, stats=stats, encoder=encoder)


# Accept (1) / reject (0) patterns for blocks 1..4 (block 0 is the target's), and the baselines.
PATTERNS = [(1, 1, 1, 1), (0, 0, 0, 0), (1, 0, 1, 0), (0, 1, 1, 0), (1, 1, 0, 1), (0, 0, 1, 1)]
RUNS = ([(0.5, pattern) for pattern in PATTERNS] + [(math.inf, ()), (-math.inf, ())])


@pytest.mark.parametrize("protocols", PROTOCOL_PAIRS, ids=lambda pair: "+".join(p[:4] for p in pair))
@pytest.mark.parametrize("seed", [0, 3])
def test_lazy_order_gives_the_eager_orders_video(protocols, seed):
    """Bit for bit with a krea_realtime target (its rebuild reads the same history whenever it runs); with a
    self_forcing target the deferred commits are one masked forward, the same K/V up to float32 rounding."""
    exact = protocols[1] == "krea_realtime"
    for tau, pattern in RUNS:
        lazy = generate(speculative_generate, protocols, tau, pattern, seed)
        eager = generate(eager_speculative_generate, protocols, tau, pattern, seed)
        assert [b["source"] for b in lazy["stats"]["blocks"]] == [b["source"] for b in eager["stats"]["blocks"]]
        assert lazy["encoder"].calls <= eager["encoder"].calls
        if exact or tau != 0.5 or not any(pattern):  # one block per deferred commit: one forward, as eager
            assert torch.equal(lazy["latent"], eager["latent"]), (tau, pattern)
            assert torch.equal(lazy["frames"], eager["frames"]), (tau, pattern)
        else:
            torch.testing.assert_close(lazy["latent"], eager["latent"], rtol=0, atol=1e-5)
            torch.testing.assert_close(lazy["frames"], eager["frames"], rtol=0, atol=1e-5)


class Brightness:
    """Scores a frame by its mean brightness: each tau decides on its own."""
    aggregation = "min"

    def score(self, frames, prompt):
        return frames.mean(dim=(1, 2, 3))


def brightness_run(generate_fn, protocols, tau):
    drafter, target = runners(protocols)
    stats = {}
    latent, _ = generate_fn(drafter, target, FakeStreamingDecoder(), Brightness(), "p", num_blocks=NUM_BLOCKS,
                            block_shape=BLOCK_SHAPE, tau=tau, seed=1, stats=stats, encoder=FakeEncoder(),
                            drafter_sigmas=SCHEDULE[protocols[0]], target_sigmas=SCHEDULE[protocols[1]])
    return latent, [b["accepted"] for b in stats["blocks"]], [b["score"] for b in stats["blocks"][1:]]


@pytest.mark.parametrize("protocols", PROTOCOL_PAIRS, ids=lambda pair: "+".join(p[:4] for p in pair))
def test_lazy_order_gives_the_eager_orders_video_for_router_decided_taus(protocols):
    exact = protocols[1] == "krea_realtime"
    _, _, scores = brightness_run(eager_speculative_generate, protocols, 2.0)  # brightness <= 1: every draft rejected
    scores = sorted(scores)
    decisions = set()
    for tau in [(low + high) / 2 for low, high in zip(scores, scores[1:])]:  # between the rejected drafts' scores
        lazy, lazy_decisions, _ = brightness_run(speculative_generate, protocols, tau)
        eager, eager_decisions, _ = brightness_run(eager_speculative_generate, protocols, tau)
        assert lazy_decisions == eager_decisions
        decisions.update(lazy_decisions[1:])
        if exact:
            assert torch.equal(lazy, eager)
        else:
            torch.testing.assert_close(lazy, eager, rtol=0, atol=1e-5)
    assert decisions == {True, False}  # the taus mixed kept and rejected drafts


# --- the deferred commit of a self_forcing runner ------------------------------------------------------------------

@pytest.mark.parametrize("window", [None, 7, 9])
def test_deferred_commit_of_several_blocks_gives_the_kv_of_committing_them_one_by_one(window):
    model = tiny_wan()
    x, context = tiny_inputs(model, frames=15)
    options = dict(local_attn_frames=window, sink_frames=1) if window else {}
    one_by_one, deferred = (CausalWanRunner(model, latent_height=4, latent_width=4, max_frames=15,
                                            frames_per_block=3, **options) for _ in range(2))
    for runner in (one_by_one, deferred):
        runner.reset(context)
    for block in range(4):
        one_by_one.commit(x[:, :, 3 * block:3 * block + 3])
    deferred.commit(x[:, :, :3])
    deferred.commit(x[:, :, 3:12])  # blocks 1, 2, 3 at once
    assert deferred.cache.frames == one_by_one.cache.frames and deferred.committed_frames == 12
    end = one_by_one.cache.end
    pairs = zip(deferred.cache.keys + deferred.cache.values, one_by_one.cache.keys + one_by_one.cache.values)
    for ours, theirs in pairs:
        torch.testing.assert_close(ours[:, :end], theirs[:, :end], rtol=0, atol=1e-5)
    # Block 0's commit, then blocks 1-3 in one forward, or in as few as the window's room allows.
    expected_calls = {None: 2, 7: 4, 9: 3}[window]
    assert len(deferred.forwards) == expected_calls
    torch.testing.assert_close(deferred.predict(x[:, :, 12:], 0.7), one_by_one.predict(x[:, :, 12:], 0.7),
                               rtol=0, atol=1e-5)


def test_max_commit_blocks_splits_a_deferred_commit_into_groups_with_the_same_kv():
    model = tiny_wan()
    x, context = tiny_inputs(model, frames=15)
    one_by_one, grouped = (CausalWanRunner(model, latent_height=4, latent_width=4, max_frames=15, frames_per_block=3,
                                           max_commit_blocks=limit) for limit in (None, 2))
    for runner in (one_by_one, grouped):
        runner.reset(context)
    for block in range(4):
        one_by_one.commit(x[:, :, 3 * block:3 * block + 3])
    grouped.commit(x[:, :, :3])
    grouped.commit(x[:, :, 3:12])  # blocks 1, 2, 3: two forwards (1 and 2, then 3)
    assert len(grouped.forwards) == 3 and grouped.committed_frames == 12
    pairs = zip(grouped.cache.keys + grouped.cache.values, one_by_one.cache.keys + one_by_one.cache.values)
    for ours, theirs in pairs:
        torch.testing.assert_close(ours[:, :one_by_one.cache.end], theirs[:, :one_by_one.cache.end], rtol=0,
                                   atol=1e-5)
    with pytest.raises(ValueError, match="max_commit_blocks"):
        CausalWanRunner(model, latent_height=4, latent_width=4, max_frames=15, max_commit_blocks=0)


# --- costs -----------------------------------------------------------------------------------------------------------

def test_forward_flops_equals_a_hand_count_for_a_tiny_config():
    config = WanConfig(dim=64, ffn_dim=128, num_heads=2, num_layers=2, in_dim=4, out_dim=4, text_dim=32, freq_dim=32)
    n, m, text = 12, 24, 5
    per_layer = (4 * n * 64 * 64 + n * m * 64 + n * m * 64  # q k v o, Q K^T, weights x V
                 + 2 * n * 64 * 64 + 2 * n * text * 64  # cross-attention q o, its scores and values
                 + n * 64 * 128 + n * 128 * 64)  # FFN
    embed, head = n * (4 * 1 * 2 * 2) * 64, n * 64 * (4 * 4)
    assert forward_flops(config, n, m, text) == 2 * (2 * per_layer + embed + head)
    kv_only = 2 * (2 * (4 * n * 64 * 64 + 2 * n * m * 64) + (2 * n * 64 * 64 + 2 * n * text * 64 + 2 * n * 64 * 128)
                   + embed)
    assert forward_flops(config, n, m, text, head=False) == kv_only
    assert forward_flops(tiny_wan(), n, m, text) == forward_flops(config, n, m, text)


def explicit_attention(q, k, v, mask=None):
    """SDPA written as matrix products, so torch's FLOP counter sees the attention too."""
    scores = q.transpose(1, 2) @ k.transpose(1, 2).transpose(-1, -2) / q.shape[-1] ** 0.5
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return (scores.softmax(-1) @ v.transpose(1, 2)).transpose(1, 2).flatten(2)


@pytest.mark.parametrize("protocol", ["self_forcing", "krea_realtime"])
def test_runner_forward_flops_equal_torchs_flop_counter_on_its_calls(protocol, monkeypatch):
    """Every predict and commit counted by torch's FlopCounterMode, less the per-frame time embedding the formula
    leaves out, equals the FLOPs the runner reports for the forwards it logged."""
    monkeypatch.setattr(wan, "attend", explicit_attention)
    model = tiny_wan()
    x, context = tiny_inputs(model, frames=9)
    runner = CausalWanRunner(model, latent_height=4, latent_width=4, max_frames=9, frames_per_block=3,
                             protocol=protocol, attention=explicit_attention)
    runner.reset(context)
    for block in range(3):
        current = x[:, :, 3 * block:3 * block + 3]
        calls = [lambda: runner.predict(current, 0.6)]
        if block < 2:
            options = dict(context=current) if protocol == "krea_realtime" else {}
            calls.append(lambda: runner.commit(current, **options))
        for call in calls:
            since = len(runner.forwards)
            with FlopCounterMode(display=False) as counter:
                call()
            (tokens, keys, head), = runner.forwards[since:]
            with FlopCounterMode(display=False) as time_counter:
                time_modulation(model, torch.zeros(1, tokens // runner.tokens_per_frame), torch.float32)
            counted = counter.get_total_flops() - time_counter.get_total_flops()
            assert counted == runner.forward_flops(tokens, keys, head=head)


@pytest.mark.parametrize("protocols", PROTOCOL_PAIRS, ids=lambda pair: "+".join(p[:4] for p in pair))
@pytest.mark.parametrize("window", [None, 7])
def test_target_only_flops_estimate_equals_a_target_only_runs_count(protocols, window):
    stats = generate(speculative_generate, protocols, math.inf, window=window)["stats"]
    assert stats["flops"]["target"] == stats["estimated_target_only_flops"] > 0
    assert stats["flops"]["drafter"] == 0 and stats["flops_speedup"] == 1.0
    steps = len(SCHEDULE[protocols[1]].sigmas)
    assert stats["target_forwards"] == NUM_BLOCKS * steps + NUM_BLOCKS - 1 and stats["target_forwards_saved"] == 0


@pytest.mark.parametrize("protocols", PROTOCOL_PAIRS, ids=lambda pair: "+".join(p[:4] for p in pair))
def test_every_draft_accepted_costs_the_target_what_draft_only_does_and_gives_its_video(protocols):
    accepted = generate(speculative_generate, protocols, 0.5, (1,) * (NUM_BLOCKS - 1))
    draft_only = generate(speculative_generate, protocols, -math.inf)
    steps = len(SCHEDULE[protocols[1]].sigmas)
    assert accepted["stats"]["target_forwards"] == draft_only["stats"]["target_forwards"] == steps  # block 0 only
    assert accepted["stats"]["costs"]["target"] == {"generate": dict(calls=steps, flops=accepted["stats"]["costs"][
        "target"]["generate"]["flops"])}
    assert torch.equal(accepted["latent"], draft_only["latent"])
    assert accepted["stats"]["target_forwards_saved"] == (NUM_BLOCKS - 1) * (steps + 1)
    assert accepted["stats"]["flops_speedup"] > 1.0


def test_costs_count_every_call_per_model_and_kind():
    protocols = ("self_forcing", "krea_realtime")
    result = generate(speculative_generate, protocols, 0.5, (1, 0, 1, 0))  # blocks 2 and 4 regenerated
    costs = result["stats"]["costs"]
    drafter_steps, target_steps = len(SCHEDULE[protocols[0]].sigmas), len(SCHEDULE[protocols[1]].sigmas)
    assert costs["drafter"]["generate"]["calls"] == 4 * drafter_steps
    assert costs["drafter"]["commit"]["calls"] == NUM_BLOCKS - 1
    assert costs["target"]["generate"]["calls"] == 3 * target_steps
    assert costs["target"]["rebuild"]["calls"] == 2  # before blocks 2 and 4 only
    # Draft decodes 4, plus the committed decodes of the target's blocks 0, 2, 4; the router saw 4 drafts of 12
    # frames; Krea re-encodes once per rebuild from block 2 on (blocks 2 and 4).
    assert costs["decoder"]["decode"]["calls"] == 4 + 3 and costs["decoder"]["reencode"]["calls"] == 2
    assert costs["router"]["frames"] == dict(calls=4, flops=None, frames=4 * 12)
    flops = result["stats"]["flops"]
    assert flops["drafter"] == sum(entry["flops"] for entry in costs["drafter"].values())
    assert flops["total"] == flops["drafter"] + flops["target"]
    assert result["stats"]["target_forwards"] == 3 * target_steps + 2
    assert result["stats"]["flops_speedup"] == result["stats"]["estimated_target_only_flops"] / flops["total"]


# --- non-finite values ---------------------------------------------------------------------------------------------

def test_a_nan_text_context_stops_at_block_0_naming_the_target_and_the_conditioning():
    drafter, target = runners(("self_forcing", "krea_realtime"))
    _, context = tiny_inputs(target.model)
    for runner in (drafter, target):
        runner.reset(torch.full_like(context, float("nan")))
    with pytest.raises(FloatingPointError, match=r"SDVG: block 0: the target gave a non-finite block \(NaN or inf\)"
                                                 r"\. Likely cause: NaN or inf in the CONDITIONING"):
        speculative_generate(drafter, target, FakeStreamingDecoder(), PatternRouter([1.0] * 4), "p",
                             num_blocks=NUM_BLOCKS, block_shape=BLOCK_SHAPE, tau=0.5, encoder=FakeEncoder())


def test_a_drafter_overflowing_stops_naming_the_drafter_and_its_block():
    drafter, target = runners(("self_forcing", "self_forcing"))
    with torch.no_grad():
        drafter.model.head.head.bias.fill_(float("inf"))
    with pytest.raises(FloatingPointError, match=r"block 1: the drafter gave a non-finite block .*fp16"):
        speculative_generate(drafter, target, FakeStreamingDecoder(), PatternRouter([1.0] * 4), "p",
                             num_blocks=NUM_BLOCKS, block_shape=BLOCK_SHAPE, tau=0.5)


class NaNAfter:
    """Wraps a decoder / encoder / router: from the `after`-th call of `method` on, its tensor output is NaN."""

    def __init__(self, inner, method, after):
        self.inner, self.method, self.after, self.count = inner, method, after, 0

    def __getattr__(self, name):
        value = getattr(self.inner, name)
        if name != self.method:
            return value

        def poisoned(*args):
            self.count += 1
            out = value(*args)
            if self.count <= self.after:
                return out
            if isinstance(out, tuple):
                return (torch.full_like(out[0], float("nan")),) + out[1:]
            return torch.full_like(out, float("nan"))
        return poisoned


@pytest.mark.parametrize("part, method, after, message", [
    ("decoder", "decode", 1, r"block 1: the decoder gave a non-finite frame .*VAE"),
    ("router", "score", 1, r"block 2: the router gave a non-finite score .*router's model"),
    ("encoder", "encode", 0, r"block 2: the decoder gave a non-finite re-encoded frame"),
])
def test_non_finite_decode_score_or_reencode_stops_naming_the_part(part, method, after, message):
    drafter, target = runners(("self_forcing", "krea_realtime"))
    parts = dict(decoder=FakeStreamingDecoder(), router=PatternRouter([-1.0] * 4), encoder=FakeEncoder())
    parts[part] = NaNAfter(parts[part], method, after)
    with pytest.raises(FloatingPointError, match=message):
        speculative_generate(drafter, target, parts["decoder"], parts["router"], "p", num_blocks=NUM_BLOCKS,
                             block_shape=BLOCK_SHAPE, tau=0.5, encoder=parts["encoder"],
                             target_sigmas=KREA_REALTIME_SCHEDULE)
