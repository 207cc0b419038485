"""Lazy package exports: ``from vidclip.X import Name`` without importing every submodule (and
torch, open_clip, faiss ...) when the package is imported. Every package ``__init__`` uses it::

    _EXPORTS = {"evaluate": "vidclip.eval.evaluate", "VideoIndex": "library"}
    __getattr__ = lazy_getattr(globals(), _EXPORTS)
    __all__ = sorted(_EXPORTS)

A target with a dot is an absolute module name; one without is a submodule of the package.
A name is imported on every access that misses the namespace; ``cache=True`` stores it there
after the first. Not the default: a package attribute named like one of its submodules (``evaluate``
in vidclip.eval) must stay what the import system sets, or ``import vidclip.eval.evaluate as m``
would bind the function.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

__all__ = ["lazy_getattr"]


def lazy_getattr(namespace: dict[str, Any], exports: dict[str, str], *, cache: bool = False) -> Callable[[str], Any]:
    """A module ``__getattr__`` (PEP 562) for the package whose ``globals()`` is ``namespace``."""
    package = namespace["__name__"]

    def __getattr__(name: str) -> Any:
        target = exports.get(name)
        if target is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(target if "." in target else f"{package}.{target}")
        value = getattr(module, name)
        if cache:
            namespace[name] = value
        return value

    return __getattr__
