"""Shared test fixtures. Tests run on the CPU; `gpu`-marked tests skip without CUDA."""

from __future__ import annotations

import pytest
import torch

import batchprof.kernels  # noqa: F401 - sets TRITON_INTERPRET before anything imports triton
from tests.zoo import hide_repo_kernels_dir

hide_repo_kernels_dir()  # transformers must not import the repo's kernels/ (tests/zoo)


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
