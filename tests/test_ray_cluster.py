"""--engine ray on a real two-node cluster on this machine: a head and a second node started with
`ray start` on loopback, 1 CPU each, and `vidclip index` run against it as a separate driver.

Checks that work ran on both nodes and that the index equals the local engine's. `ray stop` at the
end stops every Ray process of this machine, so this module keeps to itself (tests/test_ray.py's
local Ray is shut down with its module). Token authentication is off (RAY_AUTH_MODE=disabled)
for this throwaway cluster.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from index_testutil import make_clip

pytest.importorskip("ray")

REPO = Path(__file__).resolve().parents[1]
SAMPLING = ["--fps", "4", "--window", "1", "--stride", "0.5"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_cli() -> list[str]:
    exe = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
    return [exe]


@pytest.fixture(scope="module")
def cluster():
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    port = _free_port()
    address = f"127.0.0.1:{port}"
    head = [*_ray_cli(), "start", "--head", "--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--port", str(port),
            "--include-dashboard", "false", "--disable-usage-stats"]
    worker = [*_ray_cli(), "start", "--address", address, "--num-cpus", "1", "--disable-usage-stats"]
    try:
        for cmd in (head, worker):
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
            assert proc.returncode == 0, proc.stdout + proc.stderr
        yield address, env
    finally:
        subprocess.run([*_ray_cli(), "stop"], env=env, capture_output=True, timeout=180)


def _index_cli(lib: Path, idx: Path, env: dict, *extra: str) -> dict:
    cmd = [sys.executable, "-m", "vidclip", "index", str(lib), "--index", str(idx), "--model", "tiny-vit",
           "--pretrained", "none", *SAMPLING, "--commit-every", "2", "--batch-frames", "16", "--json", *extra]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.slow
def test_index_across_two_nodes_equals_local(tmp_path, cluster):
    from test_ray import _content

    address, env = cluster
    lib = tmp_path / "lib"
    for i in range(6):
        make_clip(lib / f"clip{i}.mp4", seed=70 + i, seconds=1.5 + 0.5 * (i % 2))
    remote = _index_cli(lib, tmp_path / "ray", env, "--engine", "ray", "--ray-address", address, "--encoders", "1")
    assert remote["engine"] == "ray" and remote["indexed"] == 6 and not remote["failed"]
    assert len(remote["nodes"]) == 2, remote["nodes"]  # decode tasks and the encoder actor used both nodes
    local = _index_cli(lib, tmp_path / "local", env, "--workers", "0")
    assert local["indexed"] == 6
    assert _content(tmp_path / "ray") == _content(tmp_path / "local")
