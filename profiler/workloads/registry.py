"""Workloads by name: the built-ins, or ``package.module:attr``."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable

from batchprof.errors import WorkloadError
from batchprof.workloads import cnn, lstm, mlp, transformer
from batchprof.workloads.base import Workload

BUILTINS: dict[str, Callable[[], Workload]] = {
    "mlp": mlp.workload,
    "cnn": cnn.workload,
    "transformer": transformer.workload,
    "lstm": lstm.workload,
}
DEFAULT_WORKLOAD = "transformer"


def builtin_names() -> tuple[str, ...]:
    return tuple(BUILTINS)


def _import_from_cwd_too(module_name: str) -> object:
    """Import ``module_name``; when it is not found, look in the current folder as ``python -m``
    and pytest do (cwd goes at the end of sys.path, so it never shadows an installed module)."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        top = module_name.partition(".")[0]
        cwd = os.getcwd()
        if exc.name != top or cwd in sys.path or "" in sys.path:
            raise
        sys.path.append(cwd)
        importlib.invalidate_caches()
        return importlib.import_module(module_name)


def load_workload(ref: str | Workload) -> Workload:
    """Resolve a built-in name or ``"module:attr"`` to a Workload.

    Raises WorkloadError with what was wrong and what is accepted.
    """
    if isinstance(ref, Workload):
        return ref
    if not isinstance(ref, str) or not ref.strip():
        raise WorkloadError(f"workload must be a name or 'module:attr', got {ref!r}")
    if ref in BUILTINS:
        return BUILTINS[ref]()
    if ":" not in ref:
        raise WorkloadError(
            f"unknown workload {ref!r}; built-ins are {', '.join(BUILTINS)}, "
            "or give 'package.module:attr' for your own"
        )
    module_name, _, attr = ref.partition(":")
    try:
        module = _import_from_cwd_too(module_name)
    except Exception as exc:  # any import-time failure is the user's module, not ours
        raise WorkloadError(
            f"cannot import module {module_name!r} for workload {ref!r}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise WorkloadError(f"module {module_name!r} has no attribute {attr!r}") from None
    if isinstance(obj, Workload):
        return obj
    if callable(obj):
        try:
            obj = obj()
        except Exception as exc:
            raise WorkloadError(f"calling {ref} to build the workload failed: "
                                f"{type(exc).__name__}: {exc}") from exc
        if isinstance(obj, Workload):
            return obj
    raise WorkloadError(
        f"{ref} is a {type(obj).__name__}, not a batchprof.Workload "
        "(or a zero-argument callable returning one)"
    )
