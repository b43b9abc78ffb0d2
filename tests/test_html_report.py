"""report.html (issue 16): one self-contained page, every user string escaped, checked in a
real headless Chromium (Debian's `chromium`; `make test` installs it where it can, else the
browser test skips and says why)."""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

import batchprof
from batchprof.backends.fake import FakeBackend
from batchprof.probe import TimingPolicy
from batchprof.render.files import load_result, write_report
from batchprof.render.html import HTML_FILE, render_html

from .helpers import tiny_workload

HOSTILE = '<script>document.documentElement.setAttribute("data-pwned","1")</script>net&"q"'
BASE, PER_SAMPLE = 10**6, 10**4


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory) -> Path:
    """A real (FakeBackend-scripted) profile with a knee, an epoch size and a hostile name."""
    backend = FakeBackend(lambda b: BASE + PER_SAMPLE * b, BASE + PER_SAMPLE * 24 + 1,
                          step_time_fn=lambda b: b / (100.0 * min(b, 8)))
    result = batchprof.profile(
        tiny_workload(name=HOSTILE), backend=backend, use_prediction=False, dataset_size=50_000,
        timing=TimingPolicy(timed_steps=3, max_timed_steps=3, sweep_rounds=1, max_sweep_rounds=1))
    directory = tmp_path_factory.mktemp("report")
    write_report(result, directory)
    return directory


class _Elements(HTMLParser):
    """Text by element id, and every attribute of every element, from a page."""

    def __init__(self) -> None:
        super().__init__()
        self.text_by_id: dict[str, str] = {}
        self.attrs: list[tuple[str, dict[str, str | None]]] = []
        self._open: list[str | None] = []

    def handle_starttag(self, tag, attrs):
        d = dict(attrs)
        self.attrs.append((tag, d))
        if tag not in ("meta", "br", "img", "input", "link", "path", "use"):
            self._open.append(d.get("id"))
            if d.get("id"):
                self.text_by_id.setdefault(d["id"], "")

    def handle_endtag(self, tag):
        if self._open and tag not in ("meta", "br", "img", "input", "link", "path", "use"):
            self._open.pop()

    def handle_data(self, data):
        for ident in self._open:
            if ident:
                self.text_by_id[ident] += data


def parse(page: str) -> _Elements:
    p = _Elements()
    p.feed(page)
    return p


def test_report_dir_has_report_html_with_the_key_figures(report_dir):
    result = load_result(report_dir)
    page = (report_dir / HTML_FILE).read_text(encoding="utf-8")
    el = parse(page)
    assert result.max_batch == 24 and result.knee_batch == 8
    assert el.text_by_id["max-batch"] == "24"
    assert el.text_by_id["knee-batch"] == "8"
    assert el.text_by_id["recommended-batch"] == str(result.recommended_batch)
    assert el.text_by_id["memory-budget"] == batchprof.format_bytes(BASE + PER_SAMPLE * 24 + 1)
    rows = re.findall(r'<tr data-batch="(\d+)"', page)
    assert sorted(map(int, rows)) == [p.batch_size for p in result.points()]
    assert page.count("<svg") >= 2  # peak memory and throughput, inline
    assert "epoch time" in page and " h" in el.text_by_id["per-batch"] + " h"


def test_every_user_string_is_escaped_and_nothing_is_fetched(report_dir):
    page = (report_dir / HTML_FILE).read_text(encoding="utf-8")
    assert HOSTILE not in page and "<script>document" not in page
    assert page.lower().count("<script") == 1  # only the page's own, hash-admitted script
    assert "&lt;script&gt;" in page
    tags = parse(page).attrs
    assert [t for t, _ in tags].count("script") == 1
    for tag, attrs in tags:
        assert not [a for a in attrs if a.startswith("on")], (tag, attrs)  # no inline handlers
        for name, value in attrs.items():
            if name in ("src", "href", "xlink:href", "action", "data") and value:
                assert not re.match(r"\s*(https?:|//|javascript:)", value), (tag, name, value)
    (policy,) = [a["content"] for t, a in tags if a.get("http-equiv") == "Content-Security-Policy"]
    assert "default-src 'none'" in policy  # the browser may fetch nothing at all


