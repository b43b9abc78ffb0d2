"""Common-mode drift between the rounds of a throughput sweep, and its removal.

On a shared machine (this project's 2-core VM has noisy neighbours) a whole round of a sweep
runs 10–20% faster or slower than the next, while the sizes inside one round keep their
ratios far better: measured on the mlp (13 sizes, 24 rounds of 2 timed steps), the spread of
log throughput between rounds was 0.08–0.18 per size, and 0.04–0.11 after each round's common
factor was taken out. The knee is a ratio (throughput at b against the best), so the common
factor is noise to it.

The model: log(median step time of the visit of size b in round r) = round effect + size
effect + residual, fitted by least squares, then again without the visits more than three
robust scales off the first fit (one disturbed visit must not move its round). Cells may be
missing: refinement rounds visit only a few sizes, and least squares stays exact on such an
unbalanced table where median polish does not (it settled on wrong effects when tried). Each
visit's median step time is divided by exp(its round effect), rounds centred on their median,
so the corrected times keep their scale.
Pure: no torch.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

OUTLIER_SCALES = 3.0  # a visit this many robust scales off the fit is set aside


MIN_SCALE = 0.01  # log units: below this, timing noise is too small to call anything outlying


@dataclass(frozen=True)
class Visit:
    """One visit of a sweep: ``batch_size`` timed in round ``round_index``."""

    round_index: int
    batch_size: int
    step_times_s: tuple[float, ...]


def round_factors(visits: Sequence[Visit]) -> dict[int, float]:
    """Each round's common slow-down factor (1.0 = a typical round).

    A round that visited fewer than two sizes cannot separate its drift from its size, and
    keeps 1.0; so does everything when fewer than two such rounds exist.
    """
    cells: dict[tuple[int, int], float] = {}  # a repeated visit in one round: the later one
    for v in visits:
        if v.step_times_s and (median := statistics.median(v.step_times_s)) > 0:
            cells[v.round_index, v.batch_size] = math.log(median)
    counts = Counter(r for r, _ in cells)
    rounds = sorted(r for r, n in counts.items() if n >= 2)
    factors = {v.round_index: 1.0 for v in visits}
    if len(rounds) < 2:
        return factors
    keys = [k for k in cells if k[0] in rounds]
    sizes = sorted({b for _, b in keys})
    row = {r: i for i, r in enumerate(rounds)}
    col = {b: len(rounds) + j for j, b in enumerate(sizes)}
    design = np.zeros((len(keys), len(rounds) + len(sizes)))
    for i, (r, b) in enumerate(keys):
        design[i, row[r]] = design[i, col[b]] = 1.0
    y = np.array([cells[k] for k in keys])
    keep = np.ones(len(keys), dtype=bool)
    for _ in range(2):  # fit, set the outlying visits aside, fit again
        solution = np.linalg.lstsq(design[keep], y[keep], rcond=None)[0]
        keep = _inliers(keys, y - design @ solution)
    effects = solution[: len(rounds)] - np.median(solution[: len(rounds)])
    factors.update({r: float(math.exp(e)) for r, e in zip(rounds, effects, strict=True)})
    return factors


def _inliers(keys: Sequence[tuple[int, int]], residuals: np.ndarray) -> np.ndarray:
    """Visits within OUTLIER_SCALES robust scales of the fit; a round keeps at least two."""
    scale = max(1.4826 * float(np.median(np.abs(residuals))), MIN_SCALE)
    keep = np.ones(len(keys), dtype=bool)
    left = Counter(r for r, _ in keys)
    for i in np.argsort(-np.abs(residuals)):
        r = keys[i][0]
        if abs(residuals[i]) <= OUTLIER_SCALES * scale:
            break
        if left[r] > 2:
            keep[i], left[r] = False, left[r] - 1
    return keep


def corrected_medians(visits: Sequence[Visit]) -> dict[int, tuple[float, ...]]:
    """Each size's visits, one value per visit: its median step time divided by its round's
    factor. One value per visit, not every step time: steps inside one visit share that
    moment's conditions, and the mlp's corrected visit medians spread 2–3x more (sd of log
    0.05–0.10) than their own step times suggest (0.03); a spread or a bootstrap over step
    times would be overconfident."""
    factors = round_factors(visits)
    pooled: dict[int, list[float]] = {}
    for v in visits:
        if v.step_times_s:
            pooled.setdefault(v.batch_size, []).append(
                statistics.median(v.step_times_s) / factors[v.round_index])
    return {b: tuple(ts) for b, ts in sorted(pooled.items())}
