"""Cancel: an interrupt that derives from BaseException (as ComfyUI's may) propagates out of both methods unchanged
and leaves nothing behind, so the next run is identical to a clean one.

The interrupt is raised from each place a host can raise it: the `interrupt` hook, inside a model call, and from the
progress callback.
"""
import math

import pytest
import torch

from samplers.methods.dts import sample_dts
from samplers.methods.sdvg import speculative_generate
from samplers.models.causal_runner import CausalWanRunner
from support.dts import RecordingModel, TemplateMixtureDenoiser, make_noise, make_templates
from support.wan import tiny_inputs, tiny_wan, single_thread  # noqa: F401  (autouse fixture)

DTS_OPTIONS = dict(draft_stride=6, target_stride=2, chunk=3, threshold=0.02, increment=0.01)
SDVG_BLOCK_SHAPE = (1, 4, 3, 4, 4)
SDVG_BLOCKS = 3


class Interrupted(BaseException):
    """Not an Exception: `except Exception` must not catch it."""


def trip_after(count):
    """A callable that raises Interrupted on its `count`-th call."""
    calls = []

    def trip(*_args, **_kwargs):
        calls.append(1)
        if len(calls) == count:
            raise Interrupted

    return trip


def dts_run(model, **hooks):
    stats = {}
    x = sample_dts(model, make_noise(), torch.linspace(8.0, 0.0, 31, dtype=torch.float64), stats=stats,
                   **DTS_OPTIONS, **hooks)
    stats.pop("seconds")
    return x, stats


@pytest.mark.parametrize("where", ["interrupt", "model", "callback"])
def test_dts_interrupt_propagates_and_the_next_run_equals_a_clean_one(where):
    denoiser = TemplateMixtureDenoiser(make_templates())
    clean, clean_stats = dts_run(RecordingModel(denoiser))
    trip = trip_after(5 if where != "callback" else 2)  # mid-run: after some model calls / rounds
    model = RecordingModel(denoiser)
    hooks = {}
    if where == "interrupt":
        hooks["interrupt"] = trip
    elif where == "callback":
        hooks["callback"] = trip
    else:
        def model(x, sigma, _inner=model):
            trip()
            return _inner(x, sigma)

    stats = {}
    with pytest.raises(Interrupted):
        sample_dts(model, make_noise(), torch.linspace(8.0, 0.0, 31, dtype=torch.float64), stats=stats,
                   **DTS_OPTIONS, **hooks)
    assert stats == {}  # nothing reported for a cancelled run
    again, again_stats = dts_run(model if where == "model" else RecordingModel(denoiser))
    assert torch.equal(again, clean)
    assert again_stats == clean_stats


def sdvg_runners():
    drafter_model, target_model = tiny_wan(seed=1), tiny_wan(seed=2, ffn_dim=192)
    _, context = tiny_inputs(drafter_model)
    runners = [CausalWanRunner(model, latent_height=4, latent_width=4, max_frames=3 * SDVG_BLOCKS,
                               frames_per_block=3) for model in (drafter_model, target_model)]
    for runner in runners:
        runner.reset(context)
    return runners, context


def sdvg_run(drafter, target, stats=None, **hooks):
    """Draft-only with block 0 from the target: both runners predict and commit, no decoder or router needed."""
    stats = {} if stats is None else stats
    latent, _ = speculative_generate(drafter, target, None, None, "a prompt", num_blocks=SDVG_BLOCKS,
                                     block_shape=SDVG_BLOCK_SHAPE, tau=-math.inf, seed=3, stats=stats, **hooks)
    return latent, stats


class TrippingRunner:
    """A runner whose predict raises Interrupted on the `count`-th call (a cancel inside a model call)."""

    def __init__(self, runner, count):
        self.runner, self.trip = runner, trip_after(count)

    def __getattr__(self, name):
        return getattr(self.runner, name)

    def predict(self, block, sigma):
        self.trip()
        return self.runner.predict(block, sigma)


@pytest.mark.parametrize("where", ["interrupt", "model", "callback"])
def test_sdvg_interrupt_propagates_and_the_next_run_equals_a_clean_one(where):
    (drafter, target), _ = sdvg_runners()
    clean, clean_stats = sdvg_run(drafter, target)

    (drafter, target), context = sdvg_runners()
    hooks, tripping_drafter = {}, drafter
    if where == "interrupt":
        hooks["interrupt"] = trip_after(7)  # block 1, after block 0 was committed to both caches
    elif where == "callback":
        hooks["callback"] = trip_after(2)  # after block 1 was committed
    else:
        tripping_drafter = TrippingRunner(drafter, 2)  # block 1's second drafter step
    stats = {"left": "as it was"}
    with pytest.raises(Interrupted):
        sdvg_run(tripping_drafter, target, stats, **hooks)
    assert drafter.committed_frames > 0  # the cancel came mid-video: the caches hold committed blocks
    assert stats == {"left": "as it was"}
    for runner in (drafter, target):  # a new video starts with reset(), as the node does for every run
        runner.reset(context)
    again, again_stats = sdvg_run(drafter, target)
    assert torch.equal(again, clean)
    for run_stats in (again_stats, clean_stats):
        run_stats.pop("seconds")
        run_stats.pop("estimated_target_only_seconds")
        run_stats.pop("estimated_speedup")
        for block in run_stats["blocks"]:
            for key in [key for key in block if key.endswith("_seconds")]:
                block.pop(key)
    assert again_stats == clean_stats
