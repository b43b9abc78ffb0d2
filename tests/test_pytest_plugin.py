"""The pytest plugin, driven through pytester: budgets that pass and fail, inertness, the
fixture, pytest-benchmark's extra_info and machine_info, and the copyable example suite.

Inner runs are in-process (``runpytest``) and measure a tiny inline workload; only the
inertness check runs in a subprocess, because in-process ``sys.modules`` already holds torch.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

import batchprof
from batchprof.probe import TimingPolicy
from batchprof.pytest_plugin import budget_violations, extra_info_for, record_extra_info
from batchprof.records import Measurement, SampleSeries

from .helpers import tiny_workload

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[1]
PROFILE_AVAILABLE = importlib.util.find_spec("batchprof.api") is not None

# Prepended to every inner test module: a workload small enough to measure in milliseconds.
TINY = '''
import pytest
import torch
from torch import nn
import batchprof

def tiny():
    return batchprof.Workload(
        "tiny",
        model_fn=lambda: nn.Linear(16, 4),
        batch_fn=lambda b, device: (torch.ones(b, 16, device=device),
                                    torch.zeros(b, dtype=torch.long, device=device)),
        loss_fn=lambda model, batch: nn.functional.cross_entropy(model(batch[0]), batch[1]),
    )
'''


@pytest.fixture(scope="module", autouse=True)
def modules_imported_before_inner_runs():
    # pytester restores sys.modules after each in-process run. A module first imported inside
    # one run would be imported again by the next: torch's lazily imported parts (the profiler
    # behind the CPU memory window) abort the process when re-registered, and a re-imported
    # batchprof.workloads would no longer match the Workload class batchprof has cached. One
    # real measurement here imports all of them once, outside any inner run.
    batchprof.measure(tiny_workload(), 2, timing=TimingPolicy(timed_steps=1, max_timed_steps=1))


def run_inner(pytester: pytest.Pytester, body: str, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_inner=TINY + body)
    return pytester.runpytest("-p", "no:cacheprovider", *args)


# ---- the marker -----------------------------------------------------------------------------
def test_budget_that_passes(pytester):
    result = run_inner(pytester, '''
@pytest.mark.batchprof(workload=tiny(), batch_size=8, max_peak="1MiB",
                       max_activation="1MiB", min_samples_per_s=1e-6)
def test_fits():
    pass
''')
    result.assert_outcomes(passed=1)


def test_budget_that_fails_names_budget_and_measured_figure(pytester):
    result = run_inner(pytester, '''
@pytest.mark.batchprof(workload=tiny(), batch_size=8, max_peak=64)
def test_too_big():
    pass
''')
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    match = re.search(r"batchprof budget exceeded: peak allocated [\d.]+ \w+ \((\d+) bytes\) "
                      r"at batch 8 on cpu > max_peak 64 B", out)
    assert match, out
    assert int(match.group(1)) > 64
    assert "Traceback" not in out and "def test_too_big" not in out  # plain words only


def test_every_missed_budget_is_reported(pytester):
    result = run_inner(pytester, '''
@pytest.mark.batchprof(workload=tiny(), batch_size=8, max_activation=10,
                       min_samples_per_s=1e15)
def test_slow_and_big():
    pass
''')
    result.assert_outcomes(failed=1)
    result.stdout.re_match_lines([
        r".*activations saved for backward .* at batch 8 on cpu > max_activation 10 B",
        r".*throughput .* samples/s at batch 8 on cpu \(median of \d+ timed steps\) "
        r"< min_samples_per_s 1e\+15",
    ], consecutive=True)


def test_out_of_memory_under_max_peak_fails_clearly(pytester):
    result = run_inner(pytester, '''
@pytest.mark.batchprof(workload=tiny(), batch_size=4096, memory_limit="64KiB",
                       max_peak="1MiB")
def test_oom():
    pass
''')
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*batchprof budget exceeded: workload 'tiny' ran out of memory at batch 4096 on cpu "
        "(memory limit 64.00 KiB), so max_peak='1MiB' cannot be met: out of memory*",
    ])


def test_failing_body_is_reported_without_measuring(pytester):
    result = run_inner(pytester, '''
@pytest.mark.batchprof(workload=tiny(), batch_size=8, max_peak=64)
def test_body_fails():
    assert 1 == 2, "the body's own failure"
''')
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "the body's own failure" in out
    assert "batchprof budget" not in out


def test_bad_marker_arguments_are_a_usage_error(pytester):
    result = run_inner(pytester, '''
@pytest.mark.batchprof(workload=tiny(), batch_size=8, max_peek="1GiB")
def test_typo():
    pass
''')
    result.assert_outcomes(errors=1)  # at setup: the body never runs
    assert "@pytest.mark.batchprof got unknown argument(s) ['max_peek']; accepted: workload," \
        in result.stdout.str()


def test_marker_and_options_are_registered(pytester):
    pytester.makeini("[pytest]\naddopts = --strict-markers\n")
    result = run_inner(pytester, '''
@pytest.mark.batchprof(workload=tiny(), batch_size=2)
def test_marked():
    pass
''', "--batchprof-device", "cpu", "--batchprof-memory-limit", "1GiB")
    result.assert_outcomes(passed=1)


# ---- inert unless used ---------------------------------------------------------------------
def test_plugin_is_inert_when_not_requested(pytester):
    pytester.makepyfile(test_plain='''
import sys

def test_plain(request):
    assert request.config.pluginmanager.has_plugin("batchprof")  # loaded via pytest11 ...
    heavy = [m for m in ("torch", "batchprof.probe", "batchprof.workloads") if m in sys.modules]
    assert heavy == []  # ... but imported nothing heavy
''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_runs_without_pytest_benchmark(pytester):
    # The machine-info hook is optional: no "unknown hook" error when pytest-benchmark is off.
    result = run_inner(pytester, '''
@pytest.mark.batchprof(workload=tiny(), batch_size=2, max_peak="1MiB")
def test_marked():
    pass
''', "-p", "no:benchmark")
    result.assert_outcomes(passed=1)


# ---- the fixture ----------------------------------------------------------------------------
def test_fixture_uses_command_line_device_and_limit(pytester):
    result = run_inner(pytester, '''
def test_measure(batchprof):
    assert batchprof.device == "cpu"
    m = batchprof.measure(tiny(), 4)
    assert m.feasible and m.device == "cpu"
    assert m.memory_limit_bytes == 8 * 2**20
    assert batchprof.last_measurement is m
    batchprof.check(m, max_peak="1MiB")
    batchprof.check(m, max_peak=64)
''', "--batchprof-memory-limit", "8MiB")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*batchprof budget exceeded: peak allocated * > max_peak 64 B*"])


# ---- pytest-benchmark ----------------------------------------------------------------------
def test_extra_info_and_machine_info_in_saved_json(pytester):
    out = pytester.path / "out.json"
    result = run_inner(pytester, '''
@pytest.mark.batchprof(workload=tiny(), batch_size=8, max_peak="1MiB")
def test_marker(benchmark):
    benchmark.pedantic(lambda: None, rounds=1)

def test_fixture(benchmark, batchprof):
    benchmark.pedantic(lambda: None, rounds=1)
    batchprof.measure(tiny(), 4)
''', f"--benchmark-json={out}")
    result.assert_outcomes(passed=2)
    saved = json.loads(out.read_text())
    info = {b["name"]: b["extra_info"] for b in saved["benchmarks"]}
    assert info["test_marker"]["batch_size"] == 8 and info["test_fixture"]["batch_size"] == 4
    for extra in info.values():
        assert extra["peak_allocated_bytes"] > 0
        assert extra["peak_reserved_bytes"] == extra["peak_allocated_bytes"]  # CPU: no cache
        assert extra["activation_bytes"] > 0
        assert extra["samples_per_s"] > 0
        assert extra["kernel_busy_pct"] is None  # no GPU sampler: n/a, never 0
    machine = saved["machine_info"]["batchprof"]
    assert machine["device"] == "cpu"
    assert machine["driver"] is None  # no NVIDIA driver here
    assert machine["torch"] and machine["triton"]


def _measurement(**kw) -> Measurement:
    fields = dict(workload="w", batch_size=8, device="cpu", feasible=True,
                  peak_allocated_bytes=3 * 2**30, peak_reserved_bytes=3 * 2**30,
                  activation_bytes=2**20, step_times_s=(0.5, 0.5, 0.5))
    return Measurement(**{**fields, **kw})


class _Bench:
    def __init__(self):
        self.extra_info = {"user_key": 1}


def test_record_extra_info_keeps_user_keys_and_none():
    bench = _Bench()
    record_extra_info(bench, _measurement())
    assert bench.extra_info["user_key"] == 1
    assert bench.extra_info["samples_per_s"] == 16.0
    assert bench.extra_info["kernel_busy_pct"] is None


def test_kernel_busy_pct_is_the_sampled_mean():
    busy = SampleSeries("kernel_busy_pct", "%", (0.0, 0.1, 0.2), (40.0, None, 60.0))
    assert extra_info_for(_measurement(samples=(busy,)))["kernel_busy_pct"] == 50.0


def test_budget_message_reads_in_plain_words():
    lines = budget_violations(_measurement(), max_peak="2GiB")
    assert lines == ["batchprof budget exceeded: peak allocated 3.00 GiB (3221225472 bytes) "
                     "at batch 8 on cpu > max_peak 2.00 GiB"]
    assert budget_violations(_measurement(), max_peak="4GiB", min_samples_per_s=16) == []


# ---- profile() and the example suite -------------------------------------------------------
@pytest.mark.skipif(not PROFILE_AVAILABLE, reason="profile() not available yet")
def test_min_max_batch_budget_profiles_the_workload(pytester):
    # max_batch caps the search (1 MiB holds far more than 4 of these), so the result is exact.
    result = run_inner(pytester, """
