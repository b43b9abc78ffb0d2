"""The report directory: the probe log, results.json/csv, probes.csv, summary.md and plots.

A report directory ``reports/<workload>-<timestamp>/`` holds:

- ``probes.jsonl``: every Measurement, appended by :class:`ProbeLog` as each probe completes
  (so a crash or Ctrl-C loses nothing already measured);
- ``results.json``: the whole ProfileResult (every raw measurement, options, environment);
- ``report.html``: everything on one self-contained page (:mod:`batchprof.render.html`);
- ``results.csv``: the table of :func:`result_frame` (one row per batch size, flags, predicted
  beside measured);
- ``probes.csv``: one row per probe, in run order;
- ``summary.md``: what a person reads first;
- ``peak_memory.png`` and ``throughput.png``; ``utilization.png`` when probes carried sampler
  data and ``roofline.png`` when the run computed roofline figures.

Tables come from :mod:`batchprof.records.frame`, plots from :mod:`batchprof.render.plots`,
the summary from :mod:`batchprof.render.markdown`.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from batchprof.errors import ConfigError, ReportFileError
from batchprof.records.frame import probes_frame, result_frame
from batchprof.records.measurement import Measurement
from batchprof.records.result import ProfileResult
from batchprof.render.atomic import write_text_atomic, write_with
from batchprof.render.html import write_html
from batchprof.render.markdown import summary_markdown
from batchprof.render.plots import (
    plot_peak_memory,
    plot_roofline,
    plot_throughput,
    plot_utilization,
)

DEFAULT_REPORTS_DIR = "reports"


PROBE_LOG = "probes.jsonl"


# ---------------------------------------------------------------------------------------------
# The report directory and the probe log
# ---------------------------------------------------------------------------------------------
def make_report_dir(workload_name: str, root: str | os.PathLike = DEFAULT_REPORTS_DIR,
                    now: datetime | None = None) -> Path:
    """Create and return ``root/<workload>-<YYYYmmdd-HHMMSS>`` (suffixed -2, -3... if taken).

    Raises ConfigError when ``root`` is a file, or cannot be created or written to.
    """
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", workload_name).strip("._") or "workload"
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"--out {str(root)!r} is an existing file, not a directory; "
                          "name a directory for the reports")
    for n in range(1, 1000):
        path = root / (f"{safe}-{stamp}" if n == 1 else f"{safe}-{stamp}-{n}")
        try:
            root.mkdir(parents=True, exist_ok=True)
            path.mkdir()
            (path / ".write-check").touch()
            (path / ".write-check").unlink()
        except FileExistsError:
            continue
        except OSError as exc:
            raise ConfigError(f"cannot write reports under --out {str(root)!r}: "
                              f"{exc.strerror or type(exc).__name__}; name a directory you "
                              "can write to") from None
        return path
    raise FileExistsError(f"no free report directory name under {root} for {safe}-{stamp}")


class ProbeLog:
    """Appends each Measurement to a JSON-lines file as it completes, flushed to disk."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()

    def append(self, m: Measurement) -> None:
        self._fh.write(json.dumps(m.to_dict()) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())  # a probe costs seconds; losing one to a crash costs more

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> ProbeLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_probe_log(path: str | os.PathLike) -> list[Measurement]:
    """Every Measurement in a probes.jsonl, in run order.

    A torn last line (the run was killed while writing it) is skipped; any other line that is
    not a Measurement raises ReportFileError naming the file and the line.
    """
    lines = _read_text(Path(path)).splitlines()
    out = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(Measurement.from_dict(json.loads(line)))
        except Exception as exc:  # noqa: BLE001 - any malformed line gets the same message
            if number == len(lines):
                break
            raise ReportFileError(f"{path}: line {number} is not a probe record "
                                  f"({type(exc).__name__}); the probe log is corrupted") from None
    return out


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ReportFileError(f"cannot read {path}: {reason or type(exc).__name__}") from None


# ---------------------------------------------------------------------------------------------
# The whole report
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReportFiles:
    directory: Path
    results_json: Path
    results_csv: Path
    probes_csv: Path
    summary_md: Path
    peak_memory_png: Path
    throughput_png: Path
    probes_jsonl: Path | None  # present when a ProbeLog wrote into the directory


FILE_DESCRIPTIONS = {
    "report.html": "the whole report on one self-contained page (plots inline)",
    "summary.md": "this summary",
    "results.json": "every raw measurement, options, environment",
    "results.csv": "one row per batch size: every figure, max/knee/recommended flags",
    "probes.csv": "one row per probe, in run order",
    PROBE_LOG: "every probe, appended as it completed",
    "peak_memory.png": "peak memory vs batch size",
    "throughput.png": "throughput vs batch size",
    "utilization.png": "sampled utilization vs batch size",
    "roofline.png": "each batch size on the measured roofline (FLOP/s vs intensity)",
}


def write_report(result: ProfileResult, directory: str | os.PathLike) -> ReportFiles:
    """Write results.json/.csv, probes.csv, summary.md, report.html and the plots into
    ``directory``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    log = d / PROBE_LOG
    data = result.to_dict()
    # Atomic (tmp + os.replace): a reader, or a crash mid-write, never sees half a file.
    write_text_atomic(d / "results.json", json.dumps(data, indent=2, default=str) + "\n")
    write_with(d / "results.csv", lambda p: result_frame(result).to_csv(p))  # batch_size index
    write_with(d / "probes.csv", lambda p: probes_frame(result).to_csv(p, index=False))
    plot_peak_memory(result, d / "peak_memory.png")
    plot_throughput(result, d / "throughput.png")
    optional = {"utilization.png": plot_utilization(result, d / "utilization.png"),
                "roofline.png": plot_roofline(result, d / "roofline.png")}
    files = {k: v for k, v in FILE_DESCRIPTIONS.items()
             if (k != PROBE_LOG or log.exists()) and optional.get(k, True) is not None}
    write_text_atomic(d / "summary.md", summary_markdown(result, files))
    write_html(result, d)
    return ReportFiles(d, d / "results.json", d / "results.csv", d / "probes.csv",
                       d / "summary.md", d / "peak_memory.png", d / "throughput.png",
                       log if log.exists() else None)


def load_result(directory_or_file: str | os.PathLike) -> ProfileResult:
    """Read a ProfileResult back from a report directory or its results.json."""
    path = Path(directory_or_file)
    if path.is_dir():
        path = path / "results.json"
    text = _read_text(path)
    try:
        return ProfileResult.from_dict(json.loads(text))
    except Exception as exc:  # noqa: BLE001 - truncated or edited: one message, not a traceback
        raise ReportFileError(f"{path} is not a complete batchprof results.json "
                              f"({type(exc).__name__}: {str(exc)[:80]}); was the run cut off? "
                              "Its probes.jsonl keeps every finished probe") from None
