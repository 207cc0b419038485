"""The package's layering: data flows one way, and the import graph says so.

Read statically from the source (``ast``), so the rules cover imports inside functions too: a lazy
import still makes one module need another. The graph has no cycles, with no exceptions.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "vidclip"

# What each area (vidclip.<area>) may import besides itself. Data flows one way:
# video -> frames -> frame features -> video features -> index or classifier.
BASE = {"vidclip", "vidclip.core"}  # the top package only for __version__; core for everything shared
_FEATURES = BASE | {"vidclip.video", "vidclip.models", "vidclip.features"}
_ENCODE = _FEATURES | {"vidclip.encode"}
ALLOWED = {
    "vidclip.core": {"vidclip.core"},
    "vidclip.video": BASE,
    "vidclip.models": BASE | {"vidclip.video"},
    "vidclip.features": BASE | {"vidclip.video", "vidclip.models"},
    "vidclip.retrieval": BASE,  # pure score math, shared by index search and rerank
    "vidclip.encode": _FEATURES,
    "vidclip.data": _FEATURES,
    "vidclip.synthetic": _ENCODE | {"vidclip.data"},
    "vidclip.index": _ENCODE | {"vidclip.retrieval"},
    "vidclip.eval": _ENCODE | {"vidclip.data", "vidclip.retrieval"},
    "vidclip.recognition": _ENCODE | {"vidclip.eval", "vidclip.retrieval"},
    "vidclip.train": _ENCODE | {"vidclip.data", "vidclip.eval", "vidclip.synthetic"},
    "vidclip.rerank": _ENCODE | {"vidclip.eval", "vidclip.index", "vidclip.retrieval"},
    "vidclip.serve": _ENCODE | {"vidclip.index", "vidclip.rerank", "vidclip.retrieval"},
}
# The CLI package and the top-level facade (lazy names) may import everything. A package's own
# ``commands.py`` (its verbs: parse, call one API function, print) may also use the shared options.
CLI_OPTIONS = "vidclip.cli.options"
ALLOWED_CLI_OPTIONS = BASE | {"vidclip.video", "vidclip.models", "vidclip.encode"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _lazy_targets(node: ast.AST, package: str) -> list[str]:
    """The modules a lazy export table names (``{"Name": "vidclip.x.y"}`` or a submodule name): a
    name exported lazily is imported on first use, so it is an edge like any import."""
    if not isinstance(node, ast.Dict):
        return []
    targets = []
    for value in node.values:
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            target = value.value if "." in value.value else f"{package}.{value.value}"
            if target in MODULES:
                targets.append(target)
    return targets


def _imports(name: str) -> set[str]:
    """The vidclip modules ``name`` imports anywhere in its source (the longest module prefix of
    each imported name), lazy export tables of package ``__init__`` files included."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            candidates = [f"{target}.{alias.name}" for alias in node.names] + [target]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.Dict) and path.name == "__init__.py":
            candidates = []
        else:
            continue
        for candidate in candidates + _lazy_targets(node, package):
            while candidate and candidate not in MODULES:
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name:
                found.add(candidate)
    return found


GRAPH = {name: _imports(name) for name in MODULES}


def _area(module: str) -> str:
    return ".".join(module.split(".")[:2])


def _is_cli_layer(name: str) -> bool:
    return name == "vidclip" or _area(name) in ("vidclip.cli", "vidclip.__main__")


def test_every_area_has_a_rule():
    areas = {_area(n) for n in MODULES if not _is_cli_layer(n)}
    assert areas <= set(ALLOWED), f"areas without a layering rule: {sorted(areas - set(ALLOWED))}"


def test_lower_layers_never_import_higher_ones():
    violations = []
    for name, imported in GRAPH.items():
        if _is_cli_layer(name) and name != CLI_OPTIONS:
            continue
        if name == CLI_OPTIONS:
            allowed = ALLOWED_CLI_OPTIONS
        else:
            allowed = ALLOWED[_area(name)]
            if name.endswith(".commands") or name.endswith(".__main__"):
                allowed = allowed | {CLI_OPTIONS}
        for module in imported:
            if _area(module) != _area(name) and _area(module) not in allowed and module not in allowed:
                violations.append(f"{name} imports {module}")
    assert not violations, "layering violations:\n" + "\n".join(sorted(violations))


def test_no_import_cycles():
    """Over every import, function-local ones included. A package __init__ naming its own
    submodules (eager or lazy exports) is how a package is put together, not a cycle."""
    graph = {name: {m for m in imported if not (MODULES[name].name == "__init__.py" and m.startswith(name + "."))}
             for name, imported in GRAPH.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def _reachable(start: str) -> set[str]:
    """Every module that importing ``start`` can lead to (its parent packages included, as Python
    imports them first)."""
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parents = [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)]
        todo.extend(m for m in list(GRAPH[name]) + parents if m in MODULES)
    return seen


@pytest.mark.parametrize("area", ["vidclip.index", "vidclip.serve", "vidclip.rerank"])
def test_search_side_never_reaches_training(area):
    bad = {}
    for name in MODULES:
        if _area(name) == area:
            train = sorted(m for m in _reachable(name) if _area(m) == "vidclip.train")
            if train:
                bad[name] = train
    assert not bad, f"{area} reaches the training package: {bad}"


def _loaded_after_import(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys\nprint('\\n'.join(sys.modules))"],
                         capture_output=True, text=True, check=True, timeout=120)
    return set(out.stdout.split())


@pytest.mark.parametrize("module", ["vidclip.index", "vidclip.index.commands", "vidclip.serve", "vidclip.serve.app"])
def test_search_side_does_not_import_training(module):
    loaded = _loaded_after_import(f"import {module}")
    assert not {m for m in loaded if m == "vidclip.train" or m.startswith("vidclip.train.")}


def test_video_layer_does_not_import_torch():
    """Every module of vidclip.video imports without torch (frames become torch tensors only
    inside the functions that return them), so `vidclip probe` starts in well under a second."""
    video = sorted(n for n in MODULES if _area(n) == "vidclip.video" and not n.endswith("__main__"))
    loaded = _loaded_after_import("import " + ", ".join(video))
    assert "torch" not in loaded


def test_architecture_doc_lists_every_file_once():
    """docs/architecture.md's layout block has one line per module, and no line for a file that is gone."""
    doc = (PACKAGE.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    block = doc.split("## Layout: one line per file", 1)[1].split("```", 2)[1]
    listed, folders = [], []
    for line in block.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        depth = (len(line) - len(line.lstrip())) // 2
        name = stripped.split()[0]
        folders = folders[:depth]
        if name.endswith("/"):
            folders.append(name)
        elif name.endswith(".py"):
            listed.append("".join(folders) + name)
    actual = sorted(str(p.relative_to(PACKAGE.parent)) for p in PACKAGE.rglob("*.py")
                    if p.name != "__init__.py" or p.parent == PACKAGE)
    assert sorted(set(listed)) == sorted(listed), "listed twice: " + str(sorted({x for x in listed if listed.count(x) > 1}))
    assert sorted(listed) == actual, (f"missing from the doc: {sorted(set(actual) - set(listed))}; "
                                      f"in the doc but not in the code: {sorted(set(listed) - set(actual))}")
