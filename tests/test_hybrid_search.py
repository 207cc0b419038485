"""Hybrid search (issue 19): words from names, subtitle sidecars and metadata in the catalog's
text channel, fused with the visual ranking; filters inside the vector search; incremental,
crash-safe text updates. A synthetic library whose sidecars the test writes."""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import datetime

import numpy as np
import pytest
from index_testutil import make_clip

from vidclip.core.errors import ConfigError
from vidclip.index import VideoIndex, index_library

# 12 videos in two folders; durations 1.5 .. 4.25 s; mtimes one day apart from 2024-01-01
NAMES = [f"news/n{i}.mp4" for i in range(6)] + [f"sport/s{i}.mp4" for i in range(6)]
SECONDS = {name: 1.5 + 0.25 * i for i, name in enumerate(NAMES)}
DAY0 = datetime(2024, 1, 1, 12, 0).timestamp()
MTIME = {name: DAY0 + 86400 * i for i, name in enumerate(NAMES)}

SRT = """1
00:00:00,000 --> 00:00:00,800
good evening and welcome

2
00:00:01,000 --> 00:00:02,500
tonight the council debates the budget

"""
BAD_SRT = """1
00:00:0x,000 --> 00:00:01,000
broken timing

2
00:00:00,500 --> 00:00:01,000
a referee whistles
"""


def _write_library(lib):
    for i, name in enumerate(NAMES):
        make_clip(lib / name, seed=300 + i, seconds=SECONDS[name])
    (lib / "news/n2.srt").write_text(SRT)
    (lib / "sport/s1.json").write_text(json.dumps({"topic": "finance", "tags": ["derby", "cup"], "year": 2023}))
    (lib / "sport/s3.en.srt").write_text(BAD_SRT)
    (lib / "news/n5.json").write_text('{"title": "late show", "crew": {"host": "x"}}')  # refused: a nested object
    (lib / "extra.csv").write_text("path,lang,topic\nnews/n4.mp4,fr,weather\nsport/s5.mp4,fr,\n")
    for name in NAMES:
        os.utime(lib / name, (MTIME[name], MTIME[name]))


def _index(lib, idx, clip, sampler, **kw):
    from vidclip.index.metadata import read_metadata_csv

    kw.setdefault("metadata", read_metadata_csv(lib / "extra.csv"))
    return index_library(lib, idx, clip, sampler, workers=0, progress=False, **kw)


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_clip, windows_sampler):
    lib = tmp_path_factory.mktemp("hybridlib")
    _write_library(lib)
    idx = lib.parent / (lib.name + "-idx")
    report = _index(lib, idx, tiny_clip, windows_sampler)
    vi = VideoIndex.open(idx, clip=tiny_clip)
    yield lib, idx, vi, report
    vi.close()


def _visual_order(vi, query):
    """Every video id by exact cosine with the query's text embedding (the hand reference)."""
    q = vi.pooler.encode_query(query).cpu().numpy().reshape(-1)
    q = q / np.linalg.norm(q)
    ids, vecs = vi.catalog.video_vectors(vi.dim)
    scores = vecs @ q
    order = np.argsort(-scores, kind="stable")
    return [int(ids[i]) for i in order], {int(i): float(s) for i, s in zip(ids, scores)}


def _ids(vi, names):
    rows = {r["path"]: r["id"] for r in vi.catalog.videos(status="indexed")}
    return {rows[n] for n in names}


def test_a_subtitle_word_finds_its_video_first_with_the_cue_span(built):
    _, _, vi, report = built
    assert report.failed == [] and report.indexed == len(NAMES)
    assert vi.has_text()
    for mode in (None, "hybrid", "text"):  # the index has subtitles: hybrid is the default
        hits = vi.search("budget", k=5, mode=mode)
        top = hits[0]
        assert top.path == "news/n2.mp4", (mode, [h.path for h in hits])
        assert (top.start, top.end) == (1.0, 2.5)
        t = top.match["text"]
        assert (t["kind"], t["source"], t["start"], t["end"]) == ("subtitle", "n2.srt", 1.0, 2.5)
        assert t["words"] == ["budget"] and "council debates the budget" in t["text"]
    assert len(vi.search("budget", k=5, mode="text")) == 1  # only one video has the word
    # FTS5 syntax in user text is words, never an SQL error
    for q in ('"budget', 'budget NEAR(', 'text:budget', 'budget* AND (', '^budget OR NOT'):
        assert [h.path for h in vi.search(q, k=5, mode="text")][:1] == ["news/n2.mp4"], q
    assert vi.search('"(*)"', k=5, mode="text") == []


