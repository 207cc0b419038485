"""Two-stage search (``VideoIndex.search(rerank=N)``) and search by example (image, video).

A small scene library of the synthetic world, indexed with the shipped ``vidclip-synth`` model
(so an image of one scene really looks most like its own video). Every reranked result is
checked against a hand-written numpy reference that reads the stored frames straight from the
shard files: cosine per frame, pooled, min-max normalised, fused (alpha 0.4 on the first stage's
score, 0.6 on the frames', as in CLIPRerank), sorted.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from vidclip.core.errors import ConfigError, VideoDecodeError

QUERY = "a large orange diamond on a white background"  # scene 2 of scene000.mp4; rerank moves it up


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from vidclip.cli.demo import DEMO_SAMPLER
    from vidclip.index import VideoIndex, index_library
    from vidclip.models.clip.load import load_clip
    from vidclip.synthetic.scenes import write_scene_library
    from vidclip.video.sample import SamplerConfig

    base = tmp_path_factory.mktemp("rerank-world")
    videos = write_scene_library(base / "lib", 6, 2, 0, captions=True)
    clip = load_clip("vidclip-synth")
    sampler = SamplerConfig(**DEMO_SAMPLER)  # windows of 3 s every 1.5 s at 4 fps; 6 s videos
    report = index_library(base / "lib", base / "idx", clip, sampler, workers=0, progress=False)
    assert report.indexed == 6 and not report.failed
    vi = VideoIndex.open(base / "idx", clip=clip)
    ids = {r["path"]: r["id"] for r in vi.catalog.videos(status="indexed")}
    yield {"index": vi, "clip": clip, "dir": base / "idx", "lib": base / "lib", "videos": videos,
           "ids": ids, "sampler": sampler, "base": base}
    vi.close()


# ----------------------------------------------------------------------------- the reference


def _stored(index_dir, row) -> tuple[np.ndarray, np.ndarray]:
    """(frames float32 [T, D], times float64 [T]) of a video, read from its shard files by hand."""
    shard = index_dir / "features" / "shards" / row["shard"]
    sl = slice(row["offset"], row["offset"] + row["count"])
    return np.load(shard / "emb.npy")[sl].astype(np.float32), np.load(shard / "time.npy")[sl]


def _unit(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _norm(x, how):
    x = np.asarray(x, dtype=np.float64)
    if how == "minmax":
        return (x - x.min()) / (x.max() - x.min()) if x.max() > x.min() else np.zeros_like(x)
    if how == "zscore":
        return (x - x.mean()) / x.std() if x.std() > 0 else np.zeros_like(x)
    raise AssertionError(how)


def _pool(sims, pool):
    if pool == "max":
        return sims.max()
    if pool == "mean":
        return sims.mean()
    k = int(pool.split(":")[1])
    return np.sort(sims)[::-1][:k].mean()


def _text_unit(clip, text):
    return _unit(clip.encode_text([text])[0].numpy())


def _windows(vi, vid):
    return vi.catalog.segments_of([vid], vi.dim)[vid][0]  # rows: start, end, first, count


def _reference(world, q, candidates, alpha, norm, pool):
    """candidates: [(video id, first, count, first-stage score)] best first ->
    [(index into candidates, S, M, best position, best time)] in the reranked order."""
    vi, idx_dir = world["index"], world["dir"]
    rows = []
    for i, (vid, first, count, _) in enumerate(candidates):
        emb, times = _stored(idx_dir, vi.get_video(vid))
        sims = _unit(emb[first:first + count]) @ q
        best = int(np.argmax(sims))
        rows.append((i, _pool(sims, pool), first + best, float(times[first + best])))
    m = np.array([r[1] for r in rows])
    s = alpha * _norm([c[3] for c in candidates], norm) + (1 - alpha) * _norm(m, norm)  # alpha: first stage
    order = sorted(range(len(rows)), key=lambda i: (-s[i], i))
    return [(i, s[i], m[i], rows[i][2], rows[i][3]) for i in order]


def _best_window_holding(world, vid, pos, q):
    """(start, end) of the best window (mean of unit frames . q) among those holding frame ``pos``."""
    emb, _ = _stored(world["dir"], world["index"].get_video(vid))
    unit = _unit(emb)
    best, best_s = None, -np.inf
    for w in _windows(world["index"], vid):
        if w["first"] <= pos < w["first"] + w["count"]:
            v = unit[w["first"]:w["first"] + w["count"]].mean(0)
            s = float(v @ q / np.linalg.norm(v))
            if s > best_s:
                best, best_s = (w["start"], w["end"]), s
    return best


# ----------------------------------------------------------------------------- text, two stages


@pytest.mark.parametrize("alpha,norm,pool", [(0.4, "minmax", "max"), (1.0, "minmax", "max"),
                                             (0.0, "minmax", "max"), (0.4, "zscore", "mean"),
                                             (0.7, "minmax", "topk:3")])
def test_reranked_videos_match_numpy_reference(world, alpha, norm, pool):
    vi, clip = world["index"], world["clip"]
    q = _text_unit(clip, QUERY)
    first_stage = vi.search(QUERY, k=6)
    assert len(first_stage) == 6
    cands = [(h.video_id, 0, vi.get_video(h.video_id)["count"], h.score) for h in first_stage]
    ref = _reference(world, q, cands, alpha, norm, pool)
    hits = vi.search(QUERY, k=4, rerank=6, alpha=alpha, norm=norm, pool=pool)
    assert [h.video_id for h in hits] == [cands[i][0] for i, *_ in ref[:4]]
    for h, (_, s, m, pos, t) in zip(hits, ref):
        assert h.score == pytest.approx(s, abs=1e-5)
        assert h.frame_score == pytest.approx(m, abs=1e-5)
        assert h.frame_time == t  # the best frame's stored timestamp, exactly
        assert (h.start, h.end) == _best_window_holding(world, h.video_id, pos, q)
        assert h.start <= h.frame_time < h.end
    if alpha == 1.0:  # all weight on the first stage: its order comes back
        assert [h.video_id for h in hits] == [h.video_id for h in first_stage[:4]]
    if alpha == 0.0:  # frames only; on this data they disagree with the mean vectors: the order changes
        assert [h.video_id for h in hits] != [h.video_id for h in first_stage[:4]]


def test_frames_from_several_shards_and_chunks_score_the_same(world, tmp_path, monkeypatch):
    """Candidates spread over several shards, and scoring in many small chunks, change nothing."""
    from vidclip.index import VideoIndex, index_library

    index_library(world["lib"], tmp_path / "idx", world["clip"], world["sampler"], workers=0, progress=False,
                  commit_every=2)
    vi = VideoIndex.open(tmp_path / "idx", clip=world["clip"])
    try:
        assert len({r["shard"] for r in vi.catalog.videos(status="indexed")}) == 3
        def summary(hits):
            return [h.path for h in hits], np.array([[h.score, h.frame_score, h.frame_time, h.start] for h in hits])

        want_paths, want = summary(world["index"].search(QUERY, k=6, rerank=6))
        for chunk in (None, 7):  # 7: 36 frames per video, so many chunks per shard
            if chunk:
                monkeypatch.setattr(VideoIndex, "_SCORE_CHUNK", chunk)
            paths, got = summary(vi.search(QUERY, k=6, rerank=6))
            assert paths == want_paths
            np.testing.assert_allclose(got, want, atol=1e-6)
    finally:
        vi.close()


def test_rerank_depth_below_k_still_reranks_k_candidates(world):
    vi = world["index"]
    assert [h.video_id for h in vi.search(QUERY, k=5, rerank=2)] == \
        [h.video_id for h in vi.search(QUERY, k=5, rerank=5)]  # max(N, k) candidates


def test_reranked_segments_match_numpy_reference(world):
    vi, clip = world["index"], world["clip"]
    q = _text_unit(clip, QUERY)
    first_stage = vi.search(QUERY, k=10, segments=True)
    cands = []
    for h in first_stage:
        (w,) = [w for w in _windows(vi, h.video_id) if (w["start"], w["end"]) == (h.start, h.end)]
        cands.append((h.video_id, w["first"], w["count"], h.score))
    ref = _reference(world, q, cands, 0.4, "minmax", "max")
    hits = vi.search(QUERY, k=10, segments=True, rerank=10)
    assert [(h.video_id, h.start, h.end) for h in hits] == \
        [(first_stage[i].video_id, first_stage[i].start, first_stage[i].end) for i, *_ in ref]
    for h, (_, s, m, _, t) in zip(hits, ref):
        assert h.score == pytest.approx(s, abs=1e-5) and h.frame_score == pytest.approx(m, abs=1e-5)
        assert h.frame_time == t and h.start <= t < h.end  # the best frame inside the window


def test_rerank_zero_is_todays_search(world):
    vi = world["index"]
    plain = vi.search(QUERY, k=4)
    assert vi.search(QUERY, k=4, rerank=0) == plain
    assert all(h.frame_time is None and h.frame_score is None for h in plain)
    assert set(plain[0].to_dict()) == {"video_id", "path", "score", "start", "end", "duration"}
    # today's ranking: cosine with the stored video vectors
    ids, vecs = vi.catalog.video_vectors(vi.dim)
    q = _text_unit(world["clip"], QUERY)
    exact = ids[np.argsort(-(vecs @ q), kind="stable")][:4].tolist()
    assert [h.video_id for h in plain] == exact
    assert "frame_time" in vi.search(QUERY, k=1, rerank=3)[0].to_dict()


@pytest.mark.parametrize("kwargs,needle", [
    ({"rerank": 1001}, "0..1000"), ({"rerank": -1}, "0..1000"), ({"rerank": 2.5}, "whole number"),
    ({"rerank": True}, "whole number"), ({"rerank": 5, "alpha": 1.5}, "alpha"),
    ({"rerank": 5, "norm": "softmax"}, "norm must be one of"), ({"rerank": 5, "pool": "top"}, "--pool"),
    ({"k": 0}, "k must be"), ({"rerank": 5, "alpha": "0.5"}, "alpha must be a number"),
    ({"rerank": 5, "k": 1001}, "with rerank, k must be at most 1000"),
])
def test_bounds_are_config_errors(world, kwargs, needle):
    kwargs = {"k": 3, **kwargs}
    with pytest.raises(ConfigError, match=needle):
        world["index"].search(QUERY, **kwargs)
    with pytest.raises(ConfigError, match=needle):
        world["index"].search_image(np.zeros((8, 8, 3), np.uint8).tobytes(), **kwargs)  # checked before decoding


def test_text_conditioned_module_is_the_first_stage(tmp_path, tiny_clip, windows_sampler):
    """xpool index: S_1 is the module's score (what search returns), frames fused on top."""
    from index_testutil import make_clip
    from test_index_temporal import _checkpoint

    from vidclip.index import VideoIndex, index_library

    lib = tmp_path / "lib"
    for i in range(4):
        make_clip(lib / f"t{i}.mp4", seed=60 + i, seconds=1.0 + 0.5 * i)
    ckpt, _ = _checkpoint(tmp_path, tiny_clip, "xpool")
    index_library(lib, tmp_path / "idx", tiny_clip, windows_sampler, temporal=ckpt, workers=0, progress=False)
    vi = VideoIndex.open(tmp_path / "idx", clip=tiny_clip)
    try:
        assert vi.pooler.conditioned
        first_stage = vi.search("a moving bar", k=4)
        q = _text_unit(tiny_clip, "a moving bar")
        w = {"index": vi, "dir": tmp_path / "idx"}
        cands = [(h.video_id, 0, vi.get_video(h.video_id)["count"], h.score) for h in first_stage]
        ref = _reference(w, q, cands, 0.4, "minmax", "max")
        hits = vi.search("a moving bar", k=4, rerank=4)
        assert [h.video_id for h in hits] == [cands[i][0] for i, *_ in ref]
        assert [h.score for h in hits] == pytest.approx([r[1] for r in ref], abs=1e-5)
    finally:
        vi.close()