from batchprof.probe import TimingPolicy

@pytest.mark.batchprof(workload=tiny(), memory_limit="1MiB", max_batch=4, min_max_batch=1000,
                       timing=TimingPolicy(timed_steps=1, max_timed_steps=1))
def test_capacity(benchmark):
    benchmark.pedantic(lambda: None, rounds=1)
""", "--benchmark-json=out.json")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*batchprof budget not met: max feasible batch 4 on cpu "
                                 "(memory limit 1.00 MiB, * probes) < min_max_batch 1000*"])
    saved = json.loads((pytester.path / "out.json").read_text())
    assert saved["benchmarks"][0]["extra_info"]["max_batch"] == 4


def test_example_suite_over_budget_demo_fails_readably(pytester, monkeypatch):
    example = (REPO / "benches" / "example_user_suite.py").read_text()
    pytester.makepyfile(example_user_suite=example)
    monkeypatch.setenv("BATCHPROF_DEMO_OVER_BUDGET", "1")
    result = pytester.runpytest("-p", "no:cacheprovider", "example_user_suite.py",
                                "-k", "over_budget", "--benchmark-disable")
    result.assert_outcomes(failed=1, deselected=3)
    result.stdout.fnmatch_lines([
        "*batchprof budget exceeded: peak allocated * (* bytes) at batch 32 on cpu "
        "> max_peak 128.00 KiB*",
    ])
