"""Kneedle on (log2 b, fitted throughput): a cross-check of the alpha rule, never the answer."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence


def kneedle_knee(sizes: Sequence[int], fit: Sequence[float]) -> int | None:
    peak = fit.index(max(fit))
    xs, ys = [math.log2(b) for b in sizes[: peak + 1]], list(fit[: peak + 1])
    if len(xs) < 3 or ys[-1] <= ys[0]:
        return None
    from kneed import KneeLocator  # lazily: only the knee needs it

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no knee found" is an answer here, not a warning
        # online: keep looking past a first "knee" at a convex start (a sigmoid in log2 b)
        knee = KneeLocator(xs, ys, curve="concave", direction="increasing", online=True).knee
    if knee is None:
        return None
    i = min(range(len(xs)), key=lambda i: abs(xs[i] - knee))
    # kneed answers even for a curve that is convex in log2 b (no bulge above the chord,
    # e.g. throughput linear in b up to a plateau), typically with the first point: no knee
    bulge = (ys[i] - ys[0]) / (ys[-1] - ys[0]) - (xs[i] - xs[0]) / (xs[-1] - xs[0])
    return sizes[i] if bulge > 0 else None
