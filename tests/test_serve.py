"""Tests of vidclip.serve: range parsing, frame choice, thumbnails, the HTTP API and its security.

Most tests run the app against ``FakeIndex``, a few-line stand-in with VideoIndex's API, so each
behaviour is pinned down with exact bytes and ids; ``test_real_*`` tests (at the end) build a
real library index of tiny generated videos and go through a real uvicorn socket.
"""

from __future__ import annotations

import io
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pytest

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from vidclip.core.errors import VidclipError  # noqa: E402
from vidclip.serve.app import BackgroundServer, _host_name, create_app  # noqa: E402
from vidclip.serve.media import (  # noqa: E402
    FileStamp,
    LRUCache,
    RangeNotSatisfiable,
    Thumbnailer,
    content_type_for,
    frame_index_at,
    parse_range,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


# ----------------------------------------------------------------------------- byte ranges


@pytest.mark.parametrize("header,expect", [
    ("bytes=0-0", (0, 0)),
    ("bytes=0-99", (0, 99)),
    ("bytes=10-19", (10, 19)),
    ("bytes=10-", (10, 99)),
    ("bytes=99-", (99, 99)),
    ("bytes=-1", (99, 99)),
    ("bytes=-10", (90, 99)),
    ("bytes=-500", (0, 99)),        # suffix longer than the file: the whole file
    ("bytes=50-5000", (50, 99)),    # end past the file is clamped
    ("BYTES = 3 - 4", (3, 4)),      # unit is case-insensitive, whitespace tolerated
])
def test_parse_range_satisfiable(header, expect):
    br = parse_range(header, 100)
    assert (br.start, br.end) == expect
    assert br.length == expect[1] - expect[0] + 1
    assert br.content_range() == f"bytes {expect[0]}-{expect[1]}/100"


@pytest.mark.parametrize("header", [
    "bytes=100-", "bytes=100-200", "bytes=5000-", "bytes=-0", "bytes=5-2", "bytes=abc", "bytes=",
    "bytes=-", "bytes=1-2-3", "bytes=0x10-", "0-10", "bytes=0-1,zz",
])
def test_parse_range_rejects(header):
    with pytest.raises(RangeNotSatisfiable) as ei:
        parse_range(header, 100)
    assert ei.value.size == 100 and header in str(ei.value)


def test_parse_range_ignored_forms_and_empty_file():
    assert parse_range(None, 100) is None
    assert parse_range("items=0-5", 100) is None       # unknown unit: MUST be ignored
    assert parse_range("bytes=0-1, 5-6", 100) is None  # multi-range: served whole
    with pytest.raises(RangeNotSatisfiable):
        parse_range("bytes=0-", 0)                     # nothing to give from an empty file
    with pytest.raises(RangeNotSatisfiable):
        parse_range("bytes=-5", 0)


def test_content_types():
    assert content_type_for("a/b.MP4") == "video/mp4"
    assert content_type_for("x.webm") == "video/webm"
    assert content_type_for("x.mkv") == "video/x-matroska"
    assert content_type_for("x.avi") == "video/x-msvideo"
    assert content_type_for("x.mov") == "video/quicktime"
    assert content_type_for("noext") == "application/octet-stream"


def test_file_stamp_if_range(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"x" * 10)
    s = FileStamp.of(p)
    assert s.size == 10 and s.matches_if_range(None)
    assert s.matches_if_range(s.etag) and s.matches_if_range(s.last_modified)
    assert not s.matches_if_range('"0-0"') and not s.matches_if_range("Mon, 01 Jan 2001 00:00:00 GMT")
    assert not s.matches_if_range("W/" + s.etag)  # If-Range needs a strong validator


def test_host_name():
    assert _host_name("127.0.0.1:8000") == "127.0.0.1"
    assert _host_name("[::1]:8000") == "::1"
    assert _host_name("LocalHost") == "localhost"
    assert _host_name("evil.example:80") == "evil.example"


# ----------------------------------------------------------------------------- frame choice


def _frame_at_reference(ts, t):
    """The definition, one frame at a time: the last frame whose pts <= t (else frame 0)."""
    best = 0
    for i, p in enumerate(ts):
        if p <= t + 1e-6:
            best = i
    return best


def test_frame_index_at_vfr_by_hand():
    ts = np.array([0.0, 0.1, 0.25, 0.3, 1.0])  # variable frame rate
    cases = {-1.0: 0, 0.0: 0, 0.05: 0, 0.1: 1, 0.2499: 1, 0.25: 2, 0.29: 2,
             0.1 * 3: 3, 0.99: 3, 1.0: 4, 99.0: 4}
    for t, want in cases.items():
        assert frame_index_at(ts, t) == want, t


def test_frame_index_at_matches_reference():
    rng = np.random.default_rng(0)
    ts = np.cumsum(rng.uniform(0.01, 0.2, size=200)) - 0.01
    for t in rng.uniform(-1, ts[-1] + 1, size=300):
        assert frame_index_at(ts, t) == _frame_at_reference(ts, t)
    with pytest.raises(ValueError):
        frame_index_at(np.array([]), 1.0)


def test_lru_cache_evicts_least_recent():
    c = LRUCache(2)
    c.put("a", 1)
    c.put("b", 2)
    assert c.get("a") == 1   # a is now most recent
    c.put("c", 3)            # evicts b
    assert c.get("b") is None and c.get("a") == 1 and c.get("c") == 3 and len(c) == 2


# ----------------------------------------------------------------------------- thumbnails (fake decoder)


class FakeVideo:
    """Frames of solid grey level 10*i at the given timestamps; counts decodes."""

    opened = 0
    decoded: list[int] = []

    def __init__(self, path, timestamps=(0.0, 0.5, 1.25, 2.0, 3.5)):
        FakeVideo.opened += 1
        self.timestamps = np.asarray(timestamps, dtype=np.float64)

    def get_frames(self, indices):
        import torch

        FakeVideo.decoded.extend(indices)
        out = torch.zeros((len(indices), 48, 64, 3), dtype=torch.uint8)
        for j, i in enumerate(indices):
            out[j] = 10 * i + 40
        return out


def _jpeg_mean(data: bytes) -> float:
    from PIL import Image

    img = Image.open(io.BytesIO(data))
    assert img.format == "JPEG"
    return float(np.asarray(img.convert("L")).mean())


def test_thumbnailer_picks_frame_and_caches(tmp_path):
    p = tmp_path / "v.mp4"
    p.write_bytes(b"not really a video")
    FakeVideo.opened, FakeVideo.decoded = 0, []
    th = Thumbnailer(open_video=FakeVideo, cache_size=8, max_width=32, max_height=24)
    a = th.render(p, 1.3)  # frame shown at 1.3 s: pts 1.25 -> index 2
    assert (a.frame_index, a.time) == (2, 1.25)
    assert abs(_jpeg_mean(a.jpeg) - 60) < 3
    from PIL import Image
    assert Image.open(io.BytesIO(a.jpeg)).size == (32, 24)  # 64x48 fitted into 32x24
    b = th.render(p, 1.9)  # same frame: served from cache without opening the file again
    assert b is a and FakeVideo.opened == 1 and FakeVideo.decoded == [2]
    c = th.render(p, 2.0)
    assert c.frame_index == 3 and abs(_jpeg_mean(c.jpeg) - 70) < 3 and FakeVideo.opened == 2
    # A file rewritten in place is a new version: its cached frames are not reused.
    p.write_bytes(b"a different, longer file body")
    os.utime(p, ns=(1, 1))
    th.render(p, 1.9)
    assert FakeVideo.opened == 3 and FakeVideo.decoded == [2, 3, 2]


# ----------------------------------------------------------------------------- the app, on a fake index


@dataclass
class FakeHit:
    video_id: int
    path: str
    score: float
    start: float
    end: float
    duration: float
    match: dict | None = None  # text / hybrid modes, as SearchHit: left out of to_dict when None

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if not (k == "match" and v is None)}


