"""The pieces of the Ray engine that need no Ray: fixed-size encoder passes, partitions, the
missing-Ray error, and that nothing but vidclip.encode.engines.ray imports Ray."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from vidclip.core.errors import ConfigError
from vidclip.encode.engines.ray import make_partitions
from vidclip.encode.options import EncodeOptions
from vidclip.encode.protocol import EncodeItem
from vidclip.encode.worker import FixedPassEncoder


def _videos(clip, counts, seed=0):
    g = torch.Generator().manual_seed(seed)
    S = clip.image_size
    return [torch.randint(0, 256, (n, S, S, 3), dtype=torch.uint8, generator=g) for n in counts]


def test_fixed_passes_match_hand_cut_batches_and_ignore_order(tiny_clip):
    videos = _videos(tiny_clip, [5, 0, 9, 3, 5])  # 22 frames, one video without any
    B = 8
    enc = FixedPassEncoder(tiny_clip, B, pad_last=True)
    out = []
    for n, v in enumerate(videos):
        out += enc.add(n, v)
    out += enc.finish()
    assert [n for n, _ in out] == [0, 1, 2, 3, 4]  # completed in the order added
    # reference: all frames in add order, cut into passes of exactly B rows, the last one zero-padded
    frames = torch.cat(videos)
    padded = torch.cat([frames, torch.zeros((24 - 22, *frames.shape[1:]), dtype=torch.uint8)])
    ref = torch.cat([tiny_clip.encode_frames(padded[i:i + B], batch_size=B) for i in range(0, 24, B)])[:22]
    assert torch.equal(torch.cat([e for _, e in out]), ref)
    assert enc.passes == 3 and enc.padded_rows == 2 and enc.frames_done == 22
    assert out[1][1].shape == (0, tiny_clip.embed_dim)
    # another order (another completion order, another engine's partition): bit-identical per video
    enc2 = FixedPassEncoder(tiny_clip, B, pad_last=True)
    out2 = []
    for n in (4, 2, 0, 3, 1):
        out2 += enc2.add(n, videos[n])
    out2 += enc2.finish()
    got = dict(out2)
    for n, emb in out:
        assert torch.equal(got[n], emb), n
    # without padding the last pass is shorter (no wasted rows)
    enc3 = FixedPassEncoder(tiny_clip, B, pad_last=False)
    enc3.add(0, videos[0])
    (_, emb), = enc3.finish()
    assert enc3.padded_rows == 0 and emb.shape == (5, tiny_clip.embed_dim)
    with pytest.raises(Exception, match="batch_frames: must be positive"):
        FixedPassEncoder(tiny_clip, 0)


def _item(key, size=10, mtime=1):
    return EncodeItem(key, f"/lib/{key}", {}, size, mtime)


def test_partitions_are_sorted_chunks_with_content_ids():
    settings = {"model": {"name": "m"}, "sampler": {"name": "fps"}, "batch_frames": 8}
    items = [_item(k) for k in ("d", "a", "c", "e", "b")]
    parts = make_partitions(items, 2, settings)
    assert [[it.key for it in p.items] for p in parts] == [["a", "b"], ["c", "d"], ["e"]]
    assert [p.index for p in parts] == [0, 1, 2]
    again = make_partitions(list(reversed(items)), 2, settings)
    assert [p.id for p in again] == [p.id for p in parts]  # input order does not matter
    # a changed file, another sampler or other settings: another id (its staging is not reused)
    touched = make_partitions([_item(k, mtime=2 if k == "c" else 1) for k in "abcde"], 2, settings)
    assert [a.id == b.id for a, b in zip(parts, touched)] == [True, False, True]
    other = make_partitions(items, 2, {**settings, "sampler": {"name": "uniform"}})
    assert not {p.id for p in parts} & {p.id for p in other}
    # the committed first partition gone from the to-do list: the rest keep their ids' content
    rest = make_partitions([it for it in items if it.key in "cde"], 2, settings)  # a, b committed
    assert [it.key for it in rest[0].items] == ["c", "d"]
    assert rest[0].id == parts[1].id and rest[0].index == 0
    assert len(parts[0].id) == 24 and set(parts[0].id) <= set("0123456789abcdef")
    with pytest.raises(ConfigError, match="partition size must be positive"):
        make_partitions(items, 0, settings)


def test_nothing_to_stage_draws_no_bar_and_starts_no_ray(tmp_path, capsys, monkeypatch):
    """A re-run with every video done (`vidclip encode ... --engine ray` again) prints no empty bar."""
    import vidclip.encode.engines.ray as ray_engine
    from vidclip.encode.engines.ray import stage_partitions

    monkeypatch.setattr(ray_engine, "connect", lambda *a, **k: pytest.fail("Ray started with nothing to do"))
    assert list(stage_partitions([], tmp_path / "staging", {}, EncodeOptions(progress="encode (ray)"))) == []
    assert capsys.readouterr().err == "" and not (tmp_path / "staging").exists()


def test_missing_ray_is_a_clear_error(tmp_path, monkeypatch, tiny_clip):
    from vidclip.encode.pipeline import encode_videos
    from vidclip.index import index_library
    from vidclip.video.sample import SamplerConfig

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ConfigError, match=r'--engine ray needs Ray.*pip install -e "\.\[ray\]"'):
        index_library(tmp_path, tmp_path / "idx", tiny_clip, engine="ray", progress=False)
    assert not (tmp_path / "idx").exists()  # failed before touching anything
    with pytest.raises(ConfigError, match=r'pip install -e "\.\[ray\]"'):
        encode_videos([("a", "a.mp4")], tmp_path / "out", tiny_clip, SamplerConfig(), engine="ray")
    with pytest.raises(ConfigError, match="expected 'local' or 'ray'"):
        index_library(tmp_path, tmp_path / "idx", tiny_clip, engine="spark", progress=False)


def test_only_the_ray_engine_imports_ray():
    code = ("import vidclip, vidclip.index, vidclip.encode.pipeline, vidclip.encode.engines.local, vidclip.cli.main, "
            "vidclip.index.build\n"
            "vidclip.cli.main.build_parser()\n"
            "import sys; print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "False"


def test_cli_engine_options_are_checked(tmp_path, capsys):
    from vidclip.cli.main import main

    assert main(["index", str(tmp_path), "--index", str(tmp_path / "idx"), "--engine", "ray", "--encoders", "0"]) == 2
    assert "--encoders must be positive, got 0" in capsys.readouterr().err
    assert not (tmp_path / "idx").exists()
    with pytest.raises(SystemExit):
        main(["encode", "x.mp4", "--out", "o", "--engine", "dask"])


def test_an_address_nothing_answers_on_fails_at_once(monkeypatch):
    """ray.init on a dead HOST:PORT retries for minutes, printing C++ warnings; vidclip says so first."""
    import socket
    import types

    import vidclip.encode.engines.ray as ray_engine

    fake_ray = types.SimpleNamespace(is_initialized=lambda: False,
                                     init=lambda **kw: pytest.fail(f"ray.init reached with {kw}"))
    monkeypatch.setattr(ray_engine, "require_ray", lambda: fake_ray)
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens on it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConfigError, match=rf"--ray-address 127.0.0.1:{port}: no Ray cluster answers there"):
        ray_engine.connect(f"127.0.0.1:{port}")
    with pytest.raises(ConfigError, match=r"--ray-address 'head-node': expected HOST:PORT"):
        ray_engine.connect("head-node")
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    with pytest.raises(ConfigError, match=rf"RAY_ADDRESS 127.0.0.1:{port}: no Ray cluster"):
        ray_engine.connect(None)
    # a listening port passes the check and reaches ray.init with the address as given
    seen = {}
    fake_ray.init = lambda **kw: seen.update(kw)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        address = f"127.0.0.1:{server.getsockname()[1]}"
        assert ray_engine.connect(address) == (fake_ray, True)
    assert seen["address"] == address
    for left_to_ray in ("auto", "local", "ray://head:10001"):
        assert ray_engine.connect(left_to_ray) == (fake_ray, True) and seen["address"] == left_to_ray


def test_the_ray_bar_says_what_it_waits_for(tmp_path, capsys, monkeypatch):
    """While the bar stands at 0 (Ray starting, encoders loading the model, the first partition
    decoding, then encoding) its stage= says which; it is drawn before Ray starts."""
    import vidclip.encode.engines.ray as ray_engine
    from vidclip.encode.engines.ray import Partition, ray_stage, stage_partitions

    def no_cluster(address):
        raise ConfigError("no cluster here")

    monkeypatch.setattr(ray_engine, "connect", no_cluster)
    part = Partition(0, "p0", [EncodeItem("a.mp4", str(tmp_path / "a.mp4"), size=1, mtime_ns=1)])
    with pytest.raises(ConfigError, match="no cluster"):
        list(stage_partitions([part], tmp_path / "staging", {}, EncodeOptions(progress="index (ray)")))
    assert "stage=starting Ray" in capsys.readouterr().err
    assert ray_stage(0, 2, 0, 5, 0, 64) == "loading the model on 2 of 2 encoder(s)"
    assert ray_stage(2, 2, 0, 5, 10, 64) == "decoding partition 1/5 (10/64 videos)"
    assert ray_stage(2, 2, 3, 5, 64, 64) == "encoding partition 4/5"
