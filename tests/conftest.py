"""Shared test fixtures. Tests run on the CPU; `gpu`-marked tests skip without CUDA."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

# The repository's kernels/ is the package batchprof.kernels; with the repository root on
# sys.path (tests/ is a package) it would also import as a top-level `kernels`, and
# transformers probes for a package of that name (the Hugging Face `kernels` distribution) and
# imports it: a second copy that registers torch.ops.batchprof.* again, pointing at modules
# whose relative imports fail, so later kernel tests break in the same process. So import the
# real one first (it also sets TRITON_INTERPRET before anything imports Triton) and let the bare
# name be that same module object: importing `kernels` then runs nothing twice, and it has no
# version, so transformers reads it as "the kernels package is unavailable". (Mapping the name
# to None instead breaks pytest's own plugin rewriting in pytester runs.) A genuinely installed
# `kernels` elsewhere on sys.path is left alone.
import batchprof.kernels  # noqa: E402

_REPO_KERNELS = (Path(__file__).resolve().parent.parent / "kernels").resolve()
_spec = importlib.util.find_spec("kernels") if "kernels" not in sys.modules else None
if _spec is not None and _spec.origin and Path(_spec.origin).resolve().parent == _REPO_KERNELS:
    sys.modules["kernels"] = batchprof.kernels


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device; none is present")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# Every sampler owns one thread named "batchprof-sampler-..." (batchprof.sampling); one still
# running after a test is a leaked sampler (a missing stop() or `with`) that would keep sampling
# into later tests. Added by the sampling helper (issue 5).
@pytest.fixture(autouse=True)
def no_leaked_sampler_threads():
    import threading

    def running() -> set[threading.Thread]:
        return {t for t in threading.enumerate()
                if t.name.startswith("batchprof-sampler") and t.is_alive()}

    before = running()
    yield
    leaked = running() - before
    if leaked:
        pytest.fail("sampler thread(s) outlived the test (stop the sampler or use `with`): "
                    + ", ".join(sorted(t.name for t in leaked)))
