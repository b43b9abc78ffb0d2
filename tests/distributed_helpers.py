"""Launch a function on N CPU ranks with gloo (fork: torch is already imported), hard timeout.

``launch(scenario, world_size, tmp_path, timeout_s, **kwargs)`` runs
``SCENARIOS[scenario](rank, world_size, **kwargs)`` on every rank inside an open process group
and returns each rank's return value (JSON) or ``{"error": "..."}`` when it raised. A rank that
does not finish within ``timeout_s`` fails the test (no hang can pass).
"""

from __future__ import annotations

import json
import os
import socket
import time
import traceback
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch.multiprocessing as mp

SCENARIOS: dict[str, Callable[..., Any]] = {}


def scenario(fn: Callable[..., Any]) -> Callable[..., Any]:
    SCENARIOS[fn.__name__] = fn
    return fn


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, name: str, out: str, pg_timeout_s: float,
            kwargs: dict[str, Any]) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    started = time.perf_counter()
    try:
        dist.init_process_group("gloo", rank=rank, world_size=world_size,
                                timeout=timedelta(seconds=pg_timeout_s))
        value = {"value": SCENARIOS[name](rank, world_size, **kwargs)}
    except BaseException as exc:  # noqa: BLE001 - reported to the test
        value = {"error": f"{type(exc).__name__}: {exc}", "type": type(exc).__name__,
                 "traceback": traceback.format_exc()}
    value["elapsed_s"] = time.perf_counter() - started
    Path(out, f"rank{rank}.json").write_text(json.dumps(value, default=str))
    if dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:  # noqa: BLE001
            pass
    os._exit(0)  # skip atexit/thread joins that can stall a forked child


def launch(name: str, world_size: int, tmp_path: Path, *, timeout_s: float = 60.0,
           pg_timeout_s: float = 30.0, **kwargs: Any) -> list[dict[str, Any]]:
    out = tmp_path / f"ranks-{name}"
    out.mkdir()
    ctx = mp.start_processes(_worker, args=(world_size, _free_port(), name, str(out),
                                            pg_timeout_s, kwargs),
                             nprocs=world_size, join=False, start_method="fork")
    deadline = time.monotonic() + timeout_s
    # Poll instead of ctx.join(): join() kills the other ranks as soon as one exits non-zero,
    # and the tests need to see what the survivors do when a peer dies.
    while any(p.is_alive() for p in ctx.processes) and time.monotonic() < deadline:
        time.sleep(0.05)
    hung = [r for r, p in enumerate(ctx.processes) if p.is_alive()]
    for p in ctx.processes:
        if p.is_alive():
            p.kill()
        p.join(5)
    if hung:
        raise AssertionError(f"scenario {name!r}: rank(s) {hung} did not finish within "
                             f"{timeout_s} s (a hang)")
    results = []
    for r in range(world_size):
        f = out / f"rank{r}.json"
        results.append(json.loads(f.read_text()) if f.exists()
                       else {"error": "rank wrote no result (died)", "type": "died"})
    return results
