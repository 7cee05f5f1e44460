"""Helpers for the benchmark tests: the shipped models (loaded once) and corrupted clips of the toy world."""
import functools

import torch

from bench.world import KINDS, Condition, WorldObject, render, sample_clip


@functools.lru_cache(maxsize=None)
def shipped_models():
    """(target, drafter) WanDiT's from bench/weights, float32, eval mode (loaded once per session)."""
    from bench.models import load_model

    return load_model("target"), load_model("drafter")


@functools.lru_cache(maxsize=None)
def star_target():
    """The star world's model target_stars (loaded once per session)."""
    from bench.models import load_model

    return load_model("target_stars")


@functools.lru_cache(maxsize=None)
def beacon_target():
    """The beacon world's model target_beacon (loaded once per session)."""
    from bench.models import load_model

    return load_model("target_beacon")


def shuffled(clip, seed=0):
    """The clip's frames in a random order that is not the identity (nor the reversal)."""
    frames = clip.shape[1]
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(frames, generator=generator)
        if not torch.equal(order, torch.arange(frames)) and not torch.equal(order, torch.arange(frames).flip(0)):
            return clip[:, order]


def frozen(clip):
    """Every frame replaced by the first one: objects present, no motion."""
    return clip[:, :1].expand_as(clip).clone()


def wrong_colours(clip):
    """RGB channels rotated: every palette colour becomes another palette colour."""
    return clip[[1, 2, 0]].clone()


def wrong_kinds(condition, world=None):
    """The clip of the condition with every object's kind swapped (square <-> plus)."""
    swapped = Condition([WorldObject(o.colour, KINDS[1 - KINDS.index(o.kind)], o.velocity, o.start)
                         for o in condition.objects])
    return render(swapped) if world is None else render(swapped, world)


def ground_truth(seed):
    return sample_clip(seed)


__all__ = ["shipped_models", "star_target", "shuffled", "frozen", "wrong_colours", "wrong_kinds", "ground_truth"]
