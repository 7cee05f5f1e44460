"""Test support for DTS: analytic denoisers with known answers and a small reference implementation.

Denoisers follow k-diffusion's convention: denoiser(x [n, ...], sigma [n]) -> estimate of the clean sample.
Each one works sample by sample, so a batch gives bit-identical results to its samples run one at a time.
"""
import math

import torch


class GaussianDenoiser:
    """Data ~ N(0, c^2 I): D(x, s) = x * c^2 / (c^2 + s^2).

    The probability-flow ODE dx/ds = (x - D) / s = x s / (c^2 + s^2) has the exact solution
    x(s) = x(s0) * sqrt(c^2 + s^2) / sqrt(c^2 + s0^2).
    """

    def __init__(self, c=1.0):
        self.c = c

    def __call__(self, x, sigma):
        factor = self.c ** 2 / (self.c ** 2 + sigma ** 2)
        return x * factor.reshape((-1,) + (1,) * (x.ndim - 1))

    def exact(self, x, sigma_start, sigma_end):
        return x * math.sqrt(self.c ** 2 + sigma_end ** 2) / math.sqrt(self.c ** 2 + sigma_start ** 2)


class TemplateMixtureDenoiser:
    """Data = one of M fixed template tensors, equally likely: D(x, s) = sum_m softmax_m(-|x - t_m|^2 / 2s^2) t_m.

    Non-linear (drafts and targets disagree by amounts that depend on the sample), exact posterior mean.
    """

    def __init__(self, templates):
        self.templates = templates  # [M, ...] (one sample's shape)

    def __call__(self, x, sigma):
        outputs = []
        for sample, s in zip(x, sigma):  # sample by sample: batch-independent arithmetic
            squared = ((sample.unsqueeze(0) - self.templates) ** 2).flatten(1).sum(1)
            weights = torch.softmax(-squared / (2 * s ** 2), dim=0)
            outputs.append((weights.reshape((-1,) + (1,) * sample.ndim) * self.templates).sum(0))
        return torch.stack(outputs)


class RecordingModel:
    """Wraps a denoiser; records (batch size, sigma vector, extra_args keys) of every call."""

    def __init__(self, denoiser):
        self.denoiser = denoiser
        self.calls = []

    def __call__(self, x, sigma, **extra_args):
        assert sigma.shape == (x.shape[0],), (sigma.shape, x.shape)
        self.calls.append((x.shape[0], sigma.clone(), sorted(extra_args)))
        return self.denoiser(x, sigma)


def make_templates(num_templates=3, shape=(2, 3, 4, 4), seed=0, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((num_templates,) + shape, generator=generator, dtype=dtype)


def make_noise(batch=1, shape=(2, 3, 4, 4), sigma_max=8.0, seed=1, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((batch,) + shape, generator=generator, dtype=dtype) * sigma_max


def reference_step(denoiser, x, sigmas, i, j):
    """One Euler step from fine position i to j on a single sample x [1, ...] (docs/dts.md, "Exact semantics")."""
    denoised = denoiser(x, sigmas[i].reshape(1))
    if sigmas[j] == 0:
        return denoised
    return x + (sigmas[j] - sigmas[i]) * (x - denoised) / sigmas[i]


def reference_segment_positions(start, end, stride):
    positions = list(range(start, end, stride))
    return positions + [end]


def reference_euler(denoiser, x, sigmas, positions):
    """Euler through the given fine positions, each sample of x alone."""
    outputs = []
    for sample in x.split(1):
        for i, j in zip(positions[:-1], positions[1:]):
            sample = reference_step(denoiser, sample, sigmas, i, j)
        outputs.append(sample)
    return torch.cat(outputs)


def target_grid_positions(num_steps, draft_stride, target_stride):
    """The fine positions plain Euler visits on DTS's target grid (each draft segment cut by target_stride)."""
    positions = [0]
    for start in range(0, num_steps, draft_stride):
        end = min(start + draft_stride, num_steps)
        positions += reference_segment_positions(start, end, target_stride)[1:]
    return positions


def reference_dts(denoiser, x, sigmas, *, draft_stride, target_stride, chunk, threshold, increment, metric="l2"):
    """The rounds of docs/dts.md ("Exact semantics"), written out plainly: per sample, per draft state, no batching.

    Returns (x, accepted per round, new position per round).
    """
    num_steps = len(sigmas) - 1
    position, round_index = 0, 0
    accepted_per_round, positions = [], []
    samples = list(x.split(1))
    while position < num_steps:
        grid = [position]
        for k in range(1, chunk + 1):
            grid.append(min(position + k * draft_stride, num_steps))
            if grid[-1] == num_steps:
                break
        num_drafts = len(grid) - 1
        tau = threshold + round_index * increment
        first_rejected = []  # per sample: 1-based index k* of its first rejected draft, or None
        all_targets = []
        for sample in samples:
            drafts = [sample]
            for k in range(1, num_drafts + 1):
                drafts.append(reference_step(denoiser, drafts[-1], sigmas, grid[k - 1], grid[k]))
            targets = [None]
            for k in range(1, num_drafts + 1):
                state = drafts[k - 1]
                fine = reference_segment_positions(grid[k - 1], grid[k], target_stride)
                for i, j in zip(fine[:-1], fine[1:]):
                    state = reference_step(denoiser, state, sigmas, i, j)
                targets.append(state)
            rejected = None
            for k in range(1, num_drafts + 1):
                difference = (drafts[k] - targets[k]).flatten().float()
                distance = difference.norm()
                if metric == "rms":
                    distance = distance / math.sqrt(difference.numel())
                if distance > tau:
                    rejected = k
                    break
            first_rejected.append(rejected)
            all_targets.append(targets)
        rejections = [k for k in first_rejected if k is not None]
        advance = min(rejections) if rejections else num_drafts
        accepted_per_round.append(advance - 1 if advance in rejections else advance)
        samples = [targets[advance] for targets in all_targets]
        position = grid[advance]
        positions.append(position)
        round_index += 1
    return torch.cat(samples), accepted_per_round, positions
