"""Rendering: console tables, markdown, plots and report files. The only package that draws
or writes files (pandas and matplotlib load lazily, on first use)."""

from __future__ import annotations

from .files import (
    PROBE_LOG,
    ProbeLog,
    ReportFiles,
    load_result,
    make_report_dir,
    read_probe_log,
    write_report,
)
from .markdown import summary_markdown

__all__ = ["PROBE_LOG", "ProbeLog", "ReportFiles", "load_result", "make_report_dir", "read_probe_log", "summary_markdown", "write_report"]
