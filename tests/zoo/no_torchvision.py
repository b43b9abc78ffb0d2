"""A stand-in for ``torchvision`` so that ``timm`` imports without it.

Why: timm imports torchvision at module level (``timm.layers.create_norm`` needs
``torchvision.ops.misc.FrozenBatchNorm2d``, ``timm.data`` needs ``torchvision.transforms``), and
PyPI's torchvision wheel is a CUDA build whose compiled ops do not load next to the CPU torch
this project installs. The zoo uses timm's *models* only (no data pipelines, no frozen
BatchNorm, no torchvision ops), so the names timm imports just have to exist.

How: ``install()`` puts a finder on ``sys.meta_path`` that serves ``torchvision`` and every
``torchvision.*`` submodule as an empty module whose attributes are inert placeholder classes
(subclassable, hashable; calling one raises ``ModuleNotFoundError`` naming what was used). It
does nothing when a real torchvision is importable. The zoo calls it before importing timm;
nothing outside tests/zoo uses it. Install timm with ``pip install --no-deps timm==1.0.31`` so
pip does not pull torchvision (the Makefile's setup does this).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types


class _PlaceholderMeta(type):
    def __getattr__(cls, name: str) -> type:
        if name.startswith("__"):
            raise AttributeError(name)
        return _placeholder(f"{cls.__qualname__}.{name}")


def _placeholder(qualname: str) -> type:
    def refuse(*args, **kwargs):
        raise ModuleNotFoundError(
            f"torchvision is not installed (tests/zoo/no_torchvision.py stands in for it): "
            f"{qualname} cannot be used")

    return _PlaceholderMeta(qualname.rsplit(".", 1)[-1], (), {"__new__": refuse,
                                                              "__qualname__": qualname})


class _StandInModule(types.ModuleType):
    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _placeholder(f"{self.__name__}.{name}")


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname == "torchvision" or fullname.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StandInModule(spec.name)
        module.__path__ = []
        module.__version__ = "0.0+standin"
        return module

    def exec_module(self, module):
        return None


_FINDER = _Finder()


def install() -> bool:
    """Serve the stand-in unless a real torchvision exists; True when the stand-in is active."""
    if _FINDER in sys.meta_path:
        return True
    if "torchvision" in sys.modules or importlib.util.find_spec("torchvision") is not None:
        return False
    sys.meta_path.append(_FINDER)
    return True
