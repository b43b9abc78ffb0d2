"""The layout's floors (README "Layout"): nothing low imports anything high, nothing imports the
CLI, the search never imports torch, every module imports. An AST scan of every import,
including the lazy ones inside functions."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import batchprof

PACKAGE = Path(batchprof.__file__).parent
FLOORS = {
    "records": 1, "spec": 1, "units": 1, "errors": 1, "defaults": 1, "gpus": 1,
    "backends": 2, "sampling": 2, "workloads": 2, "search": 2, "render": 2,
    "probe": 3, "prediction": 3, "roofline": 3, "noise": 3, "environment": 3, "kernels": 3,
    "compare": 2, "distributed": 3,
    "api": 4, "integrations": 5, "examples": 5, "cli": 5, "pytest_plugin": 5, "__init__": 5, "__main__": 5, "__version__": 1,
    # the noise package's records and maths are pure (no torch): records and render read them
    "noise.record": 1, "noise.estimator": 1, "noise.lr": 1, "noise.text": 2,
}
ENTRY_POINTS = {"__main__", "cli"}  # `python -m batchprof` runs the CLI


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"] or ["__init__"]
        out.append((".".join(parts), path))
    return out


def _imports(path: Path, module: str) -> set[str]:
    """Every batchprof module (first component below batchprof) this file imports."""
    package = module.split(".")[:-1] if path.name != "__init__.py" else module.split(".")
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                names = [".".join(["batchprof", *base, *([node.module] if node.module else [])])]
                if not node.module:
                    names = [f"{names[0]}.{a.name}" for a in node.names]
            else:
                names = [node.module or ""]
                if node.module == "batchprof":
                    names = [f"batchprof.{a.name}" for a in node.names]
        else:
            continue
        found |= {n.split(".", 1)[1] for n in names if n.startswith("batchprof.")}
    return found


def _floor(name: str) -> int:
    """The floor of the longest FLOORS key that is ``name`` or a package above it."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in FLOORS:
            return FLOORS[".".join(parts[:i])]
    return 5


def test_every_module_has_a_floor():
    tops = {m.split(".")[0] for m, _ in _modules()}
    assert sorted(tops - set(FLOORS)) == []


@pytest.mark.parametrize("module, path", _modules(), ids=[m for m, _ in _modules()])
def test_nothing_imports_upward_or_the_cli(module, path):
    top = module.split(".")[0]
    for target in _imports(path, module):
        if target.split(".")[0] == top:
            continue
        assert target.split(".")[0] != "cli" or top in ENTRY_POINTS, f"{module} imports the CLI"
        if top in ("__init__", "__main__"):
            continue
        assert _floor(target) <= _floor(module), (
            f"{module} (floor {_floor(module)}) imports batchprof.{target} "
            f"(floor {_floor(target)})")


def test_search_is_free_of_torch():
    for path in (PACKAGE / "search").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] == "torch" for n in names), path


@pytest.mark.parametrize("module", [m for m, _ in _modules() if not m.endswith("__main__")])
def test_every_module_imports(module):
    name = "batchprof" if module == "__init__" else f"batchprof.{module}"
    importlib.import_module(name)


BACKEND_MODULES = {p.stem for p in (PACKAGE / "backends").glob("*.py")} - {"__init__"}


def _backend_modules_imported(path: Path, module: str) -> set[str]:
    """The modules of batchprof.backends (cpu, cuda, fake, base) this file imports by name,
    ``from batchprof.backends import cpu`` included."""
    found = {t for t in _imports(path, module) if t.startswith("backends.")}
    package = module.split(".")[:-1] if path.name != "__init__.py" else module.split(".")
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom):
            continue
        base = (["batchprof", *package[: len(package) - (node.level - 1)]] if node.level
                else [])
        target = ".".join([*base, *([node.module] if node.module else [])])
        if target == "batchprof.backends":
            found |= {f"backends.{a.name}" for a in node.names if a.name in BACKEND_MODULES}
    return found


def test_backends_are_reached_through_the_package():
    """Outside batchprof.backends, code imports the protocol, its records and the factory from
    ``batchprof.backends``, never a backend's module: the CPU's allocator-event helpers are
    reached through ``Backend.allocator_window``."""
    reaching_in = {module: sorted(found) for module, path in _modules()
                   if module.split(".")[0] != "backends"
                   and (found := _backend_modules_imported(path, module))}
    assert reaching_in == {}
