"""Issue 14, Must-exist 4: every bad input is one line and exit 2; an infeasible `measure` exits 3;
a NaN loss is a note; `module:attr` resolves from the current folder as `python -m` would."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import batchprof
from batchprof.cli.main import main
from batchprof.cli.measure import EXIT_INFEASIBLE
from batchprof.cli.predict import parse_batch_sizes
from batchprof.errors import BatchprofError, ConfigError
from batchprof.probe.step import measure
from tests.helpers import tiny_workload


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("device", ["cuda:x", "cuda:", "cuda:²", "cuda:-1", "cuda:0x1"])
def test_bad_cuda_index_is_one_line_exit_2(device, capsys):
    assert main(["measure", "mlp", "-b", "2", "--device", device]) == 2
    assert "unknown device" in _one_line_error(capsys)


def test_superscript_batch_size_is_one_line_exit_2(capsys):
    assert main(["predict", "mlp", "--batch-sizes", "1,²", "--no-calibrate"]) == 2
    assert "bad part: '²'" in _one_line_error(capsys)
    with pytest.raises(ConfigError):
        parse_batch_sizes("１")  # a full-width digit is a digit to str.isdigit, not to us


def _run_out(out: str, capsys) -> str:
    code = main(["run", "mlp", "--device", "cpu", "--out", out, "--max-batch", "2",
                 "--no-predict", "--no-roofline", "--steps", "1", "--sampler", "none"])
    assert code == 2
    return _one_line_error(capsys)


def test_out_naming_a_file(tmp_path, capsys):
    target = tmp_path / "afile"
    target.write_text("x")
    assert "existing file" in _run_out(str(target), capsys)
    assert target.read_text() == "x"


def test_out_under_proc(capsys):
    assert "cannot write reports" in _run_out("/proc/batchprof-reports", capsys)


def test_out_under_a_file(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert "cannot write reports" in _run_out(str(tmp_path / "afile" / "sub"), capsys)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write to any directory")
def test_out_unwritable_directory(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert "cannot write reports" in _run_out(str(locked), capsys)
    finally:
        locked.chmod(0o700)


@pytest.mark.parametrize("sizes", [None, 8, "8,64"])
def test_predict_api_batch_sizes_not_a_list(sizes):
    with pytest.raises(BatchprofError, match="batch_sizes must be a list"):
        batchprof.predict(tiny_workload(), batch_sizes=sizes, calibrate=False)


def test_measure_infeasible_exits_3_and_speaks_mib(capsys):
    code = main(["measure", "mlp", "-b", "4096", "--steps", "1", "--memory-limit", "24MiB",
                 "--sampler", "none"])
    assert code == EXIT_INFEASIBLE == 3
    out = capsys.readouterr().out
    assert "MiB" in out and " bytes" not in out


def test_nan_loss_is_a_note():
    w = tiny_workload()
    nan_w = batchprof.Workload("nan", w.model_fn, w.batch_fn,
                               lambda model, batch: w.loss_fn(model, batch) * float("nan"))
    m = measure(nan_w, 2, timing=batchprof.TimingPolicy(timed_steps=1))
    assert m.feasible and any("loss was nan" in n for n in m.notes)
    assert type(m).from_dict(m.to_dict()).notes == m.notes
    assert measure(w, 2, timing=batchprof.TimingPolicy(timed_steps=1)).notes == ()


def test_module_attr_resolves_from_the_current_folder(tmp_path):
    (tmp_path / "mymodel_i14.py").write_text(textwrap.dedent("""
        from tests.helpers import tiny_workload
        workload = tiny_workload(name="mine")
    """))
    repo = Path(__file__).resolve().parents[1]
    # The console script's sys.path: no '' and no cwd, only the installed package (+ repo for
    # tests.helpers, placed via PYTHONPATH at the end as an installed path would be).
    code = ("import sys; sys.path[:] = [p for p in sys.path if p not in ('', sys.argv[1])]; "
            "from batchprof.cli.main import main; "
            "sys.exit(main(['measure', 'mymodel_i14:workload', '-b', '2', '--steps', '1', "
            "'--sampler', 'none', '--json']))")
    env = {**os.environ, "PYTHONPATH": str(repo)}
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert '"workload": "mine"' in proc.stdout
