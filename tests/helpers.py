"""Small workloads and independent readings shared by tests (not fixtures: plain functions)."""

from __future__ import annotations

import ctypes
import gc
import json
import os
import tempfile
import warnings

import torch
from torch import nn
from torch.nn import functional as F

from batchprof import Workload


def tiny_workload(width: int = 64, name: str = "tiny") -> Workload:
    def model_fn() -> nn.Module:
        return nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 4))

    def batch_fn(batch_size: int, device: torch.device):
        return torch.ones(batch_size, width, device=device), torch.zeros(
            batch_size, dtype=torch.long, device=device)

    def loss_fn(model: nn.Module, batch):
        return F.cross_entropy(model(batch[0]), batch[1])

    return Workload(name, model_fn, batch_fn, loss_fn)


def live_tensor_bytes() -> int:
    """Bytes of distinct storages behind every tensor the garbage collector can see."""
    gc.collect()
    seen: set[int] = set()
    total = 0
    with warnings.catch_warnings():  # isinstance() on deprecated torch aliases warns
        warnings.simplefilter("ignore")
        for obj in gc.get_objects():
            try:
                if isinstance(obj, torch.Tensor) and obj.device.type == "cpu":
                    st = obj.untyped_storage()
                    if st.data_ptr() not in seen:
                        seen.add(st.data_ptr())
                        total += st.nbytes()
            except Exception:  # noqa: BLE001 - some objects misbehave under isinstance
                continue
    return total


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def malloc_in_use_bytes() -> int | None:
    """glibc's own figure of bytes in use (small + mmapped chunks); None off glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
    except (OSError, AttributeError):
        return None
    info = libc.mallinfo2()
    return int(info.uordblks + info.hblkhd)


def independent_peak(workload: Workload, batch_size: int) -> int:
    """Peak of one steady-state step read straight from the CPU allocator's own running total
    (the 'Total Allocated' field of torch.profiler's exported memory events), plus resident
    bytes counted here by data pointer. Shares no code with batchprof's CPU backend."""
    torch.manual_seed(0)
    model = workload.model_fn()
    opt = workload.optimizer_fn(model.parameters())
    batch = workload.batch_fn(batch_size, torch.device("cpu"))

    def step():
        workload.loss_fn(model, batch).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up: creates optimizer state
    tensors = [*model.parameters(), *model.buffers(), *batch]
    tensors += [v for s in opt.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    resident = sum(storages.values())
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                profile_memory=True) as prof:
        step()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as fh:
            events = [e for e in json.load(fh)["traceEvents"] if e.get("name") == "[memory]"
                      and e["args"].get("Device Type") == 0]
    events.sort(key=lambda e: (e["ts"], e["args"].get("Ev Idx", 0)))
    if not events:
        return resident
    start = events[0]["args"]["Total Allocated"] - events[0]["args"]["Bytes"]
    return resident + max(0, max(e["args"]["Total Allocated"] for e in events) - start)
