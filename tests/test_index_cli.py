"""vidclip index / vidclip search from the command line: library kinds, batched queries, rounding
of rates, change detection, the synthetic-model warning (issue 7)."""

from __future__ import annotations

import json
import os

import pytest
from index_testutil import make_clip

from vidclip.core.errors import DatasetError
from vidclip.index import index_library, scan_library


def _lib(tmp_path, n=3):
    lib = tmp_path / "lib"
    for i in range(n):
        make_clip(lib / f"clip{i}.mp4", seed=i, seconds=2.0)
    return lib


def test_a_video_named_file_is_a_video_not_a_path_list(tmp_path):
    fake = tmp_path / "text.mp4"
    fake.write_text("a.mp4\nb.mp4\nb.mp4\n")  # before: read as a list ("line 3: path ... already listed")
    got = scan_library(fake)
    assert [i.path for i in got.items] == [fake.resolve()] and got.root == tmp_path.resolve()
    other = tmp_path / "paths.json"
    other.write_text("[]")
    with pytest.raises(DatasetError, match=r"paths\.json: not a library: .*\.txt"):
        scan_library(other)
    lst = tmp_path / "paths.txt"
    lst.write_text("a.mp4\n")
    assert [i.key for i in scan_library(lst).items] == ["a.mp4"]


def test_single_video_file_library(tmp_path, tiny_clip, windows_sampler):
    lib = _lib(tmp_path, n=1)
    fake = lib / "text.mp4"
    fake.write_text("not a video\n")
    rep = index_library(lib / "clip0.mp4", tmp_path / "idx", tiny_clip, windows_sampler, workers=0, progress=False)
    assert rep.indexed == 1 and not rep.failed
    rep = index_library(fake, tmp_path / "idx", tiny_clip, windows_sampler, workers=0, progress=False)
    assert rep.indexed == 0 and [f["path"] for f in rep.failed] == [str(fake)]  # a bad video, recorded


