"""The CLI's `measure` face: tables, JSON, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from batchprof import __version__
from batchprof.cli.main import main


def test_measure_json(capsys):
    assert main(["measure", "mlp", "--batch-size", "4", "--steps", "2", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["batch_size"] == 4 and data["feasible"] is True
    assert data["peak_allocated_bytes"] > data["resident_bytes"] > 0
    assert len(data["step_times_s"]) >= 2


def test_measure_table_mentions_key_figures(capsys):
    assert main(["measure", "--workload", "mlp", "-b", "4", "--steps", "1"]) == 0
    out = capsys.readouterr().out
    assert "peak allocated" in out and "throughput" in out


@pytest.mark.parametrize("argv,message", [
    (["measure", "nope", "-b", "4"], "unknown workload 'nope'"),
    (["measure", "no_such_mod_q:attr", "-b", "4"], "cannot import module"),
    (["measure", "json:__name__", "-b", "4"], "not a batchprof.Workload"),
    (["measure", "mlp", "-b", "0"], "batch size must be a positive integer"),
    (["measure", "mlp", "-b", "-2"], "batch size must be a positive integer"),
    (["measure", "mlp", "-b", "4", "--memory-limit", "2 gigs"], "cannot parse memory size"),
    (["measure", "mlp", "-b", "4", "--memory-limit", "1MiB"], "parameters and buffers alone"),
    (["measure", "mlp", "-b", "4", "--device", "tpu"], "unknown device"),
])
def test_bad_input_is_one_line_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_non_integer_batch_size_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["measure", "mlp", "-b", "1.5"])
    assert info.value.code == 2
    assert "invalid int value" in capsys.readouterr().err


def test_console_script_errors_have_no_traceback():
    proc = subprocess.run([sys.executable, "-m", "batchprof.cli", "measure", "nope", "-b", "2"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "unknown workload" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert __version__ in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["measure", "--help"])
    assert "--memory-limit" in capsys.readouterr().out