# ----------------------------------------------------------------------------- by example


def _frame_png(world, name: str, position: int, tmp_path):
    """A frame the index sampled from ``name``, saved losslessly; (png path, its stored time)."""
    from PIL import Image

    from vidclip.video.sample import sample_video

    sampled = sample_video(world["lib"] / name, world["sampler"])
    times = sampled.sample.timestamps[sampled.sample.mask]
    path = tmp_path / f"{name}-{position}.png"
    Image.fromarray(sampled.frames[position].numpy()).save(path)
    return path, float(times[position])


def test_search_image_of_an_indexed_frame_finds_its_video(world, tmp_path):
    from PIL import Image

    vi = world["index"]
    name = world["videos"][3].name
    png, t = _frame_png(world, name, 17, tmp_path)
    hits = vi.search_image(png, k=3)
    assert hits[0].video_id == world["ids"][name] and hits[0].frame_time is None
    reranked = vi.search_image(png, k=3, rerank=6)
    top = reranked[0]
    assert top.video_id == world["ids"][name]
    assert top.frame_score == pytest.approx(1.0, abs=1e-3)  # the very frame is stored
    _, stored_times = _stored(world["dir"], vi.get_video(top.video_id))
    assert top.frame_time == t and t in stored_times.tolist()
    # a PIL image and the file's bytes are the same query
    same = [h.video_id for h in hits]
    assert [h.video_id for h in vi.search_image(Image.open(png), k=3)] == same
    assert [h.video_id for h in vi.search_image(png.read_bytes(), k=3)] == same
    assert vi.search_image(png, k=3, segments=True)[0].video_id == world["ids"][name]


