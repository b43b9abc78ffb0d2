"""What one part of the check writes: a JSON file rewritten after every figure, so a part
killed at its time box still leaves everything it had measured.

Layout of a part's result (also one entry of gpu-check.json's "parts")::

    {"part": "oom", "status": "passed" | "failed" | "skipped" | "error" | "timeout" | "not-run",
     "reason": str | None,              # why skipped / error / timeout
     "budget_s": 30, "elapsed_s": 12.3,
     "figures": {...},                  # everything measured, JSON-able, units in the names
     "rows": [{...}, ...],              # tabular figures (e.g. one per model x dtype x batch)
     "checks": [{"name": ..., "ok": true | false | null, "detail": ...}],  # null: not judged
     "errors": [{"where": ..., "type": ..., "message": ...}],  # caught, the part went on
     "notes": [...]}
A part is "failed" when a check is false or an error was caught, "skipped" when it said so
(and why), "error" when it crashed, "timeout" when the driver killed it at its time box.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

STATUSES = ("passed", "failed", "skipped", "error", "timeout", "not-run")


def write_json(path: Path, data: Any) -> None:
    """Atomic: a reader (or a kill) never sees half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str, allow_nan=True))
    os.replace(tmp, path)


def error_entry(where: str, exc: BaseException) -> dict[str, Any]:
    tail = traceback.format_exception(type(exc), exc, exc.__traceback__)[-3:]
    return {"where": where, "type": type(exc).__name__,
            "message": str(exc).strip()[:2000] or type(exc).__name__,
            "traceback_tail": "".join(tail)[-1500:]}


class Recorder:
    def __init__(self, part: str, path: Path, budget_s: float, dry_run: bool):
        self.path, self.dry_run = path, dry_run
        self.started = time.monotonic()
        self.budget_s = budget_s
        self.data: dict[str, Any] = {"part": part, "status": "running", "reason": None,
                                     "budget_s": budget_s, "elapsed_s": 0.0, "figures": {},
                                     "rows": [], "checks": [], "errors": [], "notes": []}
        self.save()

    # ---- time ---------------------------------------------------------------------------
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    def left_s(self) -> float:
        return self.budget_s - self.elapsed_s()

    # ---- what a part reports ------------------------------------------------------------
    def figure(self, key: str, value: Any) -> None:
        self.data["figures"][key] = value
        self.save()

    def row(self, **values: Any) -> dict[str, Any]:
        self.data["rows"].append(values)
        self.save()
        return values

    def check(self, name: str, ok: bool | None, detail: str = "") -> bool | None:
        self.data["checks"].append({"name": name, "ok": ok, "detail": detail})
        self.save()
        return ok

    def note(self, text: str) -> None:
        self.data["notes"].append(text)
        self.save()

    def skip(self, reason: str) -> None:
        """The part's purpose cannot be served here (what it could still check, it did)."""
        self.data["status"], self.data["reason"] = "skipped", reason
        self.save()

    @contextmanager
    def attempt(self, where: str) -> Iterator[None]:
        """Run one item; an exception is recorded with its message and the part goes on."""
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - a library bug is a finding, not a crash
            self.data["errors"].append(error_entry(where, exc))
            self.save()

    # ---- end ----------------------------------------------------------------------------
    def finish(self) -> None:
        d = self.data
        if d["status"] == "running":
            bad = any(c["ok"] is False for c in d["checks"]) or d["errors"]
            d["status"] = "failed" if bad else "passed"
        self.save()

    def crash(self, exc: BaseException) -> None:
        self.data["errors"].append(error_entry("part", exc))
        self.data["status"] = "error"
        self.data["reason"] = f"{type(exc).__name__}: {str(exc).strip()[:500]}"
        self.save()

    def save(self) -> None:
        self.data["elapsed_s"] = round(self.elapsed_s(), 3)
        write_json(self.path, self.data)
