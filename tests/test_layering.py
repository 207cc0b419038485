"""The package's layering: data flows one way, and the import graph says so.

Read statically from the source (``ast``), so the rules cover imports inside functions too:
a lazy import still makes one package need another.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "vidclip"

# What each area may import, besides itself. Lower layers never import higher ones;
# searching (index, serve) and measuring (eval) never need the training package.
BASE = {"vidclip", "vidclip.errors", "vidclip.fileio", "vidclip.textio", "vidclip._lazy", "vidclip.processes", "vidclip.progress"}
ALLOWED = {
    **{name: BASE for name in BASE},
    "vidclip.video": BASE,
    "vidclip.models": BASE | {"vidclip.video"},
    "vidclip.data": BASE | {"vidclip.video", "vidclip.models"},
    # pipeline imports the Ray engine lazily (encode_videos(engine="ray")): the engine is the
    # pipeline's distributed form, one layer with it, and the only module that imports ray
    "vidclip.pipeline": BASE | {"vidclip.video", "vidclip.models", "vidclip.data", "vidclip.ray_engine"},
    "vidclip.ray_engine": BASE | {"vidclip.video", "vidclip.models", "vidclip.data", "vidclip.pipeline"},
}
# The ONNX runtime of the frozen CLIP (issue 18; issue 17 moves both under vidclip/models/clip/):
# its torch-free side sits on BASE alone, its exporter on the models layer.
ALLOWED["vidclip.onnx_runtime"] = BASE
ALLOWED["vidclip.onnx_export"] = ALLOWED["vidclip.models"] | {"vidclip.models", "vidclip.onnx_runtime"}
_FEATURES = ALLOWED["vidclip.pipeline"] | {"vidclip.pipeline"}
ALLOWED["vidclip.eval"] = _FEATURES
# index may use exactly rerank.core, CLIPRerank's math (imports only numpy and vidclip.errors):
# two-stage search (VideoIndex.search(rerank=N)) fuses scores the way `vidclip rerank` does,
# from the one implementation. The rest of rerank (inputs, frames, run) sits above index.
ALLOWED["vidclip.index"] = _FEATURES | {"vidclip.rerank.core"}
ALLOWED["vidclip.train"] = _FEATURES | {"vidclip.eval"}
ALLOWED["vidclip.rerank"] = _FEATURES | {"vidclip.eval", "vidclip.index"}
ALLOWED["vidclip.recognition"] = _FEATURES | {"vidclip.eval"}
ALLOWED["vidclip.serve"] = _FEATURES | {"vidclip.index", "vidclip.rerank"}
ALLOWED["vidclip.hybrid"] = BASE  # rank fusion (issue 19): pure math, imports only vidclip.errors
# The top-level facade (``vidclip/__init__.py``, lazy names) and the CLI layer (cli.py, demo.py,
# __main__ entry points) may import everything; a package's own
# ``commands.py`` may import what its package may, plus the shared option helpers.
CLI_LAYER = {"vidclip", "vidclip.cli", "vidclip.cli_options", "vidclip.demo", "vidclip.__main__"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


MODULES = _modules()


def _imports(name: str, path: Path, *, top_level_only: bool) -> set[str]:
    """The vidclip modules ``name`` imports (the longest module prefix of each imported name)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    nodes = tree.body if top_level_only else ast.walk(tree)
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            candidates = [f"{target}.{alias.name}" for alias in node.names] + [target]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        for candidate in candidates:
            while candidate and candidate not in MODULES:
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name:
                found.add(candidate)
    return found


def _area(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_lower_layers_never_import_higher_ones():
    violations = []
    for name, path in MODULES.items():
        area = _area(name)
        if name in CLI_LAYER or name.endswith(".__main__"):
            continue
        allowed = ALLOWED.get(area)
        assert allowed is not None, f"{name}: area {area} has no layering rule in tests/test_layering.py"
        if name.endswith(".commands"):
            allowed = allowed | {"vidclip.cli_options"}
        for imported in _imports(name, path, top_level_only=False):
            if _area(imported) != area and _area(imported) not in allowed and imported not in allowed:
                violations.append(f"{name} imports {imported}")
    assert not violations, "layering violations:\n" + "\n".join(sorted(violations))


def test_rerank_core_is_a_leaf():
    """index imports vidclip.rerank.core (see ALLOWED): it must stay pure math, or the edge would
    drag the rest of rerank (and through it index itself) below index."""
    path = MODULES["vidclip.rerank.core"]
    assert _imports("vidclip.rerank.core", path, top_level_only=False) <= {"vidclip.errors"}
    tree = ast.parse(path.read_text(encoding="utf-8"))
    third_party = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                   for alias in node.names}
    third_party |= {node.module.split(".")[0] for node in ast.walk(tree)
                    if isinstance(node, ast.ImportFrom) and not node.level and node.module}
    assert third_party <= {"numpy", "__future__", "dataclasses"}, third_party


def test_no_import_cycles_at_module_level():
    graph = {name: _imports(name, path, top_level_only=True) for name, path in MODULES.items()}
    # A package __init__ importing its own submodules is how a package is put together, not a cycle.
    for name in graph:
        graph[name] = {m for m in graph[name] if not (MODULES[name].name == "__init__.py"
                                                        and m.startswith(name + "."))}
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


def _loaded_after_import(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys\nprint('\\n'.join(sys.modules))"],
                         capture_output=True, text=True, check=True, timeout=120)
    return set(out.stdout.split())


@pytest.mark.parametrize("module", ["vidclip.index", "vidclip.serve", "vidclip.serve.app"])
def test_search_side_does_not_import_training(module):
    loaded = _loaded_after_import(f"import {module}")
    assert not {m for m in loaded if m == "vidclip.train" or m.startswith("vidclip.train.")}


def test_video_layer_does_not_import_torch():
    loaded = _loaded_after_import("import vidclip.video, vidclip.video.decode, vidclip.video.sample")
    assert "torch" not in loaded

