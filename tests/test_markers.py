"""Every test that reads ../shared carries ``@pytest.mark.shared`` (so ``-m "not shared"`` and the
skip-when-absent rule in conftest.py cover all of them)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
SHARED_NAMES = {"SHARED", "shared_dir"}


def _is_shared_mark(node: ast.expr) -> bool:
    """``pytest.mark.shared`` (possibly inside a list of marks)."""
    if isinstance(node, (ast.List, ast.Tuple)):
        return any(_is_shared_mark(e) for e in node.elts)
    return isinstance(node, ast.Attribute) and node.attr == "shared" and "mark" in ast.unparse(node)


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} | {
        a.arg for n in ast.walk(node) if isinstance(n, ast.arguments) for a in n.args}


def unmarked_shared_tests(source: str) -> list[str]:
    """Names of test functions in ``source`` that use ../shared (directly or through a module-level
    helper) without the ``shared`` mark."""
    tree = ast.parse(source)
    module_marked = any(isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "pytestmark" for t in n.targets)
                        and _is_shared_mark(n.value) for n in tree.body)
    funcs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}

    def uses_shared(fn: ast.FunctionDef, seen: set[str]) -> bool:
        names = _names(fn)
        if names & SHARED_NAMES:
            return True
        return any(uses_shared(funcs[n], seen | {n}) for n in names if n in funcs and n not in seen)

    bad = []
    for name, fn in funcs.items():
        if not name.startswith("test_") or module_marked:
            continue
        marked = any(_is_shared_mark(d.func if isinstance(d, ast.Call) else d) for d in fn.decorator_list)
        if not marked and uses_shared(fn, {name}):
            bad.append(name)
    return bad


def test_detector_by_hand():
    src = '''
import pytest
SHARED = None
def _helper():
    return SHARED / "videos"
def test_direct():
    assert SHARED
def test_via_helper():
    _helper()
def test_fixture(shared_dir):
    pass
@pytest.mark.shared
def test_marked():
    _helper()
def test_unrelated():
    assert 1
'''
    assert unmarked_shared_tests(src) == ["test_direct", "test_via_helper", "test_fixture"]
    assert unmarked_shared_tests("import pytest\npytestmark = [pytest.mark.shared]\n" + src) == []


def test_every_shared_test_is_marked():
    bad = {p.name: unmarked_shared_tests(p.read_text()) for p in sorted(TESTS.glob("test_*.py"))}
    bad = {k: v for k, v in bad.items() if v}
    assert not bad, f"tests that use ../shared without @pytest.mark.shared: {bad}"