def test_search_image_pools_as_a_one_frame_video(world, tmp_path):
    """The query vector is the stored frame itself (mean pooler): score = its cosine with each video."""
    vi = world["index"]
    name = world["videos"][1].name
    png, t = _frame_png(world, name, 5, tmp_path)
    emb, times = _stored(world["dir"], vi.get_video(world["ids"][name]))
    q = _unit(emb[int(np.flatnonzero(times == t)[0])])
    ids, vecs = vi.catalog.video_vectors(vi.dim)
    ref = dict(zip(ids.tolist(), (vecs @ q).tolist()))
    for h in vi.search_image(png, k=6):
        assert h.score == pytest.approx(ref[h.video_id], abs=2e-3)


def test_search_video_finds_itself_first(world):
    vi = world["index"]
    for video in world["videos"][:3]:
        hits = vi.search_video(world["lib"] / video.name, k=3)
        assert hits[0].video_id == world["ids"][video.name]
        assert hits[0].score == pytest.approx(1.0, abs=1e-4)  # the same frames, pooled the same way
    reranked = vi.search_video(world["lib"] / world["videos"][0].name, k=3, rerank=6)
    assert reranked[0].video_id == world["ids"][world["videos"][0].name] and reranked[0].frame_time is not None


def test_bad_examples_are_clear_errors(world, tmp_path, monkeypatch):
    from PIL import Image

    vi = world["index"]
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(ConfigError, match=r"notes.png: not a readable image"):
        vi.search_image(text)
    with pytest.raises(ConfigError, match=r"missing.jpg: no such image file"):
        vi.search_image(tmp_path / "missing.jpg")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"empty.png: empty file \(0 bytes\)"):
        vi.search_image(tmp_path / "empty.png")
    good = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 10, 10)).save(good, format="PNG")
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.getvalue()[:60])  # header intact, pixel data cut off
    with pytest.raises(ConfigError, match=r"cut.png: not a readable image"):
        vi.search_image(cut)
    monkeypatch.setenv("VIDCLIP_MAX_PIXELS", "1000")
    with pytest.raises(ConfigError, match=r"64x48 .* over the decoding limit of 0.0 Mpixel$"):
        vi.search_image(good.getvalue())  # bytes, as an upload: the operator's knob is not named
    (tmp_path / "good.png").write_bytes(good.getvalue())
    with pytest.raises(ConfigError, match=r"good.png: .* over the decoding limit .*VIDCLIP_MAX_PIXELS"):
        vi.search_image(tmp_path / "good.png")
    monkeypatch.delenv("VIDCLIP_MAX_PIXELS")
    with pytest.raises(ConfigError, match="expected a PIL image, a path or bytes"):
        vi.search_image(42)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 2048)
    with pytest.raises(VideoDecodeError, match="broken.mp4"):
        vi.search_video(broken)
    with pytest.raises(VideoDecodeError, match="nope.mp4: no such file"):
        vi.search_video(tmp_path / "nope.mp4")


