"""Issue 14, Must-exist 5: property-based tests of what users type and what runs leave on disk.

Every input is either parsed to the right value or rejected with a BatchprofError (one line at
the CLI); nothing raises anything else. (There is no what-if name parser to test.)
"""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from batchprof.backends import resolve_device
from batchprof.cli.predict import parse_batch_sizes
from batchprof.errors import BatchprofError, ConfigError, ReportFileError
from batchprof.records.measurement import Measurement
from batchprof.render.files import load_result, read_probe_log, write_report
from batchprof.units import format_bytes, parse_bytes

UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KiB": 2**10, "MiB": 2**20,
         "GiB": 2**30, "TiB": 2**40}
FAST = settings(max_examples=100, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


# ---- memory sizes ------------------------------------------------------------------------
@FAST
@given(st.integers(1, 10**6), st.sampled_from(sorted(UNITS)), st.sampled_from(["", " "]))
def test_memory_size_with_unit(number, unit, space):
    assert parse_bytes(f"{number}{space}{unit}") == number * UNITS[unit]
    assert parse_bytes(f"{number}{unit.lower()}") == number * UNITS[unit]


@FAST
@given(st.integers(1, 2**62))
def test_memory_size_int_and_its_string(n):
    assert parse_bytes(n) == n
    assert parse_bytes(str(n)) == n


@FAST
@given(st.integers(1, 2**50))
def test_formatted_size_parses_back_close(n):
    text = format_bytes(n).replace(" ", "")
    assert abs(parse_bytes(text) - n) <= max(1, n * 0.005)


@FAST
@given(st.text(max_size=20))
@example("²GiB")
@example("1e999GiB")
@example("-1MiB")
@example("nan")
def test_memory_size_any_text_is_a_value_or_a_config_error(text):
    try:
        value = parse_bytes(text)
    except ConfigError as exc:
        assert "\n" not in str(exc)
    else:
        assert isinstance(value, int) and value >= 0


# ---- batch-size lists --------------------------------------------------------------------
@FAST
@given(st.lists(st.integers(1, 10**6), min_size=1, max_size=8), st.sampled_from([",", ", "]))
def test_batch_sizes_round_trip(sizes, sep):
    assert parse_batch_sizes(sep.join(map(str, sizes))) == sizes


@FAST
@given(st.text(max_size=20))
@example("1,²")
@example("1,,2")
@example("٣")  # an Arabic-Indic digit: str.isdigit() says yes
def test_batch_sizes_any_text(text):
    try:
        sizes = parse_batch_sizes(text)
    except ConfigError as exc:
        assert "bad part" in str(exc)
    else:
        assert sizes and all(isinstance(b, int) and b > 0 for b in sizes)
        assert all(re.fullmatch(r"\s*[0-9]+\s*", part, re.ASCII) for part in text.split(","))


# ---- device names ------------------------------------------------------------------------
@FAST
@given(st.integers(0, 10**4), st.sampled_from(["cuda", "CUDA", " cuda"]))
def test_cuda_index(index, prefix):
    assert resolve_device(f"{prefix}:{index}") == f"cuda:{index}"


@FAST
@given(st.text(max_size=12))
@example("cuda:x")
@example("cuda:²")
def test_device_any_text(text):
    try:
        dev = resolve_device(text)
    except ConfigError as exc:
        assert "unknown device" in str(exc)
    else:
        assert dev in ("cpu", "cuda") or re.fullmatch(r"cuda:[0-9]+", dev, re.ASCII)
        if dev.startswith("cuda:"):
            int(dev.split(":")[1])  # what the CLI does next must not raise


# ---- results.json and probes.jsonl, truncated or corrupted -------------------------------
@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    from batchprof.api.profiling import profile
    from batchprof.backends.fake import FakeBackend
    from batchprof.probe.step import TimingPolicy
    from tests.helpers import tiny_workload

    backend = FakeBackend(lambda b: 10**6 + 10**4 * b, 10**6 + 10**4 * 12 + 5000,
                          step_time_fn=lambda b: b / (100.0 * min(b, 8)))
    result = profile(tiny_workload(), backend=backend,
                     timing=TimingPolicy(timed_steps=2, max_timed_steps=2))
    d = tmp_path_factory.mktemp("report")
    write_report(result, d)
    with open(d / "probes.jsonl", "w", encoding="utf-8") as fh:
        for m in result.probes:
            fh.write(json.dumps(m.to_dict()) + "\n")
    return d


@FAST
@given(cut=st.floats(0, 1, exclude_max=True))
def test_truncated_results_json(report_dir, tmp_path_factory, cut):
    text = (report_dir / "results.json").read_text().rstrip()  # cut at least the last brace
    path = tmp_path_factory.mktemp("cut") / "results.json"
    path.write_text(text[: int(len(text) * cut)])
    with pytest.raises(ReportFileError, match="not a complete batchprof results.json"):
        load_result(path)


@FAST
@given(data=st.data())
def test_corrupted_results_json(report_dir, tmp_path_factory, data):
    raw = bytearray((report_dir / "results.json").read_bytes())
    for _ in range(data.draw(st.integers(1, 5))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    path = tmp_path_factory.mktemp("bad") / "results.json"
    path.write_bytes(bytes(raw))
    try:
        load_result(path)
    except BatchprofError as exc:
        assert str(path) in str(exc)


def test_missing_results_json(tmp_path):
    with pytest.raises(ReportFileError, match="cannot read"):
        load_result(tmp_path)


@FAST
@given(cut=st.floats(0, 1))
def test_truncated_probe_log_keeps_whole_lines(report_dir, tmp_path_factory, cut):
    text = (report_dir / "probes.jsonl").read_text()
    cut_text = text[: int(len(text) * cut)]
    path = tmp_path_factory.mktemp("log") / "probes.jsonl"
    path.write_text(cut_text)
    probes = read_probe_log(path)
    whole = cut_text.count("\n")
    assert len(probes) in (whole, whole + 1)  # + 1 when the cut fell on a line's end
    assert all(isinstance(m, Measurement) for m in probes)


@FAST
@given(data=st.data())
def test_corrupted_probe_log(report_dir, tmp_path_factory, data):
    raw = bytearray((report_dir / "probes.jsonl").read_bytes())
    raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    path = tmp_path_factory.mktemp("log") / "probes.jsonl"
    path.write_bytes(bytes(raw))
    try:
        probes = read_probe_log(path)
    except ReportFileError as exc:
        assert "\n" not in str(exc)
    else:
        assert all(isinstance(m, Measurement) for m in probes)


def test_report_writes_are_atomic(tmp_path, monkeypatch):
    """A write that fails midway leaves the previous results.json whole and no temp files."""
    from batchprof.render import atomic

    target = tmp_path / "results.json"
    atomic.write_text_atomic(target, '{"old": true}\n')

    def half_write(self, text, encoding=None):
        with open(self, "w", encoding=encoding) as fh:
            fh.write(text[: len(text) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(type(target), "write_text", half_write)
    with pytest.raises(OSError, match="disk full"):
        atomic.write_text_atomic(target, '{"new": "a longer value than before"}\n')
    monkeypatch.undo()
    assert target.read_text() == '{"old": true}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]
