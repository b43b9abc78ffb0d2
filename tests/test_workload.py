from __future__ import annotations

import sys
import textwrap

import pytest
import torch

import batchprof
from batchprof.errors import WorkloadError
from batchprof.workloads import BUILTINS

from .helpers import tiny_workload


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_builtin_builds_on_meta_and_trains_on_cpu(name):
    w = batchprof.load_workload(name)
    with torch.device("meta"):
        meta_model = w.model_fn()
    assert all(p.device.type == "meta" for p in meta_model.parameters())
    model = w.model_fn()
    loss = w.loss_fn(model, w.batch_fn(3, torch.device("cpu")))
    assert loss.dim() == 0 and torch.isfinite(loss)


def test_transformer_ties_embeddings():
    model = batchprof.load_workload("transformer").model_fn()
    assert model.lm_head.weight is model.tok_emb.weight


def test_load_module_attr_workload_and_factory(tmp_path, monkeypatch):
    (tmp_path / "userwl.py").write_text(textwrap.dedent("""
        from tests.helpers import tiny_workload
        WL = tiny_workload(name="user")
        def factory():
            return tiny_workload(name="factory")
        NOT_A_WORKLOAD = 3
        def broken():
            raise RuntimeError("boom")
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert batchprof.load_workload("userwl:WL").name == "user"
    assert batchprof.load_workload("userwl:factory").name == "factory"
    with pytest.raises(WorkloadError, match="not a batchprof.Workload"):
        batchprof.load_workload("userwl:NOT_A_WORKLOAD")
    with pytest.raises(WorkloadError, match="boom"):
        batchprof.load_workload("userwl:broken")
    with pytest.raises(WorkloadError, match="has no attribute 'missing'"):
        batchprof.load_workload("userwl:missing")
    sys.modules.pop("userwl", None)


@pytest.mark.parametrize("ref,match", [
    ("nope", "unknown workload 'nope'"),
    ("no_such_module_xyz:attr", "cannot import module"),
    ("", "workload must be"),
])
def test_bad_workload_refs(ref, match):
    with pytest.raises(WorkloadError, match=match):
        batchprof.load_workload(ref)


def test_workload_validates_callables():
    with pytest.raises(WorkloadError, match="model_fn must be callable"):
        batchprof.Workload("x", None, lambda b, d: None, lambda m, b: None)  # type: ignore[arg-type]
    assert tiny_workload().name == "tiny"
