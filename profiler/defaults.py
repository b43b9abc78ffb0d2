"""Every default a run starts from, in one place, so the CLI, the API and the pytest plugin agree.

Imports nothing (the CLI reads these while it builds its parser, before torch loads).

- ``DEVICE = "auto"``: CUDA when a device is present, else the CPU (with a notice). The CLI's
  ``--device`` and the API's ``device=`` both default to it.
- ``ROOFLINE = False``: measuring device ceilings costs seconds per run, so the roofline / MFU
  figures are opt-in: ``batchprof run --roofline`` or ``profile(..., roofline=True)``.
- ``CPU_MEMORY_LIMIT``: the budget a CPU run gets when none is given. The CPU has no memory
  limit of its own that a search could find before the machine itself ran out. 128 MiB puts
  the default workload (transformer) at a max batch of 51; ``batchprof run`` with no arguments
  took 22 s on the 2-core dev machine (quiet; 12 probes, prediction included); 512 MiB (max 215)
  took over 4 minutes (under load).
"""

from __future__ import annotations

WORKLOAD = "transformer"  # a built-in name (batchprof.workloads.BUILTINS)
DEVICE = "auto"
CPU_MEMORY_LIMIT = "128MiB"
ROOFLINE = False
# The whole run's time budget (seconds): the knee sweep stops when it ends and reports what it
# measured (see batchprof.search.knee.driver). None in the API means unbounded; the CLI and
# profile() default to this.
TIME_BUDGET_S = 25.0
ALPHA = 0.9  # the knee: smallest batch with throughput >= ALPHA x the best
PREDICT_BATCH_SIZES = "1,8,64,512"
PLAN_GPUS = "H100-80GB,A100-40GB,A100-80GB,L4-24GB,T4-16GB,RTX4090-24GB"
