"""README.md is a tested contract: every ```bash and ```python block of it runs here, in order.

Blocks run in README order in one shared temporary working directory (later blocks use what
earlier ones made, e.g. ``vidclip synth`` output), each with a timeout, offline. A block is
skipped only when the line just before its opening fence is
``<!-- readme-test: skip (REASON) -->``; the skip names the reason. One pytest param per block,
id ``<section heading>-<n>``, so ``pytest -v tests/test_readme.py`` lists every block.

How blocks run:

- ``bash`` blocks: ``bash -e -o pipefail`` (a failing line fails the block), with ``HOME`` set to
  a folder inside the working directory so nothing is written to the real home.
- ``vidclip serve ...`` inside a bash block is a short start check instead of a server that runs
  until Ctrl+C: the server is started (on a free port: ``--port 0`` is appended), the test waits
  for its ``Serving on`` line, asks ``/health`` for ``status: ok``, then stops it with SIGINT and
  requires exit code 0.
- ``python`` blocks are saved as a script in the working directory and run with
  ``python SCRIPT`` (a plain script: the way a newcomer runs a snippet).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SKIP_RE = re.compile(r"^<!--\s*readme-test:\s*skip\s*\((?P<reason>[^)]+)\)\s*-->\s*$")
FENCE_RE = re.compile(r"^```(?P<lang>[A-Za-z0-9_+-]*)\s*$")
RUN_LANGS = ("bash", "python")
BLOCK_TIMEOUT_S = 300
SERVE_START_TIMEOUT_S = 120

# Defines `vidclip` as a shell function so that `vidclip serve` becomes a start check; every
# other verb runs the real command.
SERVE_SHIM = r"""
__readme_serve_check() {
    local log pid url i
    log=$(mktemp)
    command vidclip "$@" --port 0 >"$log" 2>&1 &
    pid=$!
    for ((i = 0; i < SERVE_START_TIMEOUT * 5; i++)); do
        grep -q '^Serving on' "$log" && break
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "readme-test: 'vidclip serve $*' exited before serving:" >&2; cat "$log" >&2; return 1
        fi
        sleep 0.2
    done
    url=$(grep -o 'http://127\.0\.0\.1:[0-9]*/' "$log" | head -n 1)
    if [ -z "$url" ]; then
        echo "readme-test: 'vidclip serve $*' printed no URL in time:" >&2; cat "$log" >&2
        kill -KILL "$pid"; return 1
    fi
    if ! python -c 'import json, sys, urllib.request
h = json.load(urllib.request.urlopen(sys.argv[1] + "health", timeout=30))
assert h["status"] == "ok", h' "$url"; then
        kill -KILL "$pid"; cat "$log" >&2; return 1
    fi
    kill -INT "$pid"
    if ! wait "$pid"; then
        echo "readme-test: 'vidclip serve $*' did not stop cleanly on Ctrl+C:" >&2; cat "$log" >&2; return 1
    fi
    echo "readme-test: vidclip serve $* answered /health at $url"
}
vidclip() {
    if [ "${1:-}" = serve ]; then __readme_serve_check "$@"; else command vidclip "$@"; fi
}
"""


@dataclass(frozen=True)
class Block:
    id: str          # <section slug>-<n>
    lang: str        # bash | python
    code: str
    line: int        # 1-based line of the opening fence in README.md
    skip: str | None  # the reason from the skip marker, or None


def _slug(heading: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", heading.lower()).strip("-") or "top"


def readme_blocks(text: str) -> list[Block]:
    """Every ```bash / ```python block of ``text`` in order (other fences are read and ignored).

    Raises ValueError for a skip marker that is not directly above a runnable block's fence, or
    an unclosed fence: a marker that silently applies to nothing would hide a broken command.
    """
    lines = text.splitlines()
    blocks: list[Block] = []
    section, count = "top", {}
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            section = _slug(line.lstrip("#"))
        m = FENCE_RE.match(line)
        if m:
            end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), None)
            if end is None:
                raise ValueError(f"README.md line {i + 1}: code fence is never closed")
            lang = m.group("lang")
            prev = SKIP_RE.match(lines[i - 1].strip()) if i > 0 else None
            if lang in RUN_LANGS:
                count[section] = count.get(section, 0) + 1
                blocks.append(Block(f"{section}-{count[section]}", lang, "\n".join(lines[i + 1:end]) + "\n",
                                    i + 1, prev.group("reason").strip() if prev else None))
            elif prev:
                raise ValueError(f"README.md line {i}: skip marker above a ```{lang} block, which never runs")
            i = end + 1
            continue
        if SKIP_RE.match(line.strip()) and not (i + 1 < len(lines) and FENCE_RE.match(lines[i + 1])):
            raise ValueError(f"README.md line {i + 1}: skip marker is not on the line just before a code fence")
        i += 1
    return blocks


BLOCKS = readme_blocks(README.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """One working directory for the whole README, as a user's shell would have."""
    d = tmp_path_factory.mktemp("readme")
    (d / "home").mkdir()
    return d


