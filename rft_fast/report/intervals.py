"""Confidence intervals for the report's accuracies: each is a proportion of n test images, so small n (a quick
demo's 64 images) gives wide intervals that the report prints beside every accuracy."""

from __future__ import annotations

import math

from rft_fast.checks import is_int, is_real

Z95 = 1.959964  # the standard normal's 97.5% quantile: a two-sided 95% interval


def wilson(p: float, n: int | None, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval (low, high) of a proportion p in [0, 1] observed on n trials; None without n
    (None or 0). Unlike the normal approximation p +- z sqrt(p(1-p)/n) it stays within [0, 1] and is not empty
    at p = 0 or 1 (there it is [0, z^2/(n+z^2)] and [n/(n+z^2), 1])."""
    if not is_real(p) or not 0.0 <= p <= 1.0:
        raise ValueError(f"p: must be a proportion in [0, 1], got {p!r}")
    if n is None or n == 0:
        return None
    if not is_int(n) or n < 0:
        raise ValueError(f"n: must be a count >= 1 (or None), got {n!r}")
    if not (math.isfinite(z) and z > 0):
        raise ValueError(f"z: must be > 0, got {z!r}")
    z2 = z * z
    denominator = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1.0 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)