def test_visual_mode_ignores_the_words(built):
    _, _, vi, _ = built
    order, scores = _visual_order(vi, "budget")
    hits = vi.search("budget", k=len(NAMES), mode="visual")
    assert [h.video_id for h in hits] == order
    assert all(h.match is None for h in hits)
    assert [round(h.score, 5) for h in hits] == [round(scores[v], 5) for v in order]
    assert "match" not in hits[0].to_dict()


def test_rrf_both_ways_above_one_way_with_hand_scores(built):
    _, _, vi, _ = built
    hits = vi.search("budget finance", k=len(NAMES), mode="hybrid")
    order, _ = _visual_order(vi, "budget finance")
    # text ranks: two videos have the words (n2's subtitle, s1's metadata); every video is in
    # the visual list (12 < 61), so those two rank first, in RRF order
    assert {h.path for h in hits[:2]} == {"news/n2.mp4", "sport/s1.mp4"}
    assert all("text" not in h.match for h in hits[2:])
    for h in hits:
        v_rank = order.index(h.video_id) + 1
        assert h.match["visual"]["rank"] == v_rank
        want = 1 / (60 + v_rank) + (1 / (60 + h.match["text"]["rank"]) if "text" in h.match else 0.0)
        assert h.score == pytest.approx(want, abs=1e-12)
    assert [h.score for h in hits[:2]] == sorted([h.score for h in hits[:2]], reverse=True)
    s1 = next(h for h in hits if h.path == "sport/s1.mp4")
    assert (s1.match["text"]["kind"], s1.match["text"]["source"], s1.match["text"]["words"]) == \
        ("metadata", "topic", ["finance"])
    # the one-way rest keep the visual order
    assert [h.video_id for h in hits[2:]] == [v for v in order if v not in {hits[0].video_id, hits[1].video_id}]


def test_weighted_fusion_with_hand_scores(built):
    _, _, vi, _ = built
    w = 0.3
    hits = vi.search("budget finance", k=len(NAMES), mode="hybrid", fusion="weighted", text_weight=w)
    _, scores = _visual_order(vi, "budget finance")
    lo, hi = min(scores.values()), max(scores.values())
    text = {h.video_id: h.match["text"]["score"] for h in hits if "text" in h.match}
    tlo, thi = min(text.values()), max(text.values())
    for h in hits:
        want = (1 - w) * (scores[h.video_id] - lo) / (hi - lo)
        if h.video_id in text:
            want += w * ((text[h.video_id] - tlo) / (thi - tlo) if thi > tlo else 1.0)
        assert h.score == pytest.approx(want, abs=1e-5)
    assert {h.path for h in hits[:2]} == {"news/n2.mp4", "sport/s1.mp4"}


def test_words_from_names_and_the_metadata_csv(built):
    _, _, vi, _ = built
    hits = vi.search("weather", k=3, mode="text")
    assert [h.path for h in hits] == ["news/n4.mp4"] and hits[0].match["text"]["source"] == "topic"
    hits = vi.search("sport", k=20, mode="text")  # the folder name
    assert {h.path for h in hits} == {n for n in NAMES if n.startswith("sport/")}
    assert all(h.match["text"]["kind"] == "name" for h in hits)
    assert all((h.start, h.end) == (0.0, h.duration) for h in hits)  # no cue: the whole video


def test_a_malformed_subtitle_warns_once_and_the_video_is_indexed(built):
    _, _, vi, report = built
    mine = [w for w in report.warnings if "s3.en.srt" in w]
    assert len(mine) == 1 and "line 2" in mine[0], report.warnings
    hits = vi.search("referee", k=3, mode="text")
    assert [h.path for h in hits] == ["sport/s3.mp4"] and (hits[0].start, hits[0].end) == (0.5, 1.0)
    assert "sport/s3.mp4" in {r["path"] for r in vi.catalog.videos(status="indexed")}
    mine = [w for w in report.warnings if "n5.json" in w]
    assert len(mine) == 1 and "key 'crew'" in mine[0] and "nested object" in mine[0], report.warnings
    n5 = next(r for r in vi.catalog.videos(status="indexed") if r["path"] == "news/n5.mp4")
    assert n5["metadata"] == {} and vi.search("late", mode="text") == []  # its metadata left out, video indexed


def _matching(pred):
    return {n for n in NAMES if pred(n)}


