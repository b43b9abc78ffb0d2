"""``batchprof run --resume`` and ``profile(replay=...)`` (issue 14): a killed run continues from
its probe log; finished probes are not run again; the answer equals an uninterrupted run's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import batchprof
from batchprof.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["mlp", "--memory-limit", "96MiB", "--no-isolate", "--no-knee", "--device", "cpu"]


def _log(directory: Path) -> list[dict]:
    return [json.loads(line) for line in (directory / "probes.jsonl").read_text().splitlines()
            if line.strip()]


def test_replayed_probes_are_not_run_again_and_the_answer_is_unchanged():
    full = batchprof.profile("mlp", "cpu", "96MiB", knee=False)
    k = 2
    resumed = batchprof.profile("mlp", "cpu", "96MiB", knee=False, replay=full.probes[:k])
    assert resumed.max_batch == full.max_batch
    assert [m.batch_size for m in resumed.probes] == [m.batch_size for m in full.probes]
    flags = [bool(m.extra.get("resumed_from_log")) for m in resumed.probes]
    assert flags == [True] * k + [False] * (len(full.probes) - k)
    # the replayed probes are the logged ones, byte for byte
    assert [m.peak_allocated_bytes for m in resumed.probes[:k]] == \
        [m.peak_allocated_bytes for m in full.probes[:k]]
    assert any(n.startswith(f"resumed: {k} of the {k} logged probes") for n in resumed.notes)


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_log(tmp_path, capsys):
    out = tmp_path / "reports"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-m", "batchprof", "run", *ARGS, "--out", str(out)],
                             cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    directory = None
    while time.monotonic() < deadline and child.poll() is None:
        dirs = list(out.glob("mlp-*"))
        if dirs and (dirs[0] / "probes.jsonl").exists() and len(_log(dirs[0])) >= 2:
            directory = dirs[0]
            break
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert directory is not None, "the run ended before two probes were logged"
    assert not (directory / "results.json").exists()  # killed: no report was written
    before = _log(directory)

    assert main(["run", "--resume", str(directory), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    after = _log(directory)
    new = after[len(before):]
    assert after[:len(before)] == before  # the log was appended to, not rewritten
    assert sum(bool(p["extra"].get("resumed_from_log")) for p in result["probes"]) == len(before)

    reference = batchprof.profile("mlp", "cpu", "96MiB", knee=False)
    sizes = [m.batch_size for m in reference.probes]
    assert result["max_batch"] == reference.max_batch
    assert [p["batch_size"] for p in result["probes"]] == sizes
    # only what the killed run had not finished was run: the log's new lines are the rest
    assert [p["batch_size"] for p in new] == sizes[len(before):]
    assert (directory / "results.json").exists() and (directory / "report.html").exists()

    # finished now: resuming again is refused, as is a different option
    assert main(["run", "--resume", str(directory)]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_resume_refuses_a_different_option_and_a_directory_without_a_run(tmp_path, capsys):
    assert main(["run", *ARGS, "--out", str(tmp_path), "--max-batch", "4"]) == 0
    directory, = tmp_path.glob("mlp-*")
    (directory / "results.json").unlink()  # as if it had been killed before the report
    capsys.readouterr()
    assert main(["run", "--resume", str(directory), "--memory-limit", "64MiB"]) == 2
    err = capsys.readouterr().err
    assert "--memory-limit" in err and "96MiB" in err and "64MiB" in err
    assert main(["run", "--resume", str(tmp_path)]) == 2
    assert "no run.json" in capsys.readouterr().err