class FakeIndex:
    """VideoIndex's API over a dict; ``failed`` ids are in the catalog but were never indexed."""

    def __init__(self, root: Path, rows: dict[int, dict], failed=(), random_weights=False):
        self.library_root = root
        self.identity = {"model": {"name": "fake", "random_weights": random_weights}}
        self.rows = rows
        self.failed = set(failed)
        self.calls: list[tuple] = []

    def search(self, query, k=10, *, segments=False, rerank=0, **options):
        # options: mode and the filters, recorded only when given (a plain search records what it always did)
        self.calls.append((query, k, segments) + ((rerank,) if rerank else ()) + ((options,) if options else ()))
        if options.get("modified_after") == "yesterday":  # what the index's own filter check refuses
            from vidclip.core.errors import ConfigError

            raise ConfigError("modified_after: 'yesterday' is not a date (2024-05-01 or 2024-05-01T14:30)")
        hits = self._hits(k, rerank)
        if options.get("mode") in ("text", "hybrid"):  # why each hit matched, as VideoIndex.search says it
            for h in hits:
                h.match = {"visual": {"score": h.score, "rank": 1},
                           "text": {"words": ["budget"], "kind": "subtitle", "source": "a.srt", "start": 1.0,
                                    "end": 2.5, "text": "the budget vote", "score": 3.2, "rank": 1}}
        return hits

    def _hits(self, k, rerank):
        ids = [i for i in sorted(self.rows) if i not in self.failed and "status" not in self.rows[i]][:k]
        hits = [FakeHit(i, self.rows[i]["path"], 1.0 - 0.1 * n, 2.0 * n, 2.0 * n + 3.0, 10.0)
                for n, i in enumerate(ids)]
        if rerank:  # a reranked hit carries its best frame (here 1.25 s into its span)
            for h in hits:
                h.frame_time = h.start + 1.25
        return hits

    def search_image(self, data, k=10, *, segments=False, rerank=0, **filters):
        from vidclip.core.errors import ConfigError

        self.calls.append(("image", bytes(data), k, segments) + ((rerank,) if rerank else ())
                          + ((filters,) if filters else ()))
        if not bytes(data).startswith(b"IMG"):
            raise ConfigError(f"image data ({len(data)} bytes): not a readable image (not a format PIL knows)")
        return self._hits(k, rerank)

    def get_video(self, video_id):
        if video_id in self.failed or video_id not in self.rows:
            return None
        return dict(self.rows[video_id], id=video_id)

    def video_path(self, video_id):
        if self.get_video(video_id) is None:
            return None
        return self.library_root / self.rows[video_id]["path"]


def stamp_rows(root: Path, rows: dict[int, dict]) -> dict[int, dict]:
    """Add what the catalog records at indexing time, each file's size and mtime (ns)."""
    for row in rows.values():
        f = root / os.fsdecode(row["path"])
        if f.is_file():
            st = f.stat()
            row.setdefault("size", st.st_size)
            row.setdefault("mtime_ns", st.st_mtime_ns)
    return rows


BODY = bytes(range(256)) * 40 + b"tail"  # 10244 bytes, every offset distinguishable


@pytest.fixture()
def library(tmp_path):
    root = tmp_path / "library"
    (root / "sub").mkdir(parents=True)
    (root / "a.mp4").write_bytes(BODY)
    (root / "sub" / "b.webm").write_bytes(b"webm!" * 10)
    (root / "c.avi").write_bytes(b"avi")
    (root / "gone.mp4").write_bytes(b"soon deleted")
    (root / "bad.mkv").write_bytes(b"failed to decode")
    (tmp_path / "secret.mp4").write_bytes(b"outside the library")
    rows = {
        1: {"path": "a.mp4", "duration": 10.0, "fps": 25.0},
        2: {"path": "sub/b.webm", "duration": 5.0, "fps": 30.0},
        3: {"path": "c.avi", "duration": 1.0, "fps": 25.0},
        4: {"path": "gone.mp4", "duration": 1.0, "fps": 25.0},
        5: {"path": "bad.mkv", "duration": 0.0, "fps": 0.0},
        6: {"path": "a.mp4", "status": "deleted"},  # an index that wrongly returns a deleted row
        7: {"path": str(root / "c.avi"), "abs_path": str(root / "c.avi"), "root": str(root), "duration": 1.0,
            "status": "indexed", "vector": b"\x00" * 16, "shard": "shard-000000",
            "metadata": '{"caption": "a clip"}', "size": 3},
    }
    stamp_rows(root, rows)
    (root / "gone.mp4").unlink()
    return FakeIndex(root, rows, failed={5})


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))} | {".": root.stat().st_mtime_ns}


@pytest.fixture()
def client(library):
    app = create_app(library, max_query_chars=40, max_k=7, open_video=FakeVideo)
    with TestClient(app) as c:
        yield c


def test_health_and_page(client):
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["limits"] == {"max_query_chars": 40, "max_k": 7, "max_rerank": 1000,
                                                   "max_image_bytes": 10 * 1024 * 1024}
    assert h["random_weights"] is False
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    html = page.text
    assert 'id="q"' in html and 'role="search"' in html and "<video" in html
    for asset in ("/static/app.js", "/static/style.css"):
        r = client.get(asset)
        assert r.status_code == 200 and asset in html
        # No CDN or any other host: the page must work with no network.
        assert "http://" not in r.text and "https://" not in r.text
    assert "http://" not in html and "https://" not in html
    assert client.get("/openapi.json").json()["paths"].keys() >= {
        "/search", "/videos/{video_id}", "/videos/{video_id}/thumbnail", "/videos/{video_id}/stream", "/health"}


def test_health_flags_random_weights(library):
    library.identity = {"model": {"random_weights": True}}
    with TestClient(create_app(library)) as c:
        assert c.get("/health").json()["random_weights"] is True


def test_search_hits(client, library):
    r = client.get("/search", params={"q": "  a dog  ", "k": 3, "segments": "true"})
    assert r.status_code == 200
    body = r.json()
    assert library.calls == [("a dog", 3, True)]   # stripped query, k and segments passed through
    assert body["query"] == "a dog" and len(body["hits"]) == 3
    h = body["hits"][1]
    assert h["video_id"] == 2 and h["name"] == "sub/b.webm" and h["content_type"] == "video/webm"
    assert (h["start"], h["end"], h["moment"]) == (2.0, 5.0, 3.5)
    assert h["score"] == pytest.approx(0.9)
    assert h["thumbnail_url"] == "/videos/2/thumbnail?t=3.5" and h["stream_url"] == "/videos/2/stream"
    assert "path" not in h and str(library.library_root) not in r.text  # no absolute paths leak


