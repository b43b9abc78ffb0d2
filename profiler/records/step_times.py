"""Step-time statistics shared by every record that keeps raw step times."""

from __future__ import annotations

import statistics

NOISY_IQR_FRACTION = 0.10  # torch.utils.benchmark warns past this spread


def _quartiles(values: tuple[float, ...]) -> tuple[float, float, float]:
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3