@pytest.mark.parametrize("filters, pred", [
    ({"path": "news/*"}, lambda n: n.startswith("news/")),
    ({"path": "*s[13].mp4"}, lambda n: n in ("sport/s1.mp4", "sport/s3.mp4")),
    ({"min_duration": 3.5}, lambda n: SECONDS[n] >= 3.5),
    ({"max_duration": "2"}, lambda n: SECONDS[n] <= 2.0),
    ({"min_duration": 2, "max_duration": 3}, lambda n: 2 <= SECONDS[n] <= 3),
    ({"modified_after": "2024-01-09"}, lambda n: MTIME[n] >= datetime(2024, 1, 9).timestamp()),
    ({"modified_before": "2024-01-03T00:00"}, lambda n: MTIME[n] < datetime(2024, 1, 3).timestamp()),
    ({"meta": {"topic": "finance"}}, lambda n: n == "sport/s1.mp4"),
    ({"meta": ["tags=cup"]}, lambda n: n == "sport/s1.mp4"),       # an item of a list
    ({"meta": ["year=2023"]}, lambda n: n == "sport/s1.mp4"),      # a number, compared as text
    ({"meta": ["lang=fr"]}, lambda n: n in ("news/n4.mp4", "sport/s5.mp4")),
    ({"meta": ["lang=fr", "topic=weather"]}, lambda n: n == "news/n4.mp4"),  # AND
    ({"path": "sport/*", "meta": ["lang=fr"]}, lambda n: n == "sport/s5.mp4"),
    ({"meta": ["lang=de"]}, lambda n: False),
])
def test_each_filter_returns_exactly_the_matching_videos(built, filters, pred):
    _, _, vi, _ = built
    want = _matching(pred)
    for mode in ("visual", "hybrid"):
        hits = vi.search("a bar on a background", k=len(NAMES), mode=mode, **filters)
        assert {h.path for h in hits} == want, (mode, filters)
    segs = vi.search("a bar", k=100, segments=True, **filters)
    assert {h.path for h in segs} == want
    text = vi.search("sport news", k=len(NAMES), mode="text", **filters)
    assert {h.path for h in text} <= want


def test_k_hits_when_enough_match_however_low_they_rank(built):
    _, _, vi, _ = built
    order, _ = _visual_order(vi, "a bar")
    news = {r["id"] for r in vi.catalog.videos(status="indexed") if r["path"].startswith("news/")}
    k = 3
    hits = vi.search("a bar", k=k, mode="visual", path="news/*")
    assert [h.video_id for h in hits] == [v for v in order if v in news][:k]
    # the video ranked last without a filter is the one hit of a filter naming it (a post-filter of
    # the unfiltered top k would return nothing); k = 5 over the 6 news videos gives 5
    last = vi.catalog.video(order[-1])["path"]
    assert [h.video_id for h in vi.search("a bar", k=1, mode="visual", path=last)] == [order[-1]]
    assert len(vi.search("a bar", k=5, mode="visual", path="news/*")) == 5
    assert len(vi.search("a bar", k=5, segments=True, path=last)) == 5 or \
        {h.path for h in vi.search("a bar", k=5, segments=True, path=last)} == {last}


def test_bad_filter_values_name_the_option(built):
    _, _, vi, _ = built
    for kw, word in [({"min_duration": "ten"}, "min_duration"), ({"modified_after": "yesterday"}, "modified_after"),
                     ({"meta": ["novalue"]}, "meta"), ({"meta": {"": "x"}}, "meta"), ({"path": ""}, "path"),
                     ({"min_duration": 5, "max_duration": 1}, "min_duration"), ({"mode": "both"}, "mode"),
                     ({"fusion": "max"}, "fusion"), ({"text_weight": 2}, "text_weight")]:
        with pytest.raises(ConfigError, match=word):
            vi.search("budget", **kw)
    with pytest.raises(ConfigError, match="segments"):
        vi.search("budget", segments=True, mode="text")