def test_page_without_plots_or_figures_still_renders():
    from batchprof.records.result import ProfileResult

    empty = ProfileResult(workload="w", device="cpu", memory_limit_bytes=None,
                          capacity_bytes=None, max_batch=None, knee_batch=None,
                          recommended_batch=None, recommendation_reason="nothing fit",
                          probes=(), notes=("a <b>note</b>",), environment={"a": {"b": None}})
    page = render_html(empty, svgs={})
    el = parse(page)
    assert el.text_by_id["max-batch"] == "n/a" and "a &lt;b&gt;note&lt;/b&gt;" in page
    assert "No batch size was measured" in page


# ---- in a real browser ----------------------------------------------------------------------
def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    reason = ("headless Chromium not found (Debian package 'chromium'; `make test` installs it "
              "when run as root): the browser check of report.html is skipped")
    print(reason)
    pytest.skip(reason)


def _run_chromium(*args: str) -> subprocess.CompletedProcess:
    cmd = [_chromium(), "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
           "--disable-extensions", "--enable-logging=stderr", "--v=0", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def test_report_html_in_headless_chromium(report_dir, tmp_path):
    page = (report_dir / HTML_FILE).resolve().as_uri()
    dom = _run_chromium("--dump-dom", page)
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console  # no script error, no policy violation, nothing logged
    root = re.search(r"<html[^>]*>", dom.stdout).group(0)
    assert 'data-ready="1"' in root  # the page's own script ran to the end
    assert "data-errors" not in root and "data-pwned" not in root  # the name did not run
    el = parse(dom.stdout)
    result = load_result(report_dir)
    assert el.text_by_id["max-batch"] == str(result.max_batch)
    assert el.text_by_id["knee-batch"] == str(result.knee_batch)
    assert HOSTILE in el.text_by_id["title"]  # shown as text, verbatim
    assert len(re.findall(r'<tr data-batch="', dom.stdout)) == len(result.points())

    shot = tmp_path / "report.png"
    taken = _run_chromium("--hide-scrollbars", "--window-size=1280,2000",
                          f"--screenshot={shot}", page)
    assert taken.returncode == 0, taken.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    print(f"screenshot of report.html: {shot}")


def test_batchprof_report_rebuilds_the_files_from_results_json(report_dir, tmp_path, capsys):
    import shutil as sh

    from batchprof.cli import main

    copy = tmp_path / "copy"
    sh.copytree(report_dir, copy)
    before = (copy / HTML_FILE).read_text(encoding="utf-8")
    for name in (HTML_FILE, "summary.md", "results.csv", "peak_memory.png"):
        (copy / name).unlink()
    assert main(["report", str(copy)]) == 0
    assert "rebuilt" in capsys.readouterr().out
    for name in (HTML_FILE, "summary.md", "results.csv", "peak_memory.png"):
        assert (copy / name).is_file()
    after = (copy / HTML_FILE).read_text(encoding="utf-8")
    strip = re.compile(r"<svg.*?</svg>", re.S)  # plots re-drawn: compare the rest exactly
    assert strip.sub("", after) == strip.sub("", before)
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_html_table_figures_are_the_frames(report_dir):
    """The page's share of best is the frame's (measured sweep over best measured), and its
    fitted column the frame's fit: before, the page divided the *fit* by the best and called it
    the share, disagreeing with the markdown and the frame on the same run."""
    from batchprof.records.frame import batch_rows

    result = load_result(report_dir)
    page = (report_dir / HTML_FILE).read_text(encoding="utf-8")
    table = page[page.index('<table id="per-batch"'):]
    table = table[:table.index("</table>")]
    headers = re.findall(r"<th>(.*?)</th>", table)
    share_at = headers.index("share of best (measured)")
    fit_at = headers.index("samples/s (fitted)")
    rows = {r["batch_size"]: r for r in batch_rows(result)}
    checked = 0
    for batch, body in re.findall(r'<tr data-batch="(\d+)"[^>]*>(.*?)</tr>', table):
        cells = [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", body)]
        row = rows[int(batch)]
        if row["share_of_best"] is not None:
            assert cells[share_at] == f"{row['share_of_best']:.0%}"
            checked += 1
        if row["fitted_samples_per_s"] is not None:
            assert cells[fit_at] == f"{row['fitted_samples_per_s']:,.1f}"
    assert checked >= 3
