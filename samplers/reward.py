"""Reward routing for SDVG: per-frame scores and their aggregation over a block."""
import torch


def aggregate(scores, how="min"):
    """Aggregate per-frame scores `[F]` into one block score (a Python float).

    how: "min" (the paper: a block is as good as its worst frame), "mean", or "quantile:q" with q in [0, 1].
    """
    scores = torch.as_tensor(scores, dtype=torch.float64).flatten()
    if scores.numel() == 0:
        raise ValueError("aggregate: scores is empty; expected at least one frame score")
    if how == "min":
        return float(scores.min())
    if how == "mean":
        return float(scores.mean())
    if isinstance(how, str) and how.startswith("quantile:"):
        try:
            q = float(how.split(":", 1)[1])
        except ValueError:
            q = float("nan")
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"aggregation {how!r}: expected 'quantile:q' with q in [0, 1]")
        return float(torch.quantile(scores, q))
    raise ValueError(f"aggregation {how!r}: expected 'min', 'mean' or 'quantile:q'")
