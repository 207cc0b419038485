"""vidclip.core.lazy: the one lazy-export helper of every package __init__."""

import subprocess
import sys

import pytest

from vidclip.core.lazy import lazy_getattr

PACKAGES = ["vidclip", "vidclip.data", "vidclip.eval", "vidclip.index", "vidclip.models", "vidclip.models.clip",
            "vidclip.models.temporal", "vidclip.train", "vidclip.serve", "vidclip.video"]


def test_lazy_getattr_resolves_relative_and_absolute_targets_and_refuses_others():
    namespace = {"__name__": "vidclip.features"}
    get = lazy_getattr(namespace, {"fast_hash": "identity", "atomic_path": "vidclip.core.fileio"})
    from vidclip.core.fileio import atomic_path
    from vidclip.features.identity import fast_hash

    assert get("fast_hash") is fast_hash and get("atomic_path") is atomic_path
    assert "fast_hash" not in namespace  # not cached unless asked
    with pytest.raises(AttributeError, match="module 'vidclip.features' has no attribute 'nope'"):
        get("nope")
    cached = {"__name__": "vidclip.features"}
    lazy_getattr(cached, {"fast_hash": "identity"}, cache=True)("fast_hash")
    assert cached["fast_hash"] is fast_hash


@pytest.mark.parametrize("package", PACKAGES)
def test_every_exported_name_resolves_without_importing_it_up_front(package):
    code = f"""
import importlib, sys
pkg = importlib.import_module({package!r})
exported = [n for n in getattr(pkg, "__all__", []) if not n.startswith("__")]
targets = getattr(pkg, "_EXPORTS", None) or getattr(pkg, "_LAZY", None) or {{}}
modules = {{t if "." in t else pkg.__name__ + "." + t for t in targets.values()}}
eager = sorted(m for m in modules if m in sys.modules)
assert not eager, f"imported with the package: {{eager}}"
for name in exported:
    assert getattr(pkg, name) is not None, name
try:
    pkg.no_such_name
except AttributeError as e:
    assert "no_such_name" in str(e)
else:
    raise SystemExit("no AttributeError")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
