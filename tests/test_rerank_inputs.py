"""vidclip.rerank.inputs / frames: topic formats, the shot mapping, span filtering, catalog matching."""

from __future__ import annotations

import numpy as np
import pytest

from vidclip.core.errors import DatasetError
from vidclip.rerank.frames import _catalog_lookup, _span_frames
from vidclip.rerank.inputs import Shot, read_mapping, read_topics


def test_topic_formats(tmp_path):
    (tmp_path / "t.txt").write_text("1001 a red circle on a black background\n\n1002 two  words\n")
    (tmp_path / "t.tsv").write_text("topic\ttext\n1001\ta red circle on a black background\n1002\ttwo  words\n")
    (tmp_path / "t.jsonl").write_text('{"topic": 1001, "text": "a red circle on a black background"}\n'
                                      '{"query_id": "1002", "query": "two  words"}\n')
    want = {"1001": "a red circle on a black background", "1002": "two  words"}
    for name in ("t.txt", "t.tsv", "t.jsonl"):
        assert read_topics(tmp_path / name) == want, name


@pytest.mark.parametrize("text,match", [("", "no topics"), ("1 a\n1 b\n", ":2: topic '1' is listed twice"),
                                        ("7\n", ":1: topic '7' has no text"),
                                        ("1 a red circle\n2\n", r"t\.txt:2: topic '2' has no text")])
def test_topic_errors(tmp_path, text, match):
    (tmp_path / "t.txt").write_text(text)
    with pytest.raises(DatasetError, match=match):
        read_topics(tmp_path / "t.txt")


def test_mapping_with_and_without_spans(tmp_path):
    (tmp_path / "m.csv").write_text("shot1,v/a.mp4,0,2.5\nshot2,/abs/b.mp4\n")
    m = read_mapping(tmp_path / "m.csv")
    assert m["shot1"] == Shot("shot1", "v/a.mp4", 0.0, 2.5, 1)
    assert m["shot2"].start is None and m["shot1"].resolved_path(tmp_path) == tmp_path / "v/a.mp4"
    (tmp_path / "bad.csv").write_text("docid,path\nx,a.mp4\nx,b.mp4\n")
    with pytest.raises(DatasetError, match=r"bad.csv:3: docid 'x' is mapped twice"):
        read_mapping(tmp_path / "bad.csv")
    (tmp_path / "bad2.csv").write_text("x,a.mp4,1\n")
    with pytest.raises(DatasetError, match=r"bad2.csv:1: expected"):
        read_mapping(tmp_path / "bad2.csv")
    (tmp_path / "span.csv").write_text("docid,path,start,end\nx,a.mp4,3,1\n")
    with pytest.raises(DatasetError, match=r"span.csv:2: span"):
        read_mapping(tmp_path / "span.csv")


def test_span_keeps_only_frames_inside():
    emb = np.arange(12, dtype=np.float32).reshape(6, 2)
    times = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 2.5])
    f, _ = _span_frames(emb, times, Shot("s", "v", 1.0, 2.0))
    np.testing.assert_array_equal(f, emb[2:4])  # start <= t < end
    f, why = _span_frames(emb, times, Shot("s", "v", 3.0, 4.0))
    assert f is None and "no sampled frame inside [3, 4)" in why
    f, _ = _span_frames(emb, times, None)
    assert f.shape == (6, 2)


def test_catalog_matching():
    rows = [{"id": 1, "key": "k1", "path": "dir/a.mp4", "abs_path": "/lib/dir/a.mp4", "metadata": {"shot": "S1"}},
            {"id": 2, "key": "k2", "path": "b.mp4", "abs_path": "/lib/b.mp4", "metadata": {}}]
    auto = _catalog_lookup(rows, "auto")
    assert auto["dir/a.mp4"]["id"] == auto["/lib/dir/a.mp4"]["id"] == auto["k1"]["id"] == auto["a"]["id"] == 1
    assert set(_catalog_lookup(rows, "key")) == {"k1", "k2"}
    assert _catalog_lookup(rows, "meta:shot") == {"S1": rows[0]}
