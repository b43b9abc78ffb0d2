"""batchprof's GPU verification kit (scripts/gpu_check.py is the entry point).

driver (stdlib: install, time boxes, outputs) -> part (one process per part) -> the parts in
memory_parts / device_parts, which call batchprof only through its public names (lib.py holds
the few exceptions, marked).
"""