def test_search_mode_and_filters_pass_through_and_match_is_shown(client, library):
    params = [("q", "budget"), ("k", 2), ("mode", "text"), ("path", "news/*"), ("min_duration", "1.5"),
              ("max_duration", "60"), ("modified_after", "2024-05-01"), ("modified_before", "2024-06-01T10:00"),
              ("meta", "lang=fr"), ("meta", "topic=city=hall")]
    body = client.get("/search", params=params).json()
    want = {"path": "news/*", "min_duration": 1.5, "max_duration": 60.0, "modified_after": "2024-05-01",
            "modified_before": "2024-06-01T10:00", "meta": ["lang=fr", "topic=city=hall"]}
    assert library.calls == [("budget", 2, False, {"mode": "text", **want})]
    assert body["mode"] == "text" and body["filters"] == want
    assert body["hits"][0]["match"]["text"]["words"] == ["budget"]
    assert body["hits"][0]["match"]["text"]["kind"] == "subtitle"
    library.calls.clear()
    r = client.post("/search/image", params={"k": 1, "meta": "lang=fr"}, content=b"IMG",
                    headers={"Content-Type": "image/png"})
    assert r.status_code == 200 and library.calls == [("image", b"IMG", 1, False, {"meta": ["lang=fr"]})]
    library.calls.clear()
    plain = client.get("/search", params={"q": "dog"}).json()  # nothing given: nothing passed, nothing shown
    assert library.calls == [("dog", 10, False)] and "filters" not in plain and "match" not in plain["hits"][0]


@pytest.mark.parametrize("params,needle", [
    ({"mode": "loud"}, "visual|text|hybrid"),
    ({"min_duration": "-1"}, "greater than or equal to 0"),
    ({"max_duration": "1e12"}, "less than or equal to"),
    ({"max_duration": "nan"}, "max_duration"),
    ({"min_duration": "long"}, "valid number"),
    ({"path": ""}, "at least 1 character"),
    ({"path": "x" * 501}, "at most 500 characters"),
    ({"modified_after": "2" * 41}, "at most 40 characters"),
    ({"meta": "lang"}, "not KEY=VALUE"),
    ({"meta": [f"k{i}=v" for i in range(17)]}, "at most 16 meta filters"),
    ({"modified_after": "yesterday"}, "modified_after: 'yesterday' is not a date"),
])
def test_search_filter_bounds_are_422(client, library, params, needle):
    r = client.get("/search", params={"q": "dog", **params})
    assert r.status_code == 422 and needle in r.text, r.text
    # rejected before the index is touched, except the date the index's own check refuses
    assert library.calls == [] or params.get("modified_after") == "yesterday"
    assert str(library.library_root) not in r.text


@pytest.mark.parametrize("params,needle", [
    ({"q": "x" * 41}, "at most 40 characters"),
    ({"q": ""}, "at least 1 character"),
    ({"q": "   "}, "non-blank"),
    ({}, "Field required"),
    ({"q": "dog", "k": 0}, "greater than or equal to 1"),
    ({"q": "dog", "k": 8}, "less than or equal to 7"),
    ({"q": "dog", "k": 10**12}, "less than or equal to 7"),
    ({"q": "dog", "k": "many"}, "valid integer"),
])
def test_search_bounds_are_422(client, library, params, needle):
    r = client.get("/search", params=params)
    assert r.status_code == 422
    assert needle in r.text
    assert library.calls == []  # rejected before the index is touched


def test_search_rerank_passes_through_and_thumbnail_shows_best_frame(client, library):
    body = client.get("/search", params={"q": "dog", "k": 2, "rerank": 5}).json()
    assert library.calls == [("dog", 2, False, 5)] and body["rerank"] == 5
    h = body["hits"][1]
    assert (h["start"], h["end"], h["frame_time"], h["moment"]) == (2.0, 5.0, 3.25, 3.25)
    assert h["thumbnail_url"] == "/videos/2/thumbnail?t=3.25"
    client.get("/search", params={"q": "dog", "k": 2})
    assert library.calls[-1] == ("dog", 2, False)  # rerank=0: the plain call, as before


@pytest.mark.parametrize("rerank,needle", [(-1, "greater than or equal to 0"), (4, "less than or equal to 3"),
                                           ("lots", "valid integer")])
def test_search_rerank_bounds_are_422(library, rerank, needle):
    with TestClient(create_app(library, max_rerank=3)) as c:
        for r in (c.get("/search", params={"q": "dog", "rerank": rerank}),
                  c.post("/search/image", params={"rerank": rerank}, content=b"IMG",
                         headers={"Content-Type": "image/png"})):
            assert r.status_code == 422 and needle in r.text
    assert library.calls == []


