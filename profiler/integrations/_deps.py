"""Optional dependencies of the integrations: a clear error naming the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from batchprof.errors import BatchprofError


class MissingDependencyError(BatchprofError, ImportError):
    """An integration's optional package is not installed (also an ImportError, so
    ``pytest.importorskip`` and ``try: ... except ImportError`` work as usual)."""


class IntegrationError(BatchprofError):
    """A framework object (model, data module, trainer) cannot be profiled as given."""


def require(module: str, extra: str, pins: str) -> ModuleType:
    """Import ``module`` or raise MissingDependencyError saying what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"this batchprof integration needs {module!r}, which is not installed "
            f"({type(exc).__name__}: {exc}); install it with pip install 'batchprof[{extra}]' "
            f"(pins {pins}), naming your torch version on the same pip line so pip keeps it"
        ) from exc