def test_changed_size_or_mtime_is_reindexed(tmp_path, tiny_clip, windows_sampler):
    lib = _lib(tmp_path, n=2)
    idx = tmp_path / "idx"
    index_library(lib, idx, tiny_clip, windows_sampler, workers=0, progress=False)
    make_clip(lib / "clip0.mp4", seed=7, seconds=3.0)  # new content, new size
    st = (lib / "clip1.mp4").stat()
    os.utime(lib / "clip1.mp4", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched, same bytes
    rep = index_library(lib, idx, tiny_clip, windows_sampler, workers=0, progress=False)
    assert rep.indexed == 1 and rep.unchanged == 1 and rep.total_indexed == 2
    with open(lib / "clip1.mp4", "r+b") as f:  # same size, other bytes at the head, new mtime
        head = f.read(64)
        f.seek(0)
        f.write(bytes(b ^ 0x01 for b in head))
    os.utime(lib / "clip1.mp4", ns=(st.st_atime_ns, st.st_mtime_ns + 2 * 10**9))
    rep = index_library(lib, idx, tiny_clip, windows_sampler, workers=0, progress=False)
    assert rep.unchanged == 1 and (rep.indexed == 1 or len(rep.failed) == 1)  # re-read, not skipped


def test_rates_are_rounded():
    from vidclip.index.commands import _rate

    assert [_rate(x) for x in (848.85, 12.345, 0.45678, 3.0, 1234.5)] == ["849", "12.3", "0.457", "3", "1234"]


def test_search_queries_file_one_model_load_jsonl(tmp_path, tiny_clip, windows_sampler, capsys, monkeypatch):
    from vidclip.cli.main import main
    from vidclip.models.clip import load as clip_module

    lib = _lib(tmp_path, n=3)
    idx = tmp_path / "idx"
    # no ONNX text tower: the torch path, whose model loads once (the light runtime loads none)
    index_library(lib, idx, tiny_clip, windows_sampler, workers=0, progress=False, onnx_text=False)
    qf = tmp_path / "q.jsonl"
    qf.write_text('{"id": "q1", "query": "a red circle"}\n\n{"query": "a blue square"}\n')
    loads = []
    real = clip_module.load_clip_from_identity
    monkeypatch.setattr(clip_module, "load_clip_from_identity", lambda *a, **k: loads.append(1) or real(*a, **k))
    assert main(["search", "--queries", str(qf), "--index", str(idx), "-k", "2", "--device", "cpu"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x.get("id") for x in lines] == ["q1", None] and [x["query"] for x in lines] == ["a red circle",
                                                                                          "a blue square"]
    assert all(len(x["hits"]) == 2 for x in lines) and len(loads) == 1
    # the same ranking as one query at a time
    assert main(["search", "a red circle", "--index", str(idx), "-k", "2", "--json", "--device", "cpu"]) == 0
    single = json.loads(capsys.readouterr().out)
    assert [h["video_id"] for h in single["hits"]] == [h["video_id"] for h in lines[0]["hits"]]
    txt = tmp_path / "q.txt"
    txt.write_text("# comment\na red circle\n")
    assert main(["search", "--queries", str(txt), "--index", str(idx), "-k", "1"]) == 0
    assert [json.loads(x)["query"] for x in capsys.readouterr().out.splitlines()] == ["a red circle"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1}\n')
    assert main(["search", "--queries", str(bad), "--index", str(idx)]) != 0
    assert "line 1: field 'query' missing" in capsys.readouterr().err
    assert main(["search", "x", "--queries", str(txt), "--index", str(idx)]) != 0
    # a UTF-8 BOM changes nothing; a hostile line is one error naming its line
    txt.write_bytes(b"\xef\xbb\xbf{\"query\": \"a red circle\"}\n")
    assert main(["search", "--queries", str(txt), "--index", str(idx), "-k", "1"]) == 0
    assert [json.loads(x)["query"] for x in capsys.readouterr().out.splitlines()] == ["a red circle"]
    bad.write_text('{"query": "ok"}\n' + '{"a":' * 100_000 + "\n")
    assert main(["search", "--queries", str(bad), "--index", str(idx)]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl:2:" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_synthetic_model_on_real_footage_warns_once(tmp_path, windows_sampler, capsys):
    from vidclip.cli.main import main

    lib = _lib(tmp_path, n=1)  # index_testutil clips are not `vidclip synth` footage
    idx = tmp_path / "idx"
    assert main(["index", str(lib), "--index", str(idx), "--model", "vidclip-synth", "--workers", "0", "--quiet",
                 "--fps", "2", "--window", "1", "--stride", "1", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert err.count("vidclip-synth knows only the synthetic shapes world") == 1
    assert main(["search", "a red circle", "--index", str(idx), "--device", "cpu"]) == 0
    assert capsys.readouterr().err.count("its scores mean nothing on") == 1


def test_noop_reindex_loads_no_model(tmp_path, tiny_clip, windows_sampler, capsys, monkeypatch):
    from vidclip.cli.main import main
    from vidclip.models.clip import load as clip_module

    lib = _lib(tmp_path, n=2)
    idx = tmp_path / "idx"
    index_library(lib, idx, tiny_clip, windows_sampler, workers=0, progress=False)
    loads = []
    monkeypatch.setattr(clip_module, "load_clip_from_identity", lambda *a, **k: loads.append(1) or tiny_clip)
    assert main(["index", str(lib), "--index", str(idx), "--workers", "0", "--quiet"]) == 0
    assert "0 videos" in capsys.readouterr().out and loads == []  # nothing new: no model loaded
    make_clip(lib / "new.mp4", seed=9, seconds=2.0)
    assert main(["index", str(lib), "--index", str(idx), "--workers", "0", "--quiet"]) == 0
    assert "indexed 1 video (" in capsys.readouterr().out and loads == [1]  # loaded once something is new


def test_noop_reindex_naming_the_index_model_loads_no_model(tmp_path, tiny_clip, windows_sampler, capsys, monkeypatch):
    # README re-runs `vidclip index ... --model M`: naming the index's own model must not load it either
    from vidclip.cli.main import main
    from vidclip.models.clip import load as clip_module

    lib = _lib(tmp_path, n=2)
    idx = tmp_path / "idx"
    index_library(lib, idx, tiny_clip, windows_sampler, workers=0, progress=False)
    loads = []
    monkeypatch.setattr(clip_module, "load_clip", lambda *a, **k: loads.append(a) or tiny_clip)
    monkeypatch.setattr(clip_module, "load_clip_from_identity", lambda *a, **k: loads.append(a) or tiny_clip)
    name = tiny_clip.identity.name
    assert main(["index", str(lib), "--index", str(idx), "--model", name, "--workers", "0", "--quiet"]) == 0
    assert "0 videos" in capsys.readouterr().out and loads == []
    main(["index", str(lib), "--index", str(idx), "--model", "another-model", "--workers", "0", "--quiet"])
    assert len(loads) == 1  # another model is loaded at once, and its identity checked


def test_folder_scan_reports_links_loops_and_fifos_one_line_each(tmp_path, tiny_clip, windows_sampler):
    # before: rglob + is_file() skipped them silently (exit 0); now the same scan as `vidclip encode`
    lib = _lib(tmp_path, n=1)
    os.symlink("nowhere.mp4", lib / "dangling.mp4")
    os.symlink("loop2.mp4", lib / "loop1.mp4")
    os.symlink("loop1.mp4", lib / "loop2.mp4")
    os.mkfifo(lib / "pipe.mp4")
    got = scan_library(lib)
    assert [i.key for i in got.items] == ["clip0.mp4"]
    reasons = {os.path.basename(p["path"]): p["reason"] for p in got.problems}
    assert set(reasons) == {"dangling.mp4", "loop1.mp4", "loop2.mp4", "pipe.mp4"}
    assert "dangling" in reasons["dangling.mp4"] and "loop" in reasons["loop1.mp4"] and "FIFO" in reasons["pipe.mp4"]
    rep = index_library(lib, tmp_path / "idx", tiny_clip, windows_sampler, workers=0, progress=False)
    assert rep.indexed == 1 and len(rep.failed) == 4  # reported, and the good video still indexed
