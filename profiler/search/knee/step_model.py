"""Step time as a fixed cost plus a cost per sample: ``t(b) = overhead_s + per_sample_s * b``.

Why a model at all: the alpha rule reads where throughput crosses alpha * max. On a curve that
saturates slowly (the built-in MLP on a CPU gains ~8% from 512 to 1024) that crossing sits on a
shallow slope, and an isotonic fit, which reads it off the one or two points nearest it, moves
by a doubling when those points shift by a few percent -- as they do between runs on a shared
machine (measured here, 8 runs of ``mlp``: relative throughput at 512 ranged 0.78..0.98 of the
maximum, knees 362..724). Two parameters fitted to every timed size pool all of them: on the
same 8 runs' first four rounds the model's (unrounded) crossing ranged 453..541, and 8 new
runs reading the knee off it gave 362..512.

The model is the classic one for a step that has per-step overhead (kernel launches, Python,
optimizer bookkeeping) and work proportional to the batch; throughput ``b / t(b)`` rises and
saturates at ``1 / per_sample_s``. It does not describe every device: a GPU whose time stays
flat until its cores fill and then grows (close to ``max(a, c b)``), or a CPU whose throughput
falls once activations leave the cache. ``find_knee`` therefore uses it only where it agrees
with the model-free (isotonic) fit; see :func:`agrees`.

Pure numpy; no torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from batchprof.records.search import StepTimeModel


def fit_step_time(sizes: Sequence[int], samples_per_s: Sequence[float],
                  weights: Sequence[float]) -> StepTimeModel | None:
    """Weighted least squares of step time on batch size, in relative terms.

    ``weights`` are inverse variances of each throughput; a throughput's relative error is its
    step time's, so each row is scaled by ``throughput * sqrt(weight)``. None with fewer than
    three sizes, or when the fit has no positive overhead or no positive cost per sample
    (throughput flat from the first size, or growing faster than linearly): the model then
    says nothing the isotonic fit does not.
    """
    if len(sizes) < 3:
        return None
    b = np.asarray(sizes, dtype=float)
    rate = np.asarray(samples_per_s, dtype=float)
    t = b / rate
    scale = rate * np.sqrt(np.asarray(weights, dtype=float)) / t  # 1 / sd(t)
    design = np.stack([np.ones_like(b), b], axis=1) * scale[:, None]
    (overhead, per_sample), *_ = np.linalg.lstsq(design, t * scale, rcond=None)
    if not (overhead > 0 and per_sample > 0):
        return None
    return StepTimeModel(float(overhead), float(per_sample))


def agrees(model: StepTimeModel, sizes: Sequence[int], fitted: Sequence[float],
           from_batch: float, tolerance: float) -> bool:
    """Does the model stay within ``tolerance`` (relative) of a model-free fit at every size
    from ``from_batch`` up? Those sizes decide the knee: the crossing and the maximum."""
    return all(abs(model.samples_per_s(b) / f - 1) <= tolerance
               for b, f in zip(sizes, fitted, strict=True) if b >= from_batch)
