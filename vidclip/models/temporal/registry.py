"""The temporal-module registry: a leaf module (it imports no module file at import time).

Each module file registers its classes with :func:`register_temporal` when it is imported
(``@register_temporal("mean")``). The built-in files (:data:`BUILTIN_MODULE_FILES`) are imported
the first time the registry is asked for a module or its list, so ``import vidclip.models``
stays cheap (no torch) and a module file never imports the registry's other plugins.
A module of one's own registers itself the same way once its file is imported.
"""

from __future__ import annotations

import importlib
from typing import Any

from vidclip.core.errors import ConfigError

__all__ = ["BUILTIN_MODULE_FILES", "TEMPORAL_MODULES", "register_temporal", "list_temporal", "create_temporal",
           "get_temporal"]

#: The files holding vidclip's own temporal modules, by family.
BUILTIN_MODULE_FILES = (
    "vidclip.models.temporal.base",  # base class, mean, query_scoring, xpool
    "vidclip.models.temporal.transformer",  # seq_transformer, tdb (CLIP4Clip / CLIP2Video blocks)
    "vidclip.models.temporal.ted",  # TED adapters inside the frozen ViT
)

#: name -> TemporalModule subclass, filled by :func:`register_temporal`.
TEMPORAL_MODULES: dict[str, type] = {}
_builtins_loaded = False


def _load_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        for name in BUILTIN_MODULE_FILES:
            importlib.import_module(name)


def register_temporal(name: str):
    """Class decorator: register a ``TemporalModule`` subclass under ``name``."""

    def deco(cls: type) -> type:
        # the base class, imported when a class registers (never when the registry is imported)
        from vidclip.models.temporal.base import TemporalModule

        if not (isinstance(cls, type) and issubclass(cls, TemporalModule)):
            raise TypeError(f"register_temporal({name!r}): {cls!r} is not a TemporalModule subclass")
        if name in TEMPORAL_MODULES and TEMPORAL_MODULES[name] is not cls:
            raise ValueError(f"temporal module {name!r} is already registered ({TEMPORAL_MODULES[name].__name__})")
        cls.name = name
        TEMPORAL_MODULES[name] = cls
        return cls

    return deco


def list_temporal() -> list[str]:
    """Registered temporal module names, sorted."""
    _load_builtins()
    return sorted(TEMPORAL_MODULES)


def get_temporal(name: str) -> type | None:
    """The class registered under ``name``, or None."""
    _load_builtins()
    return TEMPORAL_MODULES.get(name)


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
