"""``report.html``: the whole run on one self-contained page, to open or attach to a ticket.

No network is needed to view it (and none is allowed: a Content-Security-Policy forbids every
outside resource): the plots are inline SVG drawn by the same matplotlib functions as the
report's PNGs, the style and the one small script (sortable tables, and a record of any script
error or policy violation in ``<html data-errors>``, which the browser test reads) are inline,
the script admitted by its hash only. Every string that came from the user or the run (the
workload name, notes, environment values, error text) is HTML-escaped, so a workload named
``<script>...`` shows as text and runs nothing; the policy would block it even if it did not.
"""

from __future__ import annotations

import base64
import hashlib
import html
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from batchprof.records.frame import batch_rows
from batchprof.records.result import BatchPoint, ProfileResult
from batchprof.units import format_bytes, format_duration

HTML_FILE = "report.html"

_SCRIPT = """
(function () {
  var root = document.documentElement, errors = [];
  function record(text) { errors.push(text); root.setAttribute('data-errors', errors.join(' | ')); }
  window.addEventListener('error', function (e) { record('error: ' + e.message); });
  document.addEventListener('securitypolicyviolation', function (e) {
    record('blocked by policy: ' + e.violatedDirective);
  });
  function key(cell) {
    var v = cell.getAttribute('data-sort');
    return v === null ? cell.textContent : (v === '' ? -Infinity : parseFloat(v));
  }
  function sortBy(table, col, th) {
    var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
    var down = th.getAttribute('aria-sort') === 'ascending';
    rows.sort(function (a, b) {
      var x = key(a.cells[col]), y = key(b.cells[col]);
      return (x < y ? -1 : x > y ? 1 : 0) * (down ? -1 : 1);
    });
    rows.forEach(function (r) { body.appendChild(r); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (c) { c.removeAttribute('aria-sort'); });
    th.setAttribute('aria-sort', down ? 'descending' : 'ascending');
  }
  document.addEventListener('DOMContentLoaded', function () {
    Array.prototype.forEach.call(document.querySelectorAll('table.sortable'), function (table) {
      Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
        th.addEventListener('click', function () { sortBy(table, col, th); });
      });
    });
    root.setAttribute('data-ready', '1');
  });
})();
"""

_STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1150px; padding: 0 1em; color: #1d1d1f; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
.status { display: inline-block; padding: .1em .6em; border-radius: 1em; font-size: .85em; }
.status.complete { background: #e3f6e8; } .status.partial { background: #fdecea; }
.cards { display: flex; flex-wrap: wrap; gap: .8em; margin: 1em 0; }
.card { border: 1px solid #ddd; border-radius: .5em; padding: .6em 1em; min-width: 9em; }
.card .label { font-size: .8em; color: #555; } .card .value { font-size: 1.6em; font-weight: 600; }
table { border-collapse: collapse; margin: .5em 0; } th, td { padding: .25em .6em; }
th { background: #f4f4f6; text-align: left; } td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.sortable th { cursor: pointer; } tbody tr:nth-child(even) { background: #fafafa; }
tr.flag-max td:first-child, tr.flag-knee td:first-child { font-weight: 600; }
.na { color: #999; } .bad { color: #b3261e; }
figure { margin: 1em 0; } figure svg { max-width: 100%; height: auto; }
figcaption { color: #555; font-size: .9em; }
.kv th { width: 16em; vertical-align: top; } .kv td { word-break: break-word; }
"""


def e(value: Any) -> str:
    """Escape anything for HTML text or a quoted attribute."""
    return html.escape("" if value is None else str(value), quote=True)


def _na(text: str) -> str:
    return '<span class="na">n/a</span>' if text == "n/a" else e(text)


def _num_cell(value: float | None, text: str) -> str:
    sort = "" if value is None else repr(float(value))
    return f'<td class="num" data-sort="{sort}">{_na(text)}</td>'


def _fmt(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else fmt.format(value)


# ---- plots as inline SVG --------------------------------------------------------------------
def plot_svgs(result: ProfileResult) -> dict[str, str]:
    """name -> ``<svg>`` markup for every plot the run has data for (text kept as text)."""
    import matplotlib

    from batchprof.render import plots

    plots: dict[str, Callable[[ProfileResult, Path], Path | None]] = {
        "peak memory per batch size": plots.plot_peak_memory,
        "throughput per batch size": plots.plot_throughput,
        "utilization per batch size": plots.plot_utilization,
        "roofline": plots.plot_roofline,
    }
    out: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="batchprof-svg-") as tmp, matplotlib.rc_context(
            {"svg.fonttype": "none", "svg.hashsalt": "batchprof"}):
        for i, (title, plot) in enumerate(plots.items()):
            path = Path(tmp) / f"plot{i}.svg"
            if plot(result, path) is None:
                continue
            svg = path.read_text(encoding="utf-8")
            out[title] = svg[svg.index("<svg"):]  # drop the XML prolog and DOCTYPE
    return out


# ---- sections -------------------------------------------------------------------------------
def _card(label: str, value: str, ident: str) -> str:
    return (f'<div class="card"><div class="label">{e(label)}</div>'
            f'<div class="value" id="{ident}">{_na(value)}</div></div>')


def _summary(result: ProfileResult) -> str:
    knee = result.knee
    alpha = result.spec.alpha if result.spec is not None else result.options.get("alpha", "?")
    cards = [
        _card("max feasible batch", str(result.max_batch or "n/a"), "max-batch"),
        _card(f"knee (alpha {alpha})", str(result.knee_batch or "n/a"), "knee-batch"),
        _card("knee (alpha 0.95)", str(result.knee_batch_95 or "n/a"), "knee-batch-95"),
        _card("recommended batch", str(result.recommended_batch or "n/a"), "recommended-batch"),
        _card("memory budget", format_bytes(result.capacity_bytes), "memory-budget"),
        _card("probes", str(len(result.probes)), "probe-count"),
        _card("time", format_duration(result.elapsed_s), "elapsed"),
    ]
    facts = [("knee confidence", knee.confidence if knee else "n/a"),
             ("knee range (resampled)", f"{knee.knee_interval[0]}..{knee.knee_interval[1]}"
              if knee and knee.knee_interval else "n/a")]
    if result.noise_scale is not None:
        from batchprof.noise.text import noise_fact

        facts.append(("noise scale (critical batch)", noise_fact(result.noise_scale)))
    if result.error:
        facts.append(("error", result.error))
    rows = "".join(f"<tr><th>{e(k)}</th><td>{_na(v)}</td></tr>" for k, v in facts)
    return (f'<section id="summary"><div class="cards">{"".join(cards)}</div>'
            f'<p id="recommendation"><strong>Recommendation:</strong> '
            f"{e(result.recommendation_reason)}</p>"
            f'<table class="kv">{rows}</table></section>')


def _predicted(result: ProfileResult) -> dict[int, int]:
    return {m.batch_size: m.predicted_peak_allocated_bytes for m in result.probes
            if m.predicted_peak_allocated_bytes is not None}


def _flags(result: ProfileResult, b: int) -> list[str]:
    return [name for name, value in (("max", result.max_batch), ("knee", result.knee_batch),
                                     ("recommended", result.recommended_batch)) if value == b]


def _batch_row(result: ProfileResult, p: BatchPoint, predicted: dict[int, int],
               row: dict[str, Any]) -> str:
    """One row of the per-batch table. Throughput figures come from ``row``
    (records.frame.batch_rows), as in the markdown and the frame, so no two outputs differ:
    the share of best is the sweep's *measured* throughput over the best measured one; the
    knee's fit has its own column, labelled."""
    pred = predicted.get(p.batch_size)
    peak = p.peak_allocated_bytes
    error = (pred - peak) / peak if pred is not None and peak else None
    fit = row.get("fitted_samples_per_s")
    share = row.get("share_of_best")
    rate = p.samples_per_s if p.samples_per_s is not None else row.get("sweep_samples_per_s")
    median = p.step_time_median_s
    flags = _flags(result, p.batch_size)
    cells = [
        _num_cell(p.batch_size, str(p.batch_size)),
        f"<td>{'yes' if p.feasible else '<span class=bad>no</span>'}</td>",
        _num_cell(p.runs, str(p.runs)),
        _num_cell(peak, format_bytes(peak)),
        _num_cell(pred, format_bytes(pred)),
        _num_cell(error, _fmt(error, "{:+.1%}")),
        _num_cell(p.activation_bytes, format_bytes(p.activation_bytes)),
        _num_cell(median, format_duration(median)),
        _num_cell(p.step_time_iqr_fraction, _fmt(p.step_time_iqr_fraction, "{:.0%}")),
        _num_cell(rate, _fmt(rate, "{:,.1f}")),
        _num_cell(fit, _fmt(fit, "{:,.1f}")),
        _num_cell(share, _fmt(share, "{:.0%}")),
    ]
    if result.dataset_size is not None:
        steps, epoch = row.get("steps_per_epoch"), row.get("epoch_time_s")
        cells += [_num_cell(steps, str(steps)), _num_cell(epoch, format_duration(epoch))]
    cells.append(f"<td>{e(', '.join(flags))}</td>")
    cls = " ".join(f"flag-{f}" for f in flags)
    return f'<tr data-batch="{p.batch_size}" class="{cls}">{"".join(cells)}</tr>'


def _per_batch_table(result: ProfileResult) -> str:
    points = result.points()
    if not points:
        return "<p>No batch size was measured.</p>"
    predicted = _predicted(result)
    rows = {r["batch_size"]: r for r in batch_rows(result)}
    headers = ["batch", "fits", "runs", "peak measured", "peak predicted", "prediction error",
               "activations", "step time (median)", "spread (IQR)", "samples/s (measured)",
               "samples/s (fitted)", "share of best (measured)"]
    if result.dataset_size is not None:
        headers += ["steps/epoch", "epoch time"]
    headers.append("marks")
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join(_batch_row(result, p, predicted, rows.get(p.batch_size, {})) for p in points)
    note = ("" if predicted else "<p class=na>No per-batch memory prediction was recorded for "
            "this run (peak predicted: n/a).</p>")
    return (f'<table id="per-batch" class="sortable"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table>{note}")


def _kv_table(items: Iterable[tuple[str, Any]], ident: str) -> str:
    rows = []
    for key, value in items:
        if isinstance(value, dict):
            inner = _kv_table(value.items(), "")
            rows.append(f"<tr><th>{e(key)}</th><td>{inner}</td></tr>")
        else:
            text = "n/a" if value is None else (", ".join(map(str, value))
                                                if isinstance(value, (list, tuple)) else str(value))
            rows.append(f"<tr><th>{e(key)}</th><td>{_na(text)}</td></tr>")
    attr = f' id="{ident}"' if ident else ""
    return f'<table class="kv"{attr}>{"".join(rows)}</table>'


def _plots(svgs: dict[str, str]) -> str:
    if not svgs:
        return "<p>No plots: nothing was measured.</p>"
    return "".join(f'<figure data-plot="{e(title)}">{svg}<figcaption>{e(title)}</figcaption>'
                   "</figure>" for title, svg in svgs.items())


# ---- the page -------------------------------------------------------------------------------
def render_html(result: ProfileResult, svgs: dict[str, str] | None = None) -> str:
    """The report page as one string. ``svgs`` (title -> ``<svg>``) defaults to
    :func:`plot_svgs`; pass ``{}`` for a page without plots."""
    svgs = plot_svgs(result) if svgs is None else svgs
    digest = base64.b64encode(hashlib.sha256(_SCRIPT.encode("utf-8")).digest()).decode("ascii")
    policy = (f"default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-{digest}'; "
              "img-src data:; base-uri 'none'; form-action 'none'")
    status = ("partial (interrupted)" if result.interrupted
              else "partial (error)" if result.error else "complete")
    notes = "".join(f"<li>{e(n)}</li>" for n in result.notes) or "<li>none</li>"
    title = f"batchprof report: {result.workload}"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{e(policy)}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)}</title>
<style>{_STYLE}</style>
<script>{_SCRIPT}</script>
</head>
<body>
<h1 id="title">{e(title)}</h1>
<p>{e(result.device)} · started {e(result.started_at or "n/a")} ·
<span class="status {status.split()[0]}" id="status">{e(status)}</span></p>
<h2>Summary</h2>
{_summary(result)}
<h2>Plots</h2>
{_plots(svgs)}
<h2>Per batch size</h2>
<p>Measured and predicted peak memory side by side; click a column to sort.</p>
{_per_batch_table(result)}
<h2>Notes</h2>
<ul id="notes">{notes}</ul>
<h2>Options</h2>
{_kv_table(sorted(result.options.items()), "options")}
<h2>Environment</h2>
{_kv_table(result.environment.items(), "environment")}
</body>
</html>
"""


def write_html(result: ProfileResult, directory: str | os.PathLike) -> Path:
    """Write ``report.html`` into ``directory``; returns its path."""
    path = Path(directory) / HTML_FILE
    path.write_text(render_html(result), encoding="utf-8")
    return path