def _env(workdir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(HOME=str(workdir / "home"), SERVE_START_TIMEOUT=str(SERVE_START_TIMEOUT_S),
               PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    # The interpreter running the tests is the one whose `vidclip` and `python` the README means.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def run_block(block: Block, workdir: Path) -> subprocess.CompletedProcess:
    if block.lang == "python":
        script = workdir / f"readme_{block.id}.py"
        script.write_text(block.code, encoding="utf-8")
        cmd = [sys.executable, script.name]
    else:
        cmd = ["bash", "-e", "-o", "pipefail", "-c", SERVE_SHIM + "\n" + block.code]
    return subprocess.run(cmd, cwd=workdir, env=_env(workdir), capture_output=True, text=True,
                          timeout=BLOCK_TIMEOUT_S, stdin=subprocess.DEVNULL)


def test_readme_has_runnable_blocks():
    runnable = [b for b in BLOCKS if b.skip is None]
    assert len(runnable) >= 5, [b.id for b in BLOCKS]
    assert len({b.id for b in BLOCKS}) == len(BLOCKS)


def test_readme_blocks_parser_by_hand():
    text = "\n".join([
        "# T", "## Quick start", "```bash", "echo a", "```", "text", "```", "not run", "```",
        "<!-- readme-test: skip (needs network) -->", "```bash", "pip install x", "```",
        "### Py: `api`", "```python", "print(1)", "```", "```bash", "echo b", "```",
    ])
    got = [(b.id, b.lang, b.code, b.skip) for b in readme_blocks(text)]
    assert got == [("quick-start-1", "bash", "echo a\n", None),
                   ("quick-start-2", "bash", "pip install x\n", "needs network"),
                   ("py-api-1", "python", "print(1)\n", None),
                   ("py-api-2", "bash", "echo b\n", None)]
    with pytest.raises(ValueError, match="line 2: skip marker is not on the line just before"):
        readme_blocks("x\n<!-- readme-test: skip (needs GPU) -->\n\n```bash\nls\n```\n")
    with pytest.raises(ValueError, match="never closed"):
        readme_blocks("```bash\nls\n")


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_readme_block(block: Block, workdir: Path):
    if block.skip is not None:
        pytest.skip(f"README.md line {block.line}: {block.skip}")
    try:
        r = run_block(block, workdir)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"README.md line {block.line} ({block.id}) ran past {BLOCK_TIMEOUT_S} s:\n"
                    f"{(e.stdout or b'')[-2000:]!r}\n{(e.stderr or b'')[-2000:]!r}")
    assert r.returncode == 0, (
        f"README.md line {block.line} ({block.id}) failed with exit code {r.returncode}\n"
        f"--- block ---\n{block.code}--- stdout (tail) ---\n{r.stdout[-3000:]}\n--- stderr (tail) ---\n{r.stderr[-3000:]}")
