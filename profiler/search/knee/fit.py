"""Model-free fits of throughput on batch size (isotonic, unimodal) and the alpha rule on them.

Pure: no torch."""

from __future__ import annotations

import math
from collections.abc import Sequence

PLATEAU_GAIN = 0.05  # a doubling that gains less than this is on the plateau


FALL_CHI2 = 9.0  # weighted-SSE gain (a chi-square, ~3 sigma) to accept "throughput falls"


TOLERANCE_SE = 1.0  # a point within this many standard errors of alpha * max reaches it


def pava(y: Sequence[float], w: Sequence[float]) -> tuple[list[float], list[float]]:
    """Weighted non-decreasing least-squares fit (pool adjacent violators).

    Returns the fit and, for each prefix length 0..n, the weighted SSE of that prefix's fit.
    """
    blocks: list[list[float]] = []  # [sum w, sum w*y, sum w*y^2, count]
    sse, sses = 0.0, [0.0]

    def block_sse(b: list[float]) -> float:
        return max(0.0, b[2] - b[1] * b[1] / b[0])

    for yi, wi in zip(y, w, strict=True):
        block = [wi, wi * yi, wi * yi * yi, 1.0]
        while blocks and blocks[-1][1] / blocks[-1][0] > block[1] / block[0]:
            prev = blocks.pop()
            sse -= block_sse(prev)
            block = [a + b for a, b in zip(prev, block, strict=True)]
        blocks.append(block)
        sse += block_sse(block)
        sses.append(sse)
    return [float(b[1] / b[0]) for b in blocks for _ in range(int(b[3]))], sses


def fit_throughput(y: Sequence[float], w: Sequence[float], allow_fall: bool | None
         ) -> tuple[list[float], bool]:
    """Monotone fit, or unimodal (rises, then falls) when that fits clearly better.

    ``allow_fall=None`` decides: unimodal when it lowers the weighted SSE (a chi-square, as
    weights are inverse variances) by more than FALL_CHI2 and the fitted fall is material.
    """
    rising, pre = pava(y, w)
    if allow_fall is False or len(y) < 3:
        return rising, False
    _, suf = pava(y[::-1], w[::-1])
    n = len(y)
    k = min(range(1, n + 1), key=lambda k: (pre[k] + suf[n - k], -k))
    if k == n:
        return rising, False
    fall = pava(y[k:][::-1], w[k:][::-1])[0][::-1]
    fit = pava(y[:k], w[:k])[0] + fall
    if allow_fall is None and not (pre[n] - pre[k] - suf[n - k] > FALL_CHI2
                                   and fit[-1] < (1 - PLATEAU_GAIN) * max(fit)):
        return rising, False
    return fit, True


def alpha_knee(sizes: Sequence[int], fit: Sequence[float], alpha: float,
                weights: Sequence[float] | None = None) -> int:
    """Smallest b whose fitted throughput reaches alpha * max, or (given inverse-variance
    weights) falls short of it by less than one standard error of the difference. The max of a
    noisy fit is biased up and a plateau point that came out low would otherwise move the knee
    along the plateau: tolerance by one standard error keeps repeated runs together."""
    top = max(range(len(fit)), key=fit.__getitem__)
    block_weight = [0.0] * len(fit)  # a fitted value's weight is that of its pooled block
    if weights is not None:
        start = 0
        for i in range(1, len(fit) + 1):
            if i == len(fit) or fit[i] != fit[start]:
                block_weight[start:i] = [sum(weights[start:i])] * (i - start)
                start = i
    for b, f, wb in zip(sizes, fit, block_weight, strict=True):
        se = math.sqrt(1 / wb + alpha**2 / block_weight[top]) if weights is not None else 0.0
        if f >= alpha * fit[top] - TOLERANCE_SE * se:
            return b
    raise AssertionError("unreachable: the maximum itself qualifies")
