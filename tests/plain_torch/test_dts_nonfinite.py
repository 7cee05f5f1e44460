"""A non-finite draft or target state stops DTS with an error naming the phase, the sigma and the fine step; it is
never counted as accepted (a NaN distance passes no `>` test)."""
import math

import pytest
import torch

from samplers.methods.dts import sample_dts
from support.dts import TemplateMixtureDenoiser, make_noise, make_templates

OPTIONS = dict(draft_stride=4, target_stride=2, chunk=3, threshold=math.inf, increment=0.0, rule="distance")
SIGMAS = torch.linspace(8.0, 0.0, 25, dtype=torch.float64)


class NaNOnCall:
    """The mixture denoiser, except that call number `bad_call` (1-based) returns NaN."""

    def __init__(self, bad_call):
        self.denoiser, self.bad_call, self.calls = TemplateMixtureDenoiser(make_templates()), bad_call, 0

    def __call__(self, x, sigma):
        self.calls += 1
        out = self.denoiser(x, sigma)
        return torch.full_like(out, math.nan) if self.calls == self.bad_call else out


def test_a_clean_run_accepts_every_draft_at_an_infinite_threshold():
    stats = {}
    sample_dts(NaNOnCall(bad_call=0), make_noise(), SIGMAS, stats=stats, **OPTIONS)
    assert stats["accepted"] == [3, 3]


def test_a_nan_draft_stops_naming_the_draft_step_its_sigma_and_position():
    stats = {}
    # Round 0 drafts from positions 0, 4, 8 (calls 1-3): call 2 is the draft step at position 4.
    with pytest.raises(FloatingPointError, match=r"DTS: the model's draft step at sigma 6\.66667 \(fine step 4 "
                                                 r"of 24, to step 8\) gave a non-finite state"):
        sample_dts(NaNOnCall(bad_call=2), make_noise(), SIGMAS, stats=stats, **OPTIONS)
    assert stats == {}


def test_a_nan_target_stops_naming_the_target_step_its_sigma_and_position():
    # Call 4 is round 0's first target call: all three segments at once, the first from position 0.
    with pytest.raises(FloatingPointError, match=r"DTS: the model's target step at sigma 8 \(fine step 0 of 24, "
                                                 r"to step 2\) gave a non-finite state"):
        sample_dts(NaNOnCall(bad_call=4), make_noise(), SIGMAS, **OPTIONS)


def test_an_infinite_first_sigma_stops_at_the_first_draft_step():
    sigmas = SIGMAS.clone()
    sigmas[0] = math.inf
    with pytest.raises(FloatingPointError, match=r"draft step at sigma inf \(fine step 0 of 24, to step 4\)"):
        sample_dts(NaNOnCall(bad_call=0), make_noise(), sigmas, **OPTIONS)
