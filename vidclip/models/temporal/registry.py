"""The temporal-module registry: a leaf (it imports none of its plugins, and none imports it).

Modules are named in a table ``name -> "module:Class"`` (:data:`TEMPORAL_MODULES`); a class is
imported the first time it is asked for (:func:`get_temporal`, :func:`create_temporal`), so
``import vidclip.models`` stays cheap (no torch), and listing the names imports nothing.
vidclip's own modules are in the table from the start (:data:`BUILTIN_TEMPORAL`); a module of
one's own is added with :func:`register_temporal`, as a decorator on its class or by its
``"module:Class"`` path (then imported only when used).
"""

from __future__ import annotations

import importlib
from typing import Any

from vidclip.core.errors import ConfigError

__all__ = ["BUILTIN_TEMPORAL", "TEMPORAL_MODULES", "register_temporal", "list_temporal", "create_temporal",
           "get_temporal"]

#: vidclip's own temporal modules: name -> ``"module:Class"`` (each class's ``name`` says the same).
BUILTIN_TEMPORAL = {
    "mean": "vidclip.models.temporal.mean:MeanPooling",
    "query_scoring": "vidclip.models.temporal.query:QueryScoring",
    "xpool": "vidclip.models.temporal.xpool:XPool",
    "seq_transformer": "vidclip.models.temporal.transformer:SeqTransformer",
    "tdb": "vidclip.models.temporal.transformer:TemporalDifferenceBlock",
    "ted": "vidclip.models.temporal.ted:TEDVideoEncoder",
}

#: name -> ``"module:Class"`` not imported yet, or the TemporalModule subclass once it is.
TEMPORAL_MODULES: dict[str, str | type] = dict(BUILTIN_TEMPORAL)


def _check_class(name: str, cls: Any) -> type:
    # the base class, imported when a class is checked (never when the registry is imported)
    from vidclip.models.temporal.base import TemporalModule

    if not (isinstance(cls, type) and issubclass(cls, TemporalModule)):
        raise TypeError(f"temporal module {name!r}: {cls!r} is not a TemporalModule subclass")
    return cls


def _path(entry: str | type) -> str:
    return entry if isinstance(entry, str) else f"{entry.__module__}:{entry.__qualname__}"


def _add(name: str, entry: str | type) -> None:
    have = TEMPORAL_MODULES.get(name)
    if have is not None and _path(have) != _path(entry):
        raise ValueError(f"temporal module {name!r} is already registered ({_path(have)})")
    if have is None or isinstance(entry, type):
        TEMPORAL_MODULES[name] = entry


def register_temporal(name: str, target: str | None = None):
    """Register a ``TemporalModule`` subclass under ``name``.

    As a class decorator (``@register_temporal("max")``), or with the class's ``"module:Class"``
    path (``register_temporal("max", "my_pkg.pooling:MaxPool")``), which imports it only when used.
    Raises ValueError when ``name`` is taken by another class.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"register_temporal: name must be a non-empty str, got {name!r}")
    if target is not None:
        module, _, attr = target.partition(":")
        if not module or not attr:
            raise ValueError(f"register_temporal({name!r}, {target!r}): expected 'module:Class'")
        _add(name, target)
        return None

    def deco(cls: type) -> type:
        _check_class(name, cls)
        _add(name, cls)
        cls.name = name
        return cls

    return deco


def list_temporal() -> list[str]:
    """Registered temporal module names, sorted (imports none of them)."""
    return sorted(TEMPORAL_MODULES)


def get_temporal(name: str) -> type | None:
    """The class registered under ``name`` (imported now if it was not yet), or None."""
    entry = TEMPORAL_MODULES.get(name)
    if entry is None or isinstance(entry, type):
        return entry
    module, _, attr = entry.partition(":")
    cls = _check_class(name, getattr(importlib.import_module(module), attr))
    if cls.name and cls.name != name:
        raise ValueError(f"temporal module {name!r}: {entry} is named {cls.name!r}")
    cls.name = name
    TEMPORAL_MODULES[name] = cls
    return cls


def create_temporal(name: str, embed_dim: int, *, max_frames: int = 32, clip: Any = None, **kw: Any):
    """Build temporal module ``name`` for embedding width ``embed_dim``.

    Args:
        name: one of :func:`list_temporal`.
        embed_dim: ``D``.
        max_frames: most frames per video (size of the frame-position tables).
        clip: the FrozenCLIP; seq_transformer/tdb copy text-tower layers and positions from it
            when its text width equals ``D``; ted needs it.
        **kw: module options (e.g. ``num_layers``, ``tau``, ``dropout``, ``bottleneck``).
    Raises:
        ConfigError: unknown name or option, or invalid value.
    """
    cls = get_temporal(name)
    if cls is None:
        raise ConfigError(f"temporal module {name!r} is unknown; choose one of {list_temporal()}")
    try:
        return cls.create(embed_dim, max_frames=max_frames, clip=clip, **kw)
    except TypeError as e:
        if "unexpected keyword argument" in str(e):
            raise ConfigError(f"temporal module {name!r}: bad option(s) {sorted(kw)}: {e}") from e
        raise