def test_search_image_endpoint(library):
    with TestClient(create_app(library, max_k=7, max_image_bytes=1000)) as c:
        r = c.post("/search/image", params={"k": 2, "rerank": 4, "segments": "true"}, content=b"IMG data",
                   headers={"Content-Type": "image/jpeg"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert library.calls[0] == ("image", b"IMG data", 2, True, 4)
        assert body["image"] == {"bytes": 8, "content_type": "image/jpeg"} and len(body["hits"]) == 2
        assert body["hits"][0]["frame_time"] == 1.25 and "path" not in body["hits"][0]
        library.calls.clear()
        cases = [
            (dict(content=b"IMG", headers={"Content-Type": "text/plain"}), 415, "image/*"),
            (dict(content=b"IMG"), 415, "image/*"),
            (dict(content=b"", headers={"Content-Type": "image/png"}), 422, "body is empty"),
            (dict(content=b"GIF89a?", headers={"Content-Type": "image/gif"}), 422, "not a readable image"),
            (dict(content=b"IMG" + b"x" * 1000, headers={"Content-Type": "image/png"}), 413, "larger than 1000"),
            # no Content-Length (chunked): counted while it arrives
            (dict(content=(b"IMG" + b"x" * 297 for _ in range(4)), headers={"Content-Type": "image/png"}), 413,
             "larger than 1000"),
            (dict(content=b"IMG", params={"k": 8}, headers={"Content-Type": "image/png"}), 422, "less than or equal"),
        ]
        for kwargs, status, needle in cases:
            r = c.post("/search/image", **kwargs)
            assert r.status_code == status and needle in r.text, (kwargs.get("headers"), r.status_code, r.text)
            assert str(library.library_root) not in r.text
        assert [call[:2] for call in library.calls] == [("image", b"GIF89a?")]  # only the well-formed request
        r = c.post("/search/image", content=b"IMG", headers={"Content-Type": "image/png", "Content-Length": "5000"})
        assert r.status_code == 413  # refused from the declared length alone


def test_image_searches_are_bounded_and_release_memory(library, monkeypatch):
    """At most max_image_decodes image searches decode at once (the others wait their turn, holding
    no worker thread), and each one hands its freed heap back to the system afterwards."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from vidclip.serve import app as app_module

    trims = []
    monkeypatch.setattr(app_module, "release_freed_memory", lambda: trims.append(1) or True)
    lock = threading.Lock()
    state = {"now": 0, "most": 0}
    plain = library.search_image

    def slow_search_image(data, k=10, **kw):
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
        time.sleep(0.3)  # long enough for every request to have arrived
        with lock:
            state["now"] -= 1
        return plain(data, k, **kw)

    library.search_image = slow_search_image
    with BackgroundServer(create_app(library, max_image_decodes=2)) as srv:
        def upload(_):
            with httpx.Client(timeout=60) as c:
                return c.post(srv.url + "search/image", content=b"IMG data",
                              headers={"Content-Type": "image/png"}).status_code

        with ThreadPoolExecutor(6) as pool:
            codes = list(pool.map(upload, range(6)))
    assert codes == [200] * 6
    assert state["most"] == 2, state
    assert len(trims) == 6
    with pytest.raises(VidclipError, match="max_image_decodes"):
        create_app(library, max_image_decodes=0)


def test_page_has_rerank_and_image_search(client):
    html = client.get("/").text
    assert 'id="rerank"' in html and 'id="image"' in html and 'accept="image/*"' in html
    js = client.get("/static/app.js").text
    assert "/search/image" in js and "frame_time" in js and 'set("rerank"' in js


def test_page_has_mode_and_filter_inputs_named_as_the_api(client):
    html = client.get("/").text
    for name in ("mode", "path", "min_duration", "max_duration", "modified_after", "modified_before", "meta"):
        assert f'name="{name}"' in html, name
    js = client.get("/static/app.js").text
    assert 'append("meta"' in js and "hit-match" in js and "hit.match && hit.match.text" in js


def test_video_metadata_shows_no_internals(client, library):
    r = client.get("/videos/7")
    assert r.status_code == 200
    m = r.json()
    assert m == {"id": 7, "name": "c.avi", "duration": 1.0, "size": 3, "status": "indexed",
                 "metadata": {"caption": "a clip"}, "content_type": "video/x-msvideo", "url": "/videos/7",
                 "stream_url": "/videos/7/stream", "thumbnail_url": "/videos/7/thumbnail"}


def test_video_metadata(client, library):
    r = client.get("/videos/2")
    assert r.status_code == 200
    m = r.json()
    assert m["id"] == 2 and m["name"] == "sub/b.webm" and m["duration"] == 5.0 and m["fps"] == 30.0
    assert m["stream_url"] == "/videos/2/stream" and "path" not in m
    assert str(library.library_root) not in r.text


@pytest.mark.parametrize("url", [
    "/videos/99", "/videos/99/stream", "/videos/99/thumbnail",     # not in the catalog
    "/videos/5", "/videos/5/stream", "/videos/5/thumbnail",        # failed: never indexed
    "/videos/4", "/videos/4/stream", "/videos/4/thumbnail?t=0",    # deleted from disk after indexing
    "/videos/6", "/videos/6/stream", "/videos/6/thumbnail",        # status 'deleted'
    "/videos/-1/stream", "/videos/1.0/stream", "/videos/0x1/stream", "/videos/%201/stream",
    "/videos/a.mp4/stream",                                         # names are never accepted
    "/videos/..%2f..%2fetc%2fpasswd/stream", "/videos/..%2F..%2Fetc%2Fpasswd",
    "/videos/1%2f..%2f..%2fetc%2fpasswd/stream", "/videos/%2e%2e/stream",
    "/videos/..%5c..%5cwindows/stream", "/static/..%2fapp.py", "/static/%2e%2e/media.py",
    "/videos/99999999999999999999999/stream",
])
def test_not_served_is_404(client, library, url):
    r = client.get(url)
    assert r.status_code == 404, (url, r.status_code, r.text[:200])
    assert b"outside the library" not in r.content and b"root:" not in r.content
    assert str(library.library_root) not in r.text


def test_stream_full_and_ranges(client):
    full = client.get("/videos/1/stream")
    assert full.status_code == 200 and full.content == BODY
    assert full.headers["accept-ranges"] == "bytes"
    assert full.headers["content-type"] == "video/mp4"
    assert full.headers["content-length"] == str(len(BODY))
    etag = full.headers["etag"]

    def get(rng, **extra):
        return client.get("/videos/1/stream", headers={"Range": rng, **extra})

    n = len(BODY)
    for rng, (a, b) in {"bytes=0-0": (0, 0), "bytes=100-355": (100, 355), "bytes=10000-": (10000, n - 1),
                        "bytes=-4": (n - 4, n - 1), "bytes=5-999999": (5, n - 1), f"bytes={n - 1}-": (n - 1, n - 1)
                        }.items():
        r = get(rng)
        assert r.status_code == 206, rng
        assert r.content == BODY[a:b + 1], rng
        assert r.headers["content-range"] == f"bytes {a}-{b}/{n}"
        assert r.headers["content-length"] == str(b - a + 1)
        assert r.headers["accept-ranges"] == "bytes"
    assert get("bytes=-4").content == b"tail"

    for bad in (f"bytes={n}-", "bytes=99999-", "bytes=-0", "bytes=9-3", "bytes=x-y", "bytes=", "chunks"):
        r = get(bad)
        assert r.status_code == 416, bad
        assert r.headers["content-range"] == f"bytes */{n}"
        assert "detail" in r.json()

    assert get("bytes=0-1,5-6").status_code == 200          # multi-range: whole file
    assert get("lines=0-3").content == BODY                  # unknown unit ignored
    assert get("bytes=0-3", **{"If-Range": etag}).status_code == 206
    stale = get("bytes=0-3", **{"If-Range": '"stale"'})
    assert stale.status_code == 200 and stale.content == BODY  # changed file: send it whole


def test_stream_content_types_and_head(client):
    assert client.get("/videos/2/stream").headers["content-type"] == "video/webm"
    assert client.get("/videos/3/stream").headers["content-type"] == "video/x-msvideo"
    h = client.head("/videos/1/stream", headers={"Range": "bytes=0-9"})
    assert h.status_code == 206 and h.headers["content-length"] == "10" and h.content == b""


def test_thumbnail_endpoint(client):
    FakeVideo.opened, FakeVideo.decoded = 0, []
    r = client.get("/videos/1/thumbnail", params={"t": 0.6})
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert r.headers["x-frame-index"] == "1" and float(r.headers["x-frame-time"]) == 0.5
    assert abs(_jpeg_mean(r.content) - 50) < 3
    assert client.get("/videos/1/thumbnail", params={"t": -1}).status_code == 422
    assert client.get("/videos/1/thumbnail", params={"t": "nan"}).status_code == 422


def test_thumbnail_decode_failure_is_500_without_paths(library):
    from vidclip.core.errors import VideoDecodeError

    def broken(path):
        raise VideoDecodeError(path, "moov atom not found")

    with TestClient(create_app(library, open_video=broken)) as c:
        r = c.get("/videos/1/thumbnail?t=1")
    assert r.status_code == 500 and "could not decode" in r.json()["detail"]
    assert str(library.library_root) not in r.text


def test_thumbnail_past_the_end_is_422(client):
    """Row 1's catalog duration is 10 s: t=10 is its last frame, anything later is a 422."""
    assert client.get("/videos/1/thumbnail", params={"t": 10.0}).status_code == 200
    for t in (10.5, 11, 1e6, 1e8, "inf"):
        r = client.get("/videos/1/thumbnail", params={"t": t})
        assert r.status_code == 422, (t, r.status_code)
        assert "t" in r.json()["detail"][0]["loc"]
    r = client.get("/videos/1/thumbnail", params={"t": 10.5})
    assert "past the end of the video (duration 10 s" in r.text


def test_thumbnailer_without_duration_ends_one_frame_after_the_last(tmp_path):
    from vidclip.serve.media import TimeOutOfRange

    p = tmp_path / "v.mp4"
    p.write_bytes(b"x")
    th = Thumbnailer(open_video=FakeVideo)  # pts 0, 0.5, 1.25, 2.0, 3.5: the last frame lasts 1.5 s
    assert th.render(p, 4.9).frame_index == 4
    with pytest.raises(TimeOutOfRange, match="duration 5 s"):
        th.render(p, 5.01)
    with pytest.raises(TimeOutOfRange, match="duration 2 s"):
        th.render(p, 2.5, duration=2.0)  # a catalog duration wins, checked before decoding
    assert th.render(p, 2.0, duration=2.0).frame_index == 3


@pytest.mark.parametrize("target", ["/etc/passwd", "secret"])
def test_symlink_swap_is_404(client, library, target):
    """An indexed file replaced by a link to a file outside the library is never served."""
    root = library.library_root
    if target == "secret":
        target = str(root.parent / "secret.mp4")
    elif not Path(target).is_file():
        pytest.skip("no /etc/passwd on this system")
    (root / "a.mp4").unlink()
    (root / "a.mp4").symlink_to(target)
    secret = Path(target).read_bytes()
    for url in ("/videos/1/stream", "/videos/1", "/videos/1/thumbnail?t=1"):
        r = client.get(url, headers={"Range": "bytes=0-99"})
        assert r.status_code == 404, (url, r.status_code)
        assert "symbolic link leading out of the library" in r.json()["detail"]
        assert secret[:20] not in r.content and target not in r.text
    # Even when the size and mtime were made to match the catalog's (a link inside the library
    # to a copy with the same stamp is fine, see below; one leading out is not).
    library.rows[1].update(size=len(secret), mtime_ns=Path(target).stat().st_mtime_ns)
    assert client.get("/videos/1/stream").status_code == 404


def test_changed_file_is_404_until_reindexed(client, library):
    root = library.library_root
    st = (root / "a.mp4").stat()
    (root / "a.mp4").write_bytes(BODY[::-1])           # same size, new content and mtime
    os.utime(root / "a.mp4", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    for url in ("/videos/1/stream", "/videos/1", "/videos/1/thumbnail?t=1"):
        r = client.get(url)
        assert r.status_code == 404, url
        assert "changed since it was indexed (modification time)" in r.json()["detail"]
        assert "vidclip index" in r.json()["detail"] and BODY[::-1][:50] not in r.content
    (root / "a.mp4").write_bytes(BODY + b"more")
    os.utime(root / "a.mp4", ns=(st.st_atime_ns, st.st_mtime_ns))
    r = client.get("/videos/1/stream")
    assert r.status_code == 404 and f"size {len(BODY)} -> {len(BODY) + 4} bytes" in r.json()["detail"]
    (root / "a.mp4").write_bytes(BODY)                 # what was indexed, same stamp: served again
    os.utime(root / "a.mp4", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert client.get("/videos/1/stream").content == BODY


def test_fifo_or_directory_in_place_of_a_video_is_404(client, library):
    root = library.library_root
    (root / "a.mp4").unlink()
    os.mkfifo(root / "a.mp4")   # opening a FIFO for reading would block without O_NONBLOCK
    r = client.get("/videos/1/stream")
    assert r.status_code == 404 and "no longer names a regular file" in r.json()["detail"]
    (root / "sub" / "b.webm").unlink()
    (root / "sub" / "b.webm").mkdir()
    assert client.get("/videos/2/stream").status_code == 404


def test_symlinks_within_the_library_are_served(tmp_path):
    """Links are fine when they stay in the library (and the library root may itself be a link)."""
    real_root = tmp_path / "disk" / "videos"
    (real_root / "clips").mkdir(parents=True)
    (real_root / "clips" / "x.mp4").write_bytes(BODY)
    (real_root / "alias.mp4").symlink_to("clips/x.mp4")
    (tmp_path / "Videos").symlink_to(real_root)       # the library as the user named it
    root = tmp_path / "Videos"
    index = FakeIndex(root, stamp_rows(root, {1: {"path": "alias.mp4", "duration": 10.0},
                                              2: {"path": "clips/x.mp4", "duration": 10.0}}))
    with TestClient(create_app(index, open_video=FakeVideo)) as c:
        for vid in (1, 2):
            assert c.get(f"/videos/{vid}/stream").content == BODY
            assert c.get(f"/videos/{vid}/thumbnail?t=1").status_code == 200
        # Re-pointed at another file of the library: its size/mtime differ from the catalog's.
        (real_root / "other.mp4").write_bytes(b"other")
        (real_root / "alias.mp4").unlink()
        (real_root / "alias.mp4").symlink_to("other.mp4")
        r = c.get("/videos/1/stream")
        assert r.status_code == 404 and "changed since it was indexed" in r.json()["detail"]


def test_open_indexed_file_needs_a_catalog_stamp(tmp_path):
    from vidclip.serve.media import NotServable, open_indexed_file

    p = tmp_path / "v.mp4"
    p.write_bytes(b"abc")
    st = p.stat()
    f = open_indexed_file(p, size=3, mtime_ns=st.st_mtime_ns, roots=(tmp_path,))
    assert f.file.read() == b"abc" and f.real_path == p
    f.close()
    with pytest.raises(NotServable, match="no size/mtime"):
        open_indexed_file(p, size=None, mtime_ns=st.st_mtime_ns, roots=(tmp_path,))
    with pytest.raises(NotServable, match="no longer in the library"):
        open_indexed_file(tmp_path / "nope.mp4", size=3, mtime_ns=1, roots=(tmp_path,))


def test_non_utf8_name_is_shown_escaped_and_streams(tmp_path):
    from vidclip.core.errors import display_path

    root = tmp_path / "lib"
    root.mkdir()
    raw = os.fsencode(root) + b"/caf\xe9 \xff.mp4"
    with open(raw, "wb") as f:
        f.write(BODY)
    name = os.fsdecode(b"caf\xe9 \xff.mp4")    # how Python (and the catalog) hold such a name
    (root / "plain.mp4").write_bytes(b"plain")
    index = FakeIndex(root, stamp_rows(root, {1: {"path": name, "duration": 10.0},
                                              2: {"path": "plain.mp4", "duration": 10.0}}))
    shown = "caf\\xe9 \\xff.mp4"
    assert display_path(name) == shown
    with TestClient(create_app(index, open_video=FakeVideo)) as c:
        hits = c.get("/search", params={"q": "x"}).json()["hits"]
        assert [h["name"] for h in hits] == [shown, "plain.mp4"]
        assert c.get("/videos/1").json()["name"] == shown
        r = c.get("/videos/1/stream")
        assert r.status_code == 200 and r.content == BODY
        assert r.headers["content-disposition"] == "inline; filename*=UTF-8''caf%5Cxe9%20%5Cxff.mp4"
        assert c.get("/videos/1/thumbnail?t=1").status_code == 200
        assert c.get("/videos/2/stream").content == b"plain"


def test_health_shows_no_absolute_paths(library):
    library.identity = {"model": {"name": "ViT-B-32", "pretrained": "/home/alice/models/vit-b-32.pt",
                                  "weights_digest": "ab12", "hub": "hf:openai/clip-vit-base-patch32",
                                  "url": "https://example.org/w.bin"},
                        "temporal": {"checkpoint": "/srv/runs/seq/best.safetensors", "note": "from ~/runs/x.pt"},
                        "paths": ["/a/b/c.bin", "C:\\Users\\bob\\m.pt"]}
    with TestClient(create_app(library)) as c:
        h = c.get("/health")
    assert h.status_code == 200
    ident = h.json()["identity"]
    assert ident["model"]["pretrained"] == "vit-b-32.pt" and ident["temporal"]["checkpoint"] == "best.safetensors"
    assert ident["temporal"]["note"] == "from x.pt" and ident["paths"] == ["c.bin", "m.pt"]
    assert ident["model"]["hub"] == "hf:openai/clip-vit-base-patch32"   # hub ids and URLs are not paths
    assert ident["model"]["url"] == "https://example.org/w.bin" and ident["model"]["weights_digest"] == "ab12"
    for leak in ("alice", "/srv", "/home", "runs/", "Users", '"/a'):
        assert leak not in h.text, leak


def test_range_numbers_are_bounded(client):
    """A 5000-digit Range start must be a 416, not Python's int-conversion limit (a 500)."""
    r = client.get("/videos/1/stream", headers={"Range": "bytes=" + "9" * 5000 + "-"})
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{len(BODY)}"
    assert client.get("/videos/1/stream", headers={"Range": "bytes=-" + "9" * 19}).content == BODY


# ----------------------------------------------------------------------------- one time format


@pytest.mark.parametrize("seconds,text", [
    (0, "0:00.0"), (1.5, "0:01.5"), (4, "0:04.0"), (4.5, "0:04.5"), (0.04, "0:00.0"), (0.05, "0:00.1"),
    (9.96, "0:10.0"), (59.96, "1:00.0"), (75.5, "1:15.5"), (599.99, "10:00.0"), (3599.95, "1:00:00.0"),
    (3725.25, "1:02:05.3"), (36000, "10:00:00.0"), (-3, "0:00.0"), (float("nan"), "0:00.0"),
])
def test_format_time_by_hand(seconds, text):
    from vidclip.serve.media import format_span, format_time

    assert format_time(seconds) == text
    assert format_span(1.5, 4) == "0:01.5\u20130:04.0"


def test_page_formats_times_like_format_time():
    """static/timefmt.js (the page's only time formatter) writes what format_time writes."""
    import json
    import shutil
    import subprocess

    from vidclip.serve.app import STATIC_DIR
    from vidclip.serve.media import format_span, format_time

    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.skip("no node executable to run static/timefmt.js (the browser test checks the page too)")
    rng = np.random.default_rng(0)
    values = [0, 0.05, 0.04999, 1.25, 59.95, 59.96, 3599.95, 86399.99, 1e7 - 0.01, -1]
    values += [float(v) for v in np.round(rng.uniform(0, 8000, 300), 3)] + [float(v) for v in rng.uniform(0, 100, 100)]
    script = (f"require({json.dumps(str(STATIC_DIR / 'timefmt.js'))});"
              f"const v = {json.dumps(values)};"
              "console.log(JSON.stringify([v.map(globalThis.vidclipTime.fmtTime),"
              " globalThis.vidclipTime.fmtSpan(1.5, 4)]));")
    out = subprocess.run([node, "-e", script], capture_output=True, text=True, timeout=60, check=True).stdout
    js_times, js_span = json.loads(out)
    assert js_times == [format_time(v) for v in values]
    assert js_span == format_span(1.5, 4)
    app_js = (STATIC_DIR / "app.js").read_text()
    assert "toFixed(1)" not in app_js and "padStart(4" not in app_js  # no second formatter in app.js


def test_host_header_guard(library):
    app = create_app(library, allowed_hosts=["127.0.0.1", "localhost", "::1"])
    with TestClient(app, base_url="http://127.0.0.1:8000") as c:
        assert c.get("/health").status_code == 200
        assert c.get("/health", headers={"Host": "[::1]:8000"}).status_code == 200
        assert c.get("/health", headers={"Host": "localhost"}).status_code == 200
        r = c.get("/videos/1/stream", headers={"Host": "evil.example:8000"})
        assert r.status_code == 400 and BODY[:10] not in r.content


def test_library_is_never_written(library):
    before = _snapshot(library.library_root)
    with TestClient(create_app(library, open_video=FakeVideo)) as c:
        for url in ("/", "/health", "/search?q=dog", "/videos/1", "/videos/1/thumbnail?t=2",
                    "/videos/1/stream", "/videos/2/stream", "/videos/4/stream", "/videos/..%2f..%2fx/stream"):
            c.get(url, headers={"Range": "bytes=0-5"})
    assert _snapshot(library.library_root) == before


def test_create_app_rejects_bad_limits(library):
    from vidclip.core.errors import VidclipError

    with pytest.raises(VidclipError, match="max_k"):
        create_app(library, max_k=0)


# ----------------------------------------------------------------------------- CLI


def test_serve_parser_defaults_and_url():
    import argparse

    from vidclip.serve.commands import add_serve_parser, is_loopback, url_for

    parser = argparse.ArgumentParser()
    add_serve_parser(parser.add_subparsers())
    ns = parser.parse_args(["serve", "idx"])
    assert (ns.dir, ns.host, ns.port, ns.max_k) == ("idx", "127.0.0.1", 8000, 100) and callable(ns.func)
    ns = parser.parse_args(["serve", "idx", "--host", "0.0.0.0", "--port", "9000", "--max-k", "5"])
    assert (ns.host, ns.port, ns.max_k) == ("0.0.0.0", 9000, 5)
    assert (ns.max_rerank, ns.max_image_bytes) == (1000, 10 * 1024 * 1024)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2")
    assert url_for("127.0.0.1", 8000) == "http://127.0.0.1:8000/"
    assert url_for("0.0.0.0", 80) == "http://127.0.0.1:80/" and url_for("::1", 8) == "http://[::1]:8/"


def test_serve_rejects_bad_port():
    import argparse

    from vidclip.core.errors import ConfigError
    from vidclip.serve.commands import add_serve_parser

    parser = argparse.ArgumentParser()
    add_serve_parser(parser.add_subparsers())
    ns = parser.parse_args(["serve", "idx", "--port", "70000"])
    with pytest.raises(ConfigError, match="--port"):
        ns.func(ns)
    for flag, value in (("--max-rerank", "1001"), ("--max-rerank", "-1"), ("--max-image-bytes", "0")):
        ns = parser.parse_args(["serve", "idx", flag, value])
        with pytest.raises(ConfigError, match=flag):
            ns.func(ns)


def test_listen_socket_accepts_connections_before_the_server_runs():
    from vidclip.serve.commands import listen_socket

    sock = listen_socket("127.0.0.1", 0)
    try:  # the URL is printed before uvicorn starts: a client connecting then is queued, not refused
        socket.create_connection(("127.0.0.1", sock.getsockname()[1]), timeout=5).close()
    finally:
        sock.close()


def test_serve_passes_its_limits_to_the_app(monkeypatch):
    import argparse

    import vidclip.index.directory
    import vidclip.index.search
    import vidclip.serve.app
    from vidclip.serve.commands import add_serve_parser

    class Stop(Exception):
        pass

    seen = {}

    def fake_create_app(index, **kw):
        seen.update(kw)
        raise Stop

    closed = []

    class ClosableIndex(FakeIndex):
        def close(self):
            closed.append(True)

    monkeypatch.setattr(vidclip.index.search.VideoIndex, "open",
                        classmethod(lambda cls, d, **kw: ClosableIndex(Path(d), {})))
    monkeypatch.setattr(vidclip.index.directory.IndexDir, "require",  # no index on disk
                        classmethod(lambda cls, d, **kw: cls(d)))
    monkeypatch.setattr(vidclip.serve.app, "create_app", fake_create_app)
    parser = argparse.ArgumentParser()
    add_serve_parser(parser.add_subparsers())
    ns = parser.parse_args(["serve", "idx", "--port", "0", "--max-rerank", "0", "--max-image-bytes", "5000",
                            "--max-k", "9", "--max-query-chars", "30"])
    with pytest.raises(Stop):
        ns.func(ns)
    assert {k: seen[k] for k in ("max_rerank", "max_image_bytes", "max_k", "max_query_chars")} == \
        {"max_rerank": 0, "max_image_bytes": 5000, "max_k": 9, "max_query_chars": 30}
    assert closed == [True]  # a failed start closes the index (and the socket)


# ----------------------------------------------------------------------------- through a real socket


def _raw_get(port: int, target: str, headers: str = "", method: str = "GET", host: str = "127.0.0.1") -> tuple[int, bytes]:
    """An HTTP/1.1 request with the target sent verbatim (clients normalise '../'; attackers don't)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n{headers}Connection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data


def test_real_socket_traversal_and_ranges(library):
    app = create_app(library, open_video=FakeVideo, allowed_hosts=["127.0.0.1"])
    with BackgroundServer(app) as srv:
        for target in ("/videos/../../etc/passwd", "/videos/1/../../../etc/passwd",
                       "/videos/..%2f..%2fetc%2fpasswd/stream", "/static/../app.py", "/static/../../../etc/passwd",
                       "/../secret.mp4", "//etc/passwd", "/videos/6/stream", "/static/%2e%2e/app.py"):
            status, data = _raw_get(srv.port, target)
            assert status == 404, (target, data[:300])
            assert b"root:" not in data and b"outside the library" not in data and b"create_app" not in data
        status, data = _raw_get(srv.port, "/videos/1/stream", "Range: bytes=256-511\r\n")
        head, _, body = data.partition(b"\r\n\r\n")
        assert status == 206 and body == BODY[256:512]
        assert f"content-range: bytes 256-511/{len(BODY)}".encode() in head.lower()
        status, data = _raw_get(srv.port, "/videos/1/stream", "Range: bytes=20000-\r\n")
        assert status == 416 and f"bytes */{len(BODY)}".encode() in data
        for rng, want in (("bytes=0-9", 206), ("bytes=20000-", 416)):
            status, data = _raw_get(srv.port, "/videos/1/stream", f"Range: {rng}\r\n", method="HEAD")
            head, _, body = data.partition(b"\r\n\r\n")
            assert status == want and body == b"", (rng, data)
        status, data = _raw_get(srv.port, "/videos/1/stream", host="evil.example")
        assert status == 400 and b"Host header not allowed" in data and BODY[:64] not in data


@pytest.mark.shared
@pytest.mark.skipif(not (SHARED / "videos").is_dir(), reason="../shared not present: no real sample clips")
def test_shared_clip_streams_with_its_type(tmp_path):
    clip = SHARED / "videos" / "nasa_13013.mp4"
    if not clip.exists():
        pytest.skip("../shared not present: nasa_13013.mp4 missing")
    index = FakeIndex(SHARED / "videos", stamp_rows(SHARED / "videos", {
        1: {"path": clip.name, "duration": 13.1}, 2: {"path": "decord_flipping_a_pancake.mkv", "duration": 10.4}}))
    with TestClient(create_app(index)) as c:
        r = c.get("/videos/1/stream", headers={"Range": "bytes=0-11"})
        assert r.status_code == 206 and r.content[4:8] == b"ftyp"  # an ISO-BMFF (mp4) box header
        assert r.headers["content-type"] == "video/mp4"
        assert c.get("/videos/2/stream", headers={"Range": "bytes=0-3"}).content == b"\x1aE\xdf\xa3"  # EBML


# ----------------------------------------------------------------------------- the real library index


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    from serve_fixtures import build_real_index, make_video

    base = tmp_path_factory.mktemp("real")
    lib = base / "library"
    (lib / "sub").mkdir(parents=True)
    make_video(lib / "ramp.mp4", seconds=6.0)
    make_video(lib / "sub" / "short ramp.webm", seconds=4.0)
    (lib / "broken.mp4").write_bytes(b"\x00\x01" * 4096)  # not a video: indexing fails
    before = _snapshot(lib)
    index, report, clip = build_real_index(lib, base / "index")
    yield {"index": index, "lib": lib, "report": report, "clip": clip, "before": before, "dir": base / "index"}
    index.close()


def test_real_index_search_thumbnails_streams(real):
    from serve_fixtures import level

    index, lib = real["index"], real["lib"]
    rows = {r["path"]: r for r in index.catalog.videos()}
    assert rows["broken.mp4"]["status"] == "failed" and rows["ramp.mp4"]["status"] == "indexed"
    failed_id, mp4_id = rows["broken.mp4"]["id"], rows["ramp.mp4"]["id"]
    with TestClient(create_app(index)) as c:
        health = c.get("/health")
        assert health.json()["random_weights"] is True
        assert '"/' not in health.text and str(real["dir"]) not in health.text  # no absolute paths

        body = c.get("/search", params={"q": "a grey frame", "k": 50, "segments": "true"}).json()
        hits = body["hits"]
        # 6 s and 4 s videos, 2 s windows every 1 s: 5 + 3 windows, every one a hit.
        assert len(hits) == 8 and all(h["video_id"] != failed_id for h in hits)
        assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
        for h in hits:
            assert h["end"] - h["start"] == pytest.approx(2.0) and h["moment"] == pytest.approx(h["start"] + 1.0)
            assert h["name"] in ("ramp.mp4", "sub/short ramp.webm")
            # The thumbnail shows the frame on screen at the moment (10 fps: frame floor(10 t)).
            r = c.get(h["thumbnail_url"])
            assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
            want = int(np.floor(h["moment"] * 10 + 1e-6))
            assert int(r.headers["x-frame-index"]) == want
            assert abs(_jpeg_mean(r.content) - level(want)) < 3

        # A filter restricts the search itself: k=10 gives the one video that matches, and its moments.
        only = c.get("/search", params={"q": "a grey frame", "k": 10, "path": "sub/*"}).json()
        assert [h["name"] for h in only["hits"]] == ["sub/short ramp.webm"]
        longer = c.get("/search", params={"q": "a grey frame", "k": 10, "segments": "true", "min_duration": 5}).json()
        assert len(longer["hits"]) == 5 and {h["name"] for h in longer["hits"]} == {"ramp.mp4"}
        assert c.get("/search", params={"q": "a grey frame", "modified_after": "someday"}).status_code == 422

        videos = c.get("/search", params={"q": "a grey frame", "k": 10}).json()["hits"]
        assert sorted(h["video_id"] for h in videos) == sorted(r["id"] for r in rows.values() if r["status"] == "indexed")
        for h in videos:  # a video hit's span is its best window
            meta = c.get(h["url"]).json()
            assert [h["start"], h["end"]] in meta["windows"] and meta["duration"] == pytest.approx(h["duration"])

        data = (lib / "ramp.mp4").read_bytes()
        full = c.get(f"/videos/{mp4_id}/stream")
        assert full.status_code == 200 and full.content == data and full.headers["content-type"] == "video/mp4"
        part = c.get(f"/videos/{mp4_id}/stream", headers={"Range": "bytes=4-11"})
        assert part.status_code == 206 and part.content == data[4:12] and part.content[:4] == b"ftyp"

        for url in (f"/videos/{failed_id}", f"/videos/{failed_id}/stream", f"/videos/{failed_id}/thumbnail",
                    "/videos/999999/stream"):
            assert c.get(url).status_code == 404, url

        duration = c.get(f"/videos/{mp4_id}").json()["duration"]   # 6 s
        assert c.get(f"/videos/{mp4_id}/thumbnail", params={"t": duration}).status_code == 200
        past = c.get(f"/videos/{mp4_id}/thumbnail", params={"t": duration + 0.5})
        assert past.status_code == 422 and "past the end of the video" in past.text
    assert _snapshot(lib) == real["before"]  # neither indexing nor serving wrote the library


def test_real_index_symlink_swap_is_404(real, tmp_path):
    """The issue's attack: an indexed file replaced by a link to /etc/passwd must not be served."""
    import shutil

    from serve_fixtures import build_real_index, make_video

    lib, idx_dir = tmp_path / "library", tmp_path / "index"
    shutil.copytree(real["lib"], lib)
    index, _, _ = build_real_index(lib, idx_dir, clip=real["clip"])
    mp4 = next(r for r in index.catalog.videos(status="indexed") if r["path"] == "ramp.mp4")["id"]
    target = Path("/etc/passwd") if Path("/etc/passwd").is_file() else tmp_path / "secret.txt"
    if not target.exists():
        target.write_text("root:x:0:0:secret\n")
    try:
        with TestClient(create_app(index)) as c:
            assert c.get(f"/videos/{mp4}/stream").status_code == 200
            (lib / "ramp.mp4").unlink()
            (lib / "ramp.mp4").symlink_to(target)
            for url in (f"/videos/{mp4}/stream", f"/videos/{mp4}/thumbnail?t=1", f"/videos/{mp4}"):
                r = c.get(url)
                assert r.status_code == 404, (url, r.status_code)
                assert b"root:" not in r.content and "symbolic link" in r.json()["detail"]
            (lib / "ramp.mp4").unlink()
            make_video(lib / "ramp.mp4", seconds=2.0)  # a different file under the indexed name
            r = c.get(f"/videos/{mp4}/stream")
            assert r.status_code == 404 and "changed since it was indexed" in r.json()["detail"]
    finally:
        index.close()


def test_real_index_deleted_video_is_404(real, tmp_path):
    import shutil

    from serve_fixtures import build_real_index

    # A copy of the library and index, so the module's fixture stays intact.
    lib, idx_dir = tmp_path / "library", tmp_path / "index"
    shutil.copytree(real["lib"], lib)
    index, _, clip = build_real_index(lib, idx_dir, clip=real["clip"])
    webm = next(r for r in index.catalog.videos(status="indexed") if r["path"].endswith(".webm"))["id"]
    with TestClient(create_app(index)) as c:
        assert c.get(f"/videos/{webm}/stream").status_code == 200
        (lib / "sub" / "short ramp.webm").unlink()   # deleted on disk, catalog not yet updated
        for url in (f"/videos/{webm}", f"/videos/{webm}/stream", f"/videos/{webm}/thumbnail?t=1"):
            assert c.get(url).status_code == 404, url
    index.close()
    index, report, _ = build_real_index(lib, idx_dir, clip=clip)  # re-index: the row becomes 'deleted'
    assert report.deleted == 1
    with TestClient(create_app(index)) as c:
        assert c.get(f"/videos/{webm}").status_code == 404
        hits = c.get("/search", params={"q": "grey", "k": 10}).json()["hits"]
        assert webm not in {h["video_id"] for h in hits} and len(hits) == 1
    index.close()


def test_real_index_non_utf8_name(real, tmp_path):
    """A file named with non-UTF-8 bytes is indexed (vidclip.index), shown escaped and streamed."""
    from serve_fixtures import build_real_index, make_video

    lib = tmp_path / "library"
    lib.mkdir()
    make_video(lib / "plain.mp4", seconds=3.0)
    odd = os.fsdecode(os.fsencode(lib) + b"/caf\xe9.mp4")
    make_video(Path(odd), seconds=4.0)
    index, report, _ = build_real_index(lib, tmp_path / "index", clip=real["clip"])
    try:
        assert report.indexed == 2, report.to_dict()
        with TestClient(create_app(index)) as c:
            hits = c.get("/search", params={"q": "grey", "k": 5}).json()["hits"]
            names = {h["name"]: h for h in hits}
            assert set(names) == {"plain.mp4", "caf\\xe9.mp4"}
            h = names["caf\\xe9.mp4"]
            assert c.get(h["url"]).json()["name"] == "caf\\xe9.mp4"
            assert c.get(h["stream_url"]).content == Path(odd).read_bytes()
            assert c.get(h["thumbnail_url"]).status_code == 200
            assert c.get(names["plain.mp4"]["stream_url"]).content == (lib / "plain.mp4").read_bytes()
    finally:
        index.close()


@pytest.mark.slow
def test_cli_serve_end_to_end(real):
    """`vidclip serve DIR --port 0` binds 127.0.0.1, prints its URL, serves, and stops on Ctrl+C."""
    import re
    import signal
    import subprocess
    import sys
    import threading

    import httpx

    proc = subprocess.Popen([sys.executable, "-m", "vidclip", "serve", str(real["dir"]), "--port", "0",
                             "--log-level", "warning"], cwd=Path(__file__).resolve().parents[1],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    found = threading.Event()

    def read():
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("Serving on"):
                found.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert found.wait(120), (lines, proc.poll())
        url = re.search(r"http://127\.0\.0\.1:(\d+)/", lines[-1])
        assert url, lines
        base = url.group(0)
        assert httpx.get(base + "health").json()["random_weights"] is True
        hits = httpx.get(base + "search", params={"q": "grey", "k": 5}).json()["hits"]
        assert len(hits) == 2
        assert httpx.get(base.rstrip("/") + hits[0]["stream_url"], headers={"Range": "bytes=0-3"}).status_code == 206
        # Bound to loopback, so a page on another site (DNS rebinding) is refused.
        assert httpx.get(base + "health", headers={"Host": "attacker.example"}).status_code == 400
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    err = proc.stderr.read()
    assert rc == 0, err  # Ctrl+C is the normal way to stop a server
    assert "RANDOM weights" in err and "stopped" in err


def test_cli_serve_busy_port_is_one_line_error(tmp_path, monkeypatch):
    import argparse

    import vidclip.index.directory
    import vidclip.index.search
    from vidclip.core.errors import ConfigError
    from vidclip.serve.commands import add_serve_parser

    opened = []
    monkeypatch.setattr(vidclip.index.directory.IndexDir, "require",  # DIR passes its check
                        classmethod(lambda cls, d, **kw: cls(d)))
    monkeypatch.setattr(vidclip.index.search.VideoIndex, "open", classmethod(lambda cls, d, **kw: opened.append(d)))
    parser = argparse.ArgumentParser()
    add_serve_parser(parser.add_subparsers())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ns = parser.parse_args(["serve", str(tmp_path / "no-index"), "--port", str(port)])
        with pytest.raises(ConfigError, match=f"--port {port}: cannot listen there"):
            ns.func(ns)
    assert opened == []  # the port is checked before the index is opened (and its model loaded)
