"""Words for the noise scale: its caveats, the one-line reading beside the knee and the max
batch, and the lines the CLI and the Markdown report show. Pure: records in, strings out."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .estimator import format_samples

if TYPE_CHECKING:  # pragma: no cover
    from .record import NoiseScaleResult

ADAPTIVE = "; adaptive: 4 to 8, until the interval is within ±25%"
PAPER = "McCandlish et al. 2018, 'An Empirical Model of Large-Batch Training'"


def caveats(workload: str, builtin_data: bool, given_model: bool,
            has_batchnorm: bool) -> tuple[str, ...]:
    out = []
    if builtin_data:
        out.append(f"{workload} is a built-in workload with random data (nothing to learn): its "
                   "noise scale is meaningless except as a test of the machinery; point batchprof "
                   "at your own workload and data for a figure that means something")
    weights = ("the weights of the model passed in" if given_model
               else "the weights model_fn builds (for a freshly initialized model, the start "
                    "of training)")
    out.append(f"the estimate holds at {weights}; the noise scale grows as training proceeds "
               f"(early in training it is smaller; {PAPER}, section 3), so re-measure later in "
               "training before buying a bigger batch")
    out.append("the estimator assumes loss_fn is a mean over independent samples; B_simple "
               "stands in for the critical batch as the paper does (exact when the Hessian is "
               "a multiple of the identity)")
    if has_batchnorm:
        out.append("the model has BatchNorm: in train mode a sample's gradient depends on the "
                   "rest of its batch, which the estimator assumes it does not; read the figure "
                   "as rough")
    return tuple(out)


def round_sig(value: float, digits: int = 2) -> float:
    """``value`` to ``digits`` significant figures (212 -> 210): the '~' figure of the reading."""
    if value <= 0 or not math.isfinite(value):
        return value
    return round(value, digits - 1 - int(math.floor(math.log10(value))))


def noise_phrase(noise: NoiseScaleResult) -> str:
    e = noise.estimate
    approx = f"~{round_sig(e.noise_scale_samples):,.0f}"
    if e.bounded:
        return f"the noise scale says batches above {approx} waste samples ({e.interval_text()})"
    return (f"the noise scale says batches above {approx} waste samples (at least "
            f"{format_samples(e.interval_low_samples)}; {e.interval_text()})")


def noise_fact(noise: NoiseScaleResult) -> str:
    """The summary tables' cell: the estimate, its interval, the draws and the two sizes."""
    e = noise.estimate
    return (f"{format_samples(e.noise_scale_samples)} samples ({e.interval_text()}; "
            f"{len(e.draws)} draws at batch {noise.small_batch} and {noise.big_batch})")


def reading_line(knee_batch: int | None, noise: NoiseScaleResult | None,
                 max_batch: int | None) -> str:
    """"throughput stops paying above 32; the noise scale says batches above ~200 waste
    samples; the largest that fits is 51", with what is missing said so."""
    knee = (f"throughput stops paying above {knee_batch}" if knee_batch is not None
            else "no throughput knee was found")
    statistical = noise_phrase(noise) if noise is not None else "no noise-scale estimate"
    fits = (f"the largest that fits is {max_batch}" if max_batch is not None
            else "no batch was found to fit")
    return f"{knee}; {statistical}; {fits}"


def detail_lines(noise: NoiseScaleResult) -> list[str]:
    """How it was measured, then the caveats, then the learning-rate hint."""
    e = noise.estimate
    micro = f", accumulated in micro-batches of {noise.micro_batch}" if noise.micro_batch else ""
    lines = [
        f"noise scale B_simple = tr(Σ)/|G|² = {format_samples(e.noise_scale_samples)} samples "
        f"({e.interval_text()}, Fieller's interval over {len(e.draws)} draws"
        f"{ADAPTIVE if noise.options.get('draws') is None else ''})",
        f"measured on {noise.device} from gradients at batch {noise.small_batch} and "
        f"{noise.big_batch}{micro} (big batch: {noise.big_batch_source}); batches: "
        f"{noise.draw_source}; |G|² = {e.grad_sq_norm:.4g}, tr(Σ) = {e.trace_sigma:.4g}; "
        f"{noise.elapsed_s:.1f} s",
        *e.notes,
        *(f"caveat: {c}" for c in noise.caveats),
    ]
    if noise.lr_hint is not None:
        lines += noise.lr_hint.lines()
    return lines


def markdown_lines(noise: NoiseScaleResult | None, knee_batch: int | None,
                   max_batch: int | None) -> list[str]:
    """The report's noise-scale section (nothing when the run did not estimate it)."""
    if noise is None:
        return []
    return ["## Gradient noise scale", "", f"**Reading:** {reading_line(knee_batch, noise, max_batch)}",
            "", *[f"- {line}" for line in detail_lines(noise)], ""]