# ----------------------------------------------------------------------------- CLI


def test_cli_search_rerank_image_video(world, tmp_path, capsys):
    from vidclip.cli.main import main

    idx = str(world["dir"])
    name = world["videos"][3].name
    png, t = _frame_png(world, name, 17, tmp_path)
    assert main(["search", QUERY, "--index", idx, "-k", "3", "--rerank", "6", "--json", "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["query"] == QUERY and out["rerank"] == 6
    want = [h.to_dict() for h in world["index"].search(QUERY, k=3, rerank=6)]
    assert [h["video_id"] for h in out["hits"]] == [h["video_id"] for h in want]
    assert [h["frame_time"] for h in out["hits"]] == [h["frame_time"] for h in want]
    assert [h["score"] for h in out["hits"]] == pytest.approx([h["score"] for h in want], abs=1e-6)

    assert main(["search", "--image", str(png), "--index", idx, "-k", "2", "--rerank", "6", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["image"] == str(png.resolve()) and out["hits"][0]["path"] == name
    assert out["hits"][0]["frame_time"] == t

    assert main(["search", "--video", str(world["lib"] / name), "--index", idx, "-k", "2"]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0].split()[2] == name and "+1.0000" in text.splitlines()[0]

    assert main(["search", QUERY, "--index", idx, "-k", "2", "--rerank", "4"]) == 0
    assert "best frame" in capsys.readouterr().out


@pytest.mark.parametrize("args,needle", [
    (["a query", "--image", "x.png"], "exactly one of"),
    (["--image", "x.png", "--video", "y.mp4"], "exactly one of"),
    ([], "exactly one of"),
    (["a query", "--rerank", "5000"], "--rerank must be within 0..1000"),
    (["--image", "missing.png"], "--image missing.png: no such file"),
    (["--video", "."], "--video .: a folder, not a file"),
])
def test_cli_search_argument_errors(world, args, needle, capsys, monkeypatch, tmp_path):
    from vidclip.cli.main import main

    monkeypatch.chdir(tmp_path)
    assert main(["search", *args, "--index", str(world["dir"])]) == 2
    assert needle in capsys.readouterr().err


# ----------------------------------------------------------------------------- HTTP, on the real index


def test_http_rerank_and_image_search(world, tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient
    from PIL import Image

    from vidclip.serve.app import create_app

    vi = world["index"]
    name = world["videos"][3].name
    png, t = _frame_png(world, name, 17, tmp_path)
    with TestClient(create_app(vi, max_image_bytes=200_000)) as c:
        body = c.get("/search", params={"q": QUERY, "k": 3, "rerank": 6}).json()
        want = vi.search(QUERY, k=3, rerank=6)
        assert body["rerank"] == 6 and [h["video_id"] for h in body["hits"]] == [h.video_id for h in want]
        for h, w in zip(body["hits"], want):
            assert h["frame_time"] == w.frame_time and h["moment"] == w.frame_time  # the thumbnail shows it
            assert h["thumbnail_url"].endswith(f"?t={w.frame_time:g}")
        plain = c.get("/search", params={"q": QUERY, "k": 3}).json()["hits"]
        assert all("frame_time" not in h for h in plain)
        r = c.get("/search", params={"q": QUERY, "rerank": 1001})
        assert r.status_code == 422 and "less than or equal to 1000" in r.text

        r = c.post("/search/image", params={"k": 2, "rerank": 6}, content=png.read_bytes(),
                   headers={"Content-Type": "image/png"})
        assert r.status_code == 200, r.text
        hits = r.json()["hits"]
        assert hits[0]["name"] == name and hits[0]["frame_time"] == t and r.json()["image"]["bytes"] > 0

        r = c.post("/search/image", content=png.read_bytes(), headers={"Content-Type": "text/plain"})
        assert r.status_code == 415
        r = c.post("/search/image", content=b"\x89PNG garbage", headers={"Content-Type": "image/png"})
        assert r.status_code == 422 and "not a readable image" in r.text
        r = c.post("/search/image", content=b"", headers={"Content-Type": "image/png"})
        assert r.status_code == 422 and "empty" in r.text
        r = c.post("/search/image", content=b"x" * 200_001, headers={"Content-Type": "image/jpeg"})
        assert r.status_code == 413
        # a small file declaring a huge picture: refused from the header, nothing decoded
        bomb = io.BytesIO()
        Image.new("1", (6000, 6000)).save(bomb, format="PNG")
        assert len(bomb.getvalue()) < 200_000
        r = c.post("/search/image", content=bomb.getvalue(), headers={"Content-Type": "image/png"})
        assert r.status_code == 422 and "over the decoding limit" in r.text
        r = c.post("/search/image", params={"rerank": 1001}, content=png.read_bytes(),
                   headers={"Content-Type": "image/png"})
        assert r.status_code == 422
        assert "/search/image" in c.get("/openapi.json").json()["paths"]


# ----------------------------------------------------------------------------- the page, in Chromium


@pytest.mark.browser
def test_page_reranks_and_searches_by_image(world, tmp_path):
    """Tick "Rerank on frames", search, play a hit (it seeks to its best frame); then upload a frame."""
    from test_browser import CHROMIUM_ARGS, find_chromium

    exe = find_chromium()
    if exe is None:
        pytest.skip("no chromium binary: /usr/bin/chromium, chromium and chromium-browser are all missing")
    from playwright.sync_api import sync_playwright

    from vidclip.serve.app import BackgroundServer, create_app
    from vidclip.serve.media import format_time

    name = world["videos"][3].name
    png, t = _frame_png(world, name, 17, tmp_path)
    want = world["index"].search(QUERY, k=10, rerank=100)
    with BackgroundServer(create_app(world["index"])) as srv, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(srv.url)
            page.fill("#q", QUERY)
            page.check("#rerank")
            page.press("#q", "Enter")
            page.wait_for_selector("#results .hit")
            assert "rerank=100" in page.url
            names = page.eval_on_selector_all("#results .hit-name", "els => els.map(e => e.textContent)")
            assert names == [h.path for h in want]
            spans = page.eval_on_selector_all("#results .hit-span", "els => els.map(e => e.textContent)")
            assert spans[0].endswith(f"best frame {format_time(want[0].frame_time)}")
            page.evaluate("""() => { const v = document.getElementById('player'); window.__seek = null;
                v.addEventListener('seeking', () => { if (window.__seek === null) window.__seek = v.currentTime; }); }""")
            page.locator("#results .hit").first.click()
            page.wait_for_function("() => window.__seek !== null", timeout=15000)
            assert page.evaluate("() => window.__seek") == pytest.approx(want[0].frame_time, abs=1e-3)
            assert "(best frame)" in page.inner_text("#player-info")

            page.set_input_files("#image", str(png))
            page.wait_for_function("() => document.getElementById('status').textContent.includes('for the image')",
                                   timeout=30000)
            first = page.eval_on_selector_all("#results .hit-name", "els => els.map(e => e.textContent)")[0]
            assert first == name
            assert not errors, errors
        finally:
            browser.close()
