"""What exact sampling makes of one late-settled two-way choice: `python -m bench.posterior`.

One pixel is dark (latent -1 in all 3 channels) or lit (latent 0, a star or a lit beacon) with prior probability
`lit`; everything else about it is fixed. Along the line through the two values the flow-matching posterior mean
is known in closed form, so plain Euler with the EXACT denoiser can be run on many noise draws: the share of them
that end further than bench/check.py's STAR_CLEAN_DISTANCE from both values is what any sampler with that step
schedule would smear even with a perfect model. This is how the beacon world (bench/world.py) was shaped, before
any model was trained on it: with Euler on the benchmark's schedule (shift 3), 10 steps smear 3.3 % of a beacon's
choices, 50 and 100 steps none.
"""
import argparse

import numpy as np

from .check import STAR_CLEAN_DISTANCE
from .models import flow_sigmas
from .world import BACKGROUND, BEACON_LIT, STAR_LEVEL


def smear_rate(steps, lit=BEACON_LIT, shift=3.0, draws=200_000, seed=0):
    """Share of draws that plain Euler-`steps` with the exact posterior mean leaves smeared (float)."""
    separation = float(np.linalg.norm(np.subtract(STAR_LEVEL, BACKGROUND))) * 2.0  # latent units (x2 of RGB)
    rng = np.random.default_rng(seed)
    sigmas = flow_sigmas(steps, shift=shift).double().numpy()
    is_lit = rng.random(draws) < lit
    clean = np.where(is_lit, separation, 0.0)  # the coordinate along the line from dark (0) to lit
    x = (1.0 - sigmas[0]) * clean + sigmas[0] * rng.standard_normal(draws)
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
        # log-odds of lit given x = (1 - sigma) clean + sigma noise
        log_odds = np.log(lit / (1.0 - lit)) + ((x ** 2) - (x - (1.0 - sigma) * separation) ** 2) / (2 * sigma ** 2)
        denoised = separation / (1.0 + np.exp(-np.clip(log_odds, -60.0, 60.0)))
        x = denoised if sigma_next == 0 else x + (sigma_next - sigma) * (x - denoised) / sigma
    rgb = x / 2.0  # back to RGB distance from black along the line
    tolerance = STAR_CLEAN_DISTANCE
    return float(np.mean((rgb > tolerance) & (rgb < separation / 2.0 - tolerance)))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.posterior", description=__doc__.split("\n")[0])
    parser.add_argument("--lit", type=float, default=BEACON_LIT, help="prior probability of lit (stars: 0.25)")
    parser.add_argument("--frames", type=int, default=12, help="choices per clip (the beacon world: 12 frames)")
    args = parser.parse_args(argv)
    print("| Euler steps | smeared choices | clips with one or more of their choices smeared |")
    print("|---|---|---|")
    for steps in (10, 20, 50, 100, 200):
        rate = smear_rate(steps, args.lit)
        print(f"| {steps} | {100 * rate:.2f} % | {100 * (1 - (1 - rate) ** args.frames):.1f} % |")


if __name__ == "__main__":
    main()