def test_cli_search_json_filters_and_bad_values(built, capsys):
    from vidclip.cli.main import main

    lib, idx, _, _ = built
    assert main(["search", "budget", "--index", str(idx), "-k", "2", "--json", "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["hits"][0]["path"] == "news/n2.mp4" and out["hits"][0]["match"]["text"]["words"] == ["budget"]
    assert (out["hits"][0]["start"], out["hits"][0]["end"]) == (1.0, 2.5)
    assert main(["search", "budget", "--index", str(idx), "--path", "sport/*", "--meta", "lang=fr", "--json",
                 "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [h["path"] for h in out["hits"]] == ["sport/s5.mp4"]
    assert out["filters"] == {"path": "sport/*", "meta": {"lang": "fr"}}
    assert main(["search", "budget", "--index", str(idx), "-k", "1", "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "news/n2.mp4" in text and "words budget: subtitle n2.srt [0:01.0 - 0:02.5]" in text
    for args, option in [(["--min-duration", "abc"], "--min-duration"), (["--modified-before", "soon"], "--modified-before"),
                         (["--meta", "x"], "--meta")]:
        assert main(["search", "budget", "--index", str(idx), *args]) != 0
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and option in err[0], err


def test_sidecar_changes_are_picked_up_without_reencoding(tmp_path, tiny_clip, windows_sampler):
    lib = tmp_path / "lib"
    for i in range(3):
        make_clip(lib / f"v{i}.mp4", seed=400 + i, seconds=1.5)
    (lib / "v0.srt").write_text("1\n00:00:00,200 --> 00:00:01,000\nthe budget vote\n")
    idx = tmp_path / "idx"
    r = index_library(lib, idx, tiny_clip, windows_sampler, workers=0, progress=False)
    assert r.indexed == 3 and r.text_updated == 0
    vi = VideoIndex.open(idx, clip=tiny_clip)
    try:
        assert [h.path for h in vi.search("budget", mode="text")] == ["v0.mp4"]
        ids = {r["path"]: r["id"] for r in vi.catalog.videos(status="indexed")}
        # removed sidecar: its words go; changed and added sidecars: read again; no frame re-encoded
        (lib / "v0.srt").unlink()
        (lib / "v1.en.vtt").write_text("WEBVTT\n\n00:00.300 --> 00:01.200\nthe tornado warning\n")
        (lib / "v2.json").write_text('{"title": "harbour at dawn"}')
        r = index_library(lib, idx, tiny_clip, windows_sampler, workers=0, progress=False)
        assert (r.indexed, r.unchanged, r.text_updated) == (0, 3, 3)
        assert vi.search("budget", mode="text") == []
        hit, = vi.search("tornado", mode="text")
        assert (hit.path, hit.start, hit.end) == ("v1.mp4", 0.3, 1.2)
        assert [h.path for h in vi.search("harbour", mode="text")] == ["v2.mp4"]
        assert vi.get_video(ids["v2.mp4"])["metadata"] == {"title": "harbour at dawn"}
        assert [h.path for h in vi.search("x", mode="visual", meta=["title=harbour at dawn"])] == ["v2.mp4"]
        assert {r["path"]: r["id"] for r in vi.catalog.videos(status="indexed")} == ids  # same rows
        r = index_library(lib, idx, tiny_clip, windows_sampler, workers=0, progress=False)
        assert (r.indexed, r.text_updated) == (0, 0)  # nothing changed: nothing read
        # a re-encoded (changed) video keeps one copy of its words
        make_clip(lib / "v1.mp4", seed=999, seconds=2.0)
        r = index_library(lib, idx, tiny_clip, windows_sampler, workers=0, progress=False)
        assert r.indexed == 1
        hit, = vi.search("tornado", mode="text")
        assert hit.path == "v1.mp4" and hit.video_id != ids["v1.mp4"]
        n = vi.catalog.conn.execute("SELECT COUNT(*) FROM text_spans WHERE kind = 'subtitle'").fetchone()[0]
        assert n == 1
        # a deleted video's words go with it
        (lib / "v1.mp4").unlink()
        index_library(lib, idx, tiny_clip, windows_sampler, workers=0, progress=False)
        assert vi.search("tornado", mode="text") == []
    finally:
        vi.close()


def test_an_index_made_before_the_text_channel(tmp_path, tiny_clip, windows_sampler):
    lib = tmp_path / "lib"
    for i in range(2):
        make_clip(lib / f"v{i}.mp4", seed=500 + i, seconds=1.5)
    idx = tmp_path / "idx"
    index_library(lib, idx, tiny_clip, windows_sampler, workers=0, progress=False)
    conn = sqlite3.connect(idx / "catalog.sqlite")  # what an older vidclip left: no text tables
    for t in ("text_spans", "text_fts", "text_state"):
        conn.execute(f"DROP TABLE {t}")
    conn.commit()
    conn.close()
    (lib / "v1.srt").write_text("1\n00:00:00,000 --> 00:00:01,000\nthe budget vote\n")
    vi = VideoIndex.open(idx, clip=tiny_clip)  # opens, searches by picture
    try:
        assert not vi.has_text()
        assert len(vi.search("budget", k=2)) == 2 and vi.search("budget", k=2)[0].match is None
    finally:
        vi.close()
    r = index_library(lib, idx, tiny_clip, windows_sampler, workers=0, progress=False)
    assert (r.indexed, r.text_updated) == (0, 2)  # words read for every video, frames kept
    vi = VideoIndex.open(idx, clip=tiny_clip)
    try:
        assert vi.has_text() and vi.search("budget", k=2)[0].path == "v1.mp4"
    finally:
        vi.close()


def test_example_searches_take_the_filters(built):
    lib, _, vi, _ = built
    hits = vi.search_video(lib / "news/n1.mp4", k=20, path="sport/*")
    assert {h.path for h in hits} == {n for n in NAMES if n.startswith("sport/")}
    assert [h.path for h in vi.search_video(lib / "news/n1.mp4", k=3, path="news/n1.mp4")] == ["news/n1.mp4"]
    with pytest.raises(ConfigError, match="max_duration"):
        vi.search_video(lib / "news/n1.mp4", max_duration="long")


def test_cli_index_metadata_csv(tmp_path, tiny_clip, windows_sampler, capsys):
    from vidclip.cli.main import main

    lib = tmp_path / "lib"
    for i in range(2):
        make_clip(lib / f"v{i}.mp4", seed=600 + i, seconds=1.5)
    (lib / "v0.srt").write_text("1\n00:00:00,000 --> 00:00:0x,000\nbroken\n")
    meta = tmp_path / "meta.csv"
    meta.write_text("path,show\nlib/v1.mp4,evening bulletin\n")
    idx = tmp_path / "idx"
    args = ["index", str(lib), "--index", str(idx), "--model", "tiny-vit", "--pretrained", "none", "--workers", "0",
            "--fps", "4", "--window", "1", "--stride", "0.5", "--quiet"]
    assert main([*args, "--metadata", str(meta)]) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "v0.srt: line 2" in err
    assert main(["search", "bulletin", "--index", str(idx), "--mode", "text", "--json", "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [h["path"] for h in out["hits"]] == ["v1.mp4"] and out["hits"][0]["match"]["text"]["source"] == "show"
    bad = tmp_path / "bad.csv"
    bad.write_text("show\nx\n")
    assert main([*args, "--metadata", str(bad)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.csv" in err[0] and "'path'" in err[0], err


def test_merge_carries_the_words(tmp_path, tiny_clip, windows_sampler):
    from vidclip.index import merge_index

    lib = tmp_path / "lib"
    make_clip(lib / "a.mp4", seed=700, seconds=1.5)
    (lib / "a.srt").write_text("1\n00:00:00,500 --> 00:00:01,000\nthe budget vote\n")
    one, two = tmp_path / "one", tmp_path / "two"
    index_library(lib, one, tiny_clip, windows_sampler, workers=0, progress=False)
    merge_index(one, two)
    vi = VideoIndex.open(two, clip=tiny_clip)
    try:
        hit, = vi.search("budget", mode="text")
        assert (hit.path, hit.start, hit.end) == ("a.mp4", 0.5, 1.0)
    finally:
        vi.close()
    # the merged row's fingerprint is the source index's: indexing the library into it reads nothing again
    r = index_library(lib, two, tiny_clip, windows_sampler, workers=0, progress=False)
    assert (r.indexed, r.text_updated) == (0, 0)


def test_embedded_subtitle_stream_words(tmp_path, tiny_clip, windows_sampler):
    import shutil
    import subprocess

    if not shutil.which("ffmpeg"):
        pytest.skip("no ffmpeg executable: cannot write a video with an embedded subtitle stream")
    lib = tmp_path / "lib"
    lib.mkdir()
    srt = tmp_path / "in.srt"
    srt.write_text("1\n00:00:00,200 --> 00:00:00,800\nthe budget vote\n")
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=8:duration=2",
                    "-i", str(srt), "-c:v", "mpeg4", "-c:s", "srt", str(lib / "show.mkv")],
                   check=True, capture_output=True, timeout=120)
    make_clip(lib / "other.mp4", seed=800, seconds=2.0)
    idx = tmp_path / "idx"
    index_library(lib, idx, tiny_clip, windows_sampler, workers=0, progress=False)
    vi = VideoIndex.open(idx, clip=tiny_clip)
    try:
        hit, = vi.search("budget", mode="text")
        assert (hit.path, hit.start, hit.end, hit.match["text"]["source"]) == ("show.mkv", 0.2, 0.8, "stream 1")
        assert vi.search("budget")[0].path == "show.mkv"  # hybrid by default: the index has subtitles
    finally:
        vi.close()
