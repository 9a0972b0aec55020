"""Registry of quantization methods: every module in this package registers one method.

A new method is one new file here defining a :class:`~explorer.methods.base.Quantizer`
subclass decorated with :func:`register`; it is then available to the CLI, the dashboard and
the sweep by its ``name``, without editing any other file.
"""
from __future__ import annotations

import importlib
import pkgutil

from ..errors import InvalidParameter
from .base import Option, Quantizer

_REGISTRY: dict[str, type[Quantizer]] = {}
_loaded = False


def register(cls: type[Quantizer]) -> type[Quantizer]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    if not cls.name:
        raise TypeError(f"{cls.__name__} needs a non-empty class attribute 'name' to be registered")
    _REGISTRY[cls.name] = cls
    return cls


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_") and info.name != "base":
            importlib.import_module(f"{__name__}.{info.name}")
    _loaded = True


def available() -> list[str]:
    """Names of every registered method, classic ones first."""
    _load_all()
    order = ["pq", "opq"]
    return sorted(_REGISTRY, key=lambda n: (order.index(n) if n in order else len(order), n))


def get(name: str) -> type[Quantizer]:
    """The class registered as ``name``; unknown names raise with the list of valid ones."""
    _load_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InvalidParameter(f"unknown method {name!r}; choose one of: {', '.join(available())}") from None


def create(name: str, **params) -> Quantizer:
    """Instantiate method ``name`` with ``params``, naming any parameter it does not take."""
    cls = get(name)
    valid = cls.param_names()
    unknown = [p for p in params if p not in valid]
    if unknown:
        raise InvalidParameter(f"method {name!r} has no parameter(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
    return cls(**params)


__all__ = ["Option", "Quantizer", "register", "available", "get", "create"]
