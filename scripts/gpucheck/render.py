"""gpu-check.json -> gpu-check.md and the console summary (stdlib only)."""

from __future__ import annotations

import json
from typing import Any

MARK = {True: "pass", False: "FAIL", None: "n/j"}  # n/j: not judged (the detail says why)
MAX_CELL = 90


def _cell(value: Any) -> str:
    if isinstance(value, float):
        text = f"{value:.6g}"
    elif isinstance(value, (dict, list)):
        text = json.dumps(value, default=str)
    else:
        text = "n/a" if value is None else str(value)
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= MAX_CELL else text[:MAX_CELL - 1] + "…"


def _table(rows: list[dict[str, Any]], skip: tuple[str, ...] = ()) -> list[str]:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns and k not in skip]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return lines


def check_counts(part: dict[str, Any]) -> dict[str, int]:
    checks = part.get("checks", [])
    return {"passed": sum(c["ok"] is True for c in checks),
            "failed": sum(c["ok"] is False for c in checks),
            "not_judged": sum(c["ok"] is None for c in checks),
            "errors": len(part.get("errors", []))}


def summary_lines(report: dict[str, Any]) -> list[str]:
    lines = [f"{'part':<18} {'status':<8} {'time':>12}  checks (pass/FAIL/n.j.)  errors  reason"]
    for p in report["parts"]:
        n = check_counts(p)
        box = f"{p.get('elapsed_s', 0):.0f}/{p.get('budget_s', 0):.0f} s"
        lines.append(f"{p['part']:<18} {p['status']:<8} {box:>12}  "
                     f"{n['passed']:>4}/{n['failed']}/{n['not_judged']:<14} {n['errors']:>6}  "
                     f"{(p.get('reason') or '')[:100]}")
    s = report["summary"]
    lines.append(f"total {s['elapsed_s']:.0f} s of {s['total_budget_s']:.0f} s; parts: "
                 + ", ".join(f"{k} {v}" for k, v in s["statuses"].items()))
    return lines


def markdown(report: dict[str, Any]) -> str:
    env = report.get("environment", {})
    title = "batchprof GPU check" + (" — DRY RUN on the CPU" if report["dry_run"] else "")
    out = [f"# {title}", "",
           f"Started {report['started_at']} on `{report['host']}`; GPU: "
           f"{_cell(env.get('gpu'))}; torch {_cell(env.get('torch'))}; python "
           f"{_cell(env.get('python'))}.", ""]
    if report["dry_run"]:
        out += ["A dry run exercises the kit's own logic on the CPU with tiny shapes; parts "
                "that need CUDA say so as `skipped` with the reason. No figure here is a GPU "
                "figure.", ""]
    out += ["## Summary", "", "```", *summary_lines(report), "```", ""]
    name = report["summary"].get("record_name")
    if name:
        out += [f"To keep these figures: `cp gpu-check.json tests/data/gpu/{name}` "
                "(tests/test_gpu_check.py re-checks the prediction against them).", ""]
    inst = report.get("install", {})
    out += ["## Install", "", f"method: **{inst.get('method')}**, ok: {inst.get('ok')}; "
            f"optional libraries: {_cell((inst.get('info') or {}).get('optional'))}", ""]
    for a in inst.get("attempts", []):
        out.append(f"- {a['step']}: exit {a['exit_code']} in {a['elapsed_s']} s"
                   + (f" — `{_cell(a['stderr_tail'])}`" if a.get("stderr_tail") else ""))
    out += ["", "## Environment", "", "```", json.dumps(env, indent=1, default=str), "```", ""]
    for p in report["parts"]:
        out += _part_section(p)
    return "\n".join(out) + "\n"


def _part_section(p: dict[str, Any]) -> list[str]:
    out = [f"## {p['part']} — {p['status']}", "", p.get("description", ""), "",
           f"time: {p.get('elapsed_s', 0):.1f} s of a {p.get('budget_s', 0):.0f} s box"]
    if p.get("reason"):
        out += ["", f"**reason:** {p['reason']}"]
    if p.get("checks"):
        out += ["", "| check | result | detail |", "|---|---|---|"]
        out += [f"| {_cell(c['name'])} | {MARK[c['ok']]} | {_cell(c['detail'])} |"
                for c in p["checks"]]
    if p.get("figures"):
        out += ["", "Figures:", "", "```", json.dumps(p["figures"], indent=1, default=str)[:20000],
                "```"]
    if p.get("rows"):
        out += ["", *_table(p["rows"], skip=("spec", "corrections", "notes"))]
    for e in p.get("errors", []):
        out += ["", f"**error** in {e['where']}: `{e['type']}: {_cell(e['message'])}`", "",
                "```", e.get("traceback_tail", "").strip(), "```"]
    for n in p.get("notes", []):
        out += ["", f"note: {n}"]
    if p.get("log_tail") and p["status"] not in ("passed", "skipped"):
        out += ["", "log tail:", "", "```", p["log_tail"], "```"]
    return out + [""]
