"""Synthetic moving-shapes world (vidclip/synthetic): rendering, twins, captions, dataset layout,
determinism, atomicity, scene libraries, and telling synthetic footage apart (vidclip/video/provenance.py)."""

import csv
import dataclasses
import json
import re
import shutil

import av
import numpy as np
import pytest

from vidclip.core.errors import ConfigError, DatasetError
from vidclip.synthetic import captions, datasets, scenes
from vidclip.synthetic import world as synth
from vidclip.synthetic.datasets import load_synth_meta, make_synthetic_dataset
from vidclip.synthetic.world import OPPOSITE, ClipSpec, SynthConfig, render_clip
from vidclip.video import provenance

SMALL = dict(num_videos=10, size=32, num_frames=8, test_fraction=0.4, captions_per_video=4)


def decode(path):
    """uint8 [T, H, W, 3] frames of a video, decoded with PyAV."""
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def centroid_track(frames, background):
    """float [T, 2] (x, y) centroid of the pixels that differ from the background."""
    diff = np.abs(frames.astype(np.int32) - background.astype(np.int32)[None]).sum(-1)  # [T,H,W]
    mask = diff > 80  # object colours differ from every background by far more than the noise
    ys, xs = np.mgrid[: frames.shape[1], : frames.shape[2]]
    n = mask.sum((1, 2))
    assert (n > 0).all(), "object not visible in some frame"
    return np.stack([(mask * xs).sum((1, 2)) / n, (mask * ys).sum((1, 2)) / n], 1)


def motion_of_track(track):
    """Direction name from the first->last centroid displacement (image y grows downwards)."""
    dx, dy = track[-1] - track[0]
    h = "left" if dx < -2 else "right" if dx > 2 else ""
    v = "up" if dy < -2 else "down" if dy > 2 else ""
    return "-".join(p for p in (v, h) if p)


def motion_of_caption(caption):
    """Direction a caption states, parsed independently of the generator's phrase tables."""
    m = re.search(r"from the ([a-z ]+?) to the ([a-z ]+?)(?: over|$)", caption)
    text = m.group(2) if m else caption
    h = "left" if re.search(r"\bleft", text) else "right" if re.search(r"\bright", text) else ""
    v = (
        "up"
        if re.search(r"\b(up|top)", text)
        else "down"
        if re.search(r"\b(down|bottom)", text)
        else ""
    )
    if m:  # the source must be the opposite corner/side
        src = m.group(1)
        assert ("right" in src) == (h == "left") and ("bottom" in src) == (v == "up"), caption
    return "-".join(p for p in (v, h) if p)


@pytest.fixture(scope="module")
def lossless(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "lossless"
    summary = make_synthetic_dataset(root, SynthConfig(**SMALL, crf=0), progress=False)
    return root, summary


def test_render_shapes_and_motion_follow_spec():
    cfg = SynthConfig(size=64, num_frames=12, noise=6.0)
    bg = synth._background("gray", 64)
    for direction in synth.DIRECTIONS:
        for shape in synth.SHAPES:
            # start so that the whole path stays inside: centre +- travel/2
            dx, dy = synth.DIRECTIONS[direction]
            spec = ClipSpec(
                shape, "red", "large", direction, (0.5 - dx * 0.2, 0.5 - dy * 0.2), "gray", 3
            )
            frames = render_clip(spec, cfg)
            assert frames.shape == (12, 64, 64, 3) and frames.dtype == np.uint8
            track = centroid_track(frames, bg)
            assert motion_of_track(track) == direction, (shape, direction)
            # the centroid follows the specified path to within a pixel (triangle: centroid
            # of the area is its circumcentre, so also exact)
            expect = synth.object_path(spec, cfg)
            assert np.abs(track - expect).max() < 1.0, (shape, direction)


def test_render_is_pure_and_twin_is_exact_reverse():
    cfg = SynthConfig(size=32, num_frames=8)
    spec = synth.random_spec(np.random.default_rng(5), cfg)
    a, b = render_clip(spec, cfg), render_clip(spec, cfg)
    assert np.array_equal(a, b)
    twin = spec.twin()
    assert twin.motion == OPPOSITE[spec.motion] and twin.twin() == spec
    assert np.array_equal(render_clip(twin, cfg), a[::-1])
    # the noise really is there and really depends on the seed
    other = render_clip(dataclasses.replace(spec, noise_seed=spec.noise_seed + 1), cfg)
    assert not np.array_equal(a, other) and np.abs(a.astype(int) - other.astype(int)).max() < 60


def test_spec_validation_and_config_errors():
    with pytest.raises(ConfigError, match="ClipSpec.color"):
        ClipSpec("circle", "magenta", "small", "left", (0.5, 0.5), "black", 0)
    with pytest.raises(ConfigError, match="travel"):
        SynthConfig(size=32, travel=0.9)
    with pytest.raises(ConfigError, match="size"):
        SynthConfig(size=33)
    assert SynthConfig(num_videos=10, test_fraction=0.2).split_counts() == (8, 2)
    assert SynthConfig(num_videos=5, test_fraction=0.1).split_counts() == (3, 2)  # at least a pair
    assert SynthConfig(num_videos=5, test_fraction=0.0).split_counts() == (5, 0)


def test_layout_files_parse(lossless):
    root, summary = lossless
    cfg = SynthConfig(**SMALL)
    assert (summary["num_train"], summary["num_test"]) == (6, 4)
    assert summary["num_captions"] == 10 * cfg.captions_per_video
    data = json.loads((root / "MSRVTT_data.json").read_text())
    assert [v["video_id"] for v in data["videos"]] == [f"video{i}" for i in range(10)]
    for v in data["videos"]:
        assert set(v) >= {"video_id", "id", "split", "category", "url", "start time", "end time"}
        assert v["id"] == int(v["video_id"][5:]) and v["end time"] == cfg.num_frames / cfg.fps
        assert (root / "videos" / f"{v['video_id']}.mp4").is_file()
    assert [s["sen_id"] for s in data["sentences"]] == list(range(40))
    per_video = {}
    for s in data["sentences"]:
        per_video.setdefault(s["video_id"], []).append(s["caption"])
    assert all(
        len(c) == cfg.captions_per_video and len(set(c)) == len(c) for c in per_video.values()
    )

    with open(root / "MSRVTT_train.9k.csv", newline="") as f:
        train = [r["video_id"] for r in csv.DictReader(f)]
    with open(root / "MSRVTT_JSFUSION_test.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    splits = {v["video_id"]: v["split"] for v in data["videos"]}
    assert train == [k for k, s in splits.items() if s == "train"]
    assert list(rows[0]) == ["key", "vid_key", "video_id", "sentence"]
    assert [r["video_id"] for r in rows] == [k for k, s in splits.items() if s == "test"]
    for k, r in enumerate(rows):
        assert r["key"] == f"ret{k}" and r["vid_key"] == "msr" + r["video_id"][5:]
        assert r["sentence"] == per_video[r["video_id"]][0]

    meta = load_synth_meta(root)
    assert meta["config"] == SynthConfig(**SMALL, crf=0)
    # every test video has its twin in the test set; train videos have none
    by_id = {v["video_id"]: v for v in meta["videos"]}
    for v in meta["videos"]:
        if v["split"] == "test":
            t = by_id[v["twin"]]
            assert t["split"] == "test" and t["twin"] == v["video_id"]
            assert t["spec"] == v["spec"].twin() and t["motion"] == OPPOSITE[v["motion"]]
        else:
            assert v["twin"] is None
        assert v["captions"] == per_video[v["video_id"]]


def test_train_twins_pair_every_training_clip_with_its_reverse():
    cfg = SynthConfig(num_videos=23, size=32, num_frames=4, diagonal=False, train_twins=True)
    plan = datasets._plan(cfg)
    train = [p for p in plan if p["split"] == "train"]
    by_id = {p["video_id"]: p for p in plan}
    assert len(train) == 19 and train[-1]["twin"] is None  # odd count: one single clip at the end
    for p in train[:-1]:
        t = by_id[p["twin"]]
        assert t["split"] == "train" and t["twin"] == p["video_id"] and t["spec"] == p["spec"].twin()
        # every caption names the motion its own clip shows (so twins' captions are opposite)
        for item in (p, t):
            src, dst = captions.FROM_TO[item["spec"].motion]
            phrases = (*captions.DIRECTION_WORDS[item["spec"].motion], f"from the {src} to the {dst}")
            assert all(any(ph in c for ph in phrases) for c in item["captions"]), item["captions"]
    motions = [p["spec"].motion for p in train[:-1]]
    assert motions.count("left") == motions.count("right") and motions.count("up") == motions.count("down")
    assert all(p["twin"] is None for p in datasets._plan(dataclasses.replace(cfg, train_twins=False))
               if p["split"] == "train")


def test_train_directions_are_balanced():
    cfg = SynthConfig(num_videos=40, size=32, num_frames=4, diagonal=False)
    plan = datasets._plan(cfg)
    train = [p["spec"].motion for p in plan if p["split"] == "train"]
    counts = {d: train.count(d) for d in synth.STRAIGHT}
    assert sum(counts.values()) == 32 and set(counts.values()) == {8}


def test_decoded_twins_are_exact_reverses_and_move_as_captioned(lossless):
    root, _ = lossless
    meta = load_synth_meta(root)
    cfg = meta["config"]
    frames = {
        v["video_id"]: decode(root / "videos" / f"{v['video_id']}.mp4") for v in meta["videos"]
    }
    pairs = 0
    for v in meta["videos"]:
        f = frames[v["video_id"]]
        assert f.shape == (cfg.num_frames, cfg.size, cfg.size, 3)
        # lossless h264 (crf=0): decoded = rendered up to the RGB->yuv420p->RGB round trip,
        # which is per-frame, so a twin's decoded frames are *exactly* the reverse
        if v["twin"] is not None:
            assert np.array_equal(f, frames[v["twin"]][::-1])
            pairs += 1
        # the pixels move the way meta says, and every caption says the same motion
        bg = synth._background(v["spec"].background, cfg.size)
        assert motion_of_track(centroid_track(f, bg)) == v["motion"]
        for c in v["captions"]:
            assert motion_of_caption(c) == v["motion"], c
            assert v["spec"].color in c
            assert any(w in c for w in captions.SHAPE_WORDS[v["spec"].shape]), c
    assert pairs == 4


def test_lossy_twins_are_close_reverses(tmp_path):
    root = tmp_path / "d"
    make_synthetic_dataset(
        root, SynthConfig(num_videos=2, test_fraction=0.5, size=32, num_frames=8), progress=False
    )
    a, b = decode(root / "videos/video0.mp4"), decode(root / "videos/video1.mp4")
    assert np.abs(a.astype(int) - b[::-1].astype(int)).mean() < 4.0


def test_deterministic_for_a_seed(tmp_path):
    # Lossless (crf=0) so that decoded frames are the rendered frames: this PyAV build's x264
    # is not bit-reproducible at crf > 0 (two encodes of the same frames can differ by a few
    # grey levels), which would make an exact comparison flaky.
    cfg = SynthConfig(num_videos=4, size=32, num_frames=6, test_fraction=0.5, crf=0)
    make_synthetic_dataset(tmp_path / "a", cfg, progress=False)
    make_synthetic_dataset(tmp_path / "b", cfg, progress=False)
    make_synthetic_dataset(
        tmp_path / "c", SynthConfig(**{**cfg.__dict__, "seed": 1}), progress=False
    )
    for name in (
        "MSRVTT_data.json",
        "synth_meta.json",
        "MSRVTT_train.9k.csv",
        "MSRVTT_JSFUSION_test.csv",
    ):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a/synth_meta.json").read_bytes() != (
        tmp_path / "c/synth_meta.json"
    ).read_bytes()
    for i in range(4):
        assert np.array_equal(
            decode(tmp_path / f"a/videos/video{i}.mp4"), decode(tmp_path / f"b/videos/video{i}.mp4")
        )


def test_atomic_write_and_overwrite(tmp_path, monkeypatch):
    cfg = SynthConfig(num_videos=3, size=32, num_frames=4)
    out = tmp_path / "d"
    make_synthetic_dataset(out, cfg, progress=False)
    with pytest.raises(DatasetError, match="not empty"):
        make_synthetic_dataset(out, cfg, progress=False)
    (out / "stale.txt").write_text("x")
    make_synthetic_dataset(
        out, SynthConfig(num_videos=2, size=32, num_frames=4), progress=False, overwrite=True
    )
    assert not (out / "stale.txt").exists() and len(list((out / "videos").iterdir())) == 2

    # a crash half-way leaves neither a partial output nor temporary folders behind
    calls = []

    def failing(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return real(*a, **k)

    real = datasets.write_mp4
    monkeypatch.setattr(datasets, "write_mp4", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        make_synthetic_dataset(tmp_path / "e", cfg, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_test_pairs_are_told_apart_only_by_direction():
    """Full test captions single out one twin pair; within a pair only the motion differs."""
    cfg = SynthConfig(num_videos=250, seed=3)  # 200 train, 50 test videos = 25 twin pairs
    plan = datasets._plan(cfg)
    tests = [p for p in plan if p["split"] == "test"]
    keys = set()
    for item in tests[::2]:
        spec = item["spec"]
        keys.add((spec.shape, spec.color, spec.size, frozenset((spec.motion, spec.twin().motion))))
    assert len(keys) == len(tests) // 2
    size_words = {w for words in captions.SIZE_WORDS.values() for w in words}
    for item in tests:
        first = item["captions"][0].replace(",", " ").split()
        assert size_words & set(first), item["captions"][0]
        assert item["spec"].color in first


def test_video_captions_gives_exactly_n():
    """n = 1 once gave ~100 captions (the loop appended before it checked the count)."""
    spec = ClipSpec("circle", "red", "small", "left", (0.5, 0.5), "gray", 0)
    for n in (1, 2, 5):
        got = captions.video_captions(spec, n, np.random.default_rng(0))
        assert len(got) == n == len(set(got))
        assert got[0] == captions.caption_for(spec, np.random.default_rng(0), full=True)
    cfg = SynthConfig(num_videos=4, size=32, num_frames=4, captions_per_video=1)
    assert all(len(p["captions"]) == 1 for p in datasets._plan(cfg))


def write_untagged(frames, path):
    """The same frames as write_mp4 would write, by another tool: no synthetic tag."""
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for f in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        container.mux(stream.encode())


def test_is_synthetic_footage_tells_synthetic_from_other_footage(lossless, tmp_path):
    root = lossless[0]
    first = sorted((root / "videos").glob("*.mp4"))[0]
    # dataset root, its videos folder and one of its files are synthetic
    assert provenance.is_synthetic_footage(root)
    assert provenance.is_synthetic_footage(root / "videos")
    assert provenance.is_synthetic_footage(first)
    # a copy elsewhere keeps the container tag
    copy = tmp_path / "lib" / "clip.mp4"
    copy.parent.mkdir()
    shutil.copy(first, copy)
    assert provenance.is_synthetic_footage(copy)
    assert provenance.is_synthetic_footage(copy.parent)
    # the same frames written by another tool (no tag, no synth_meta.json) are not synthetic
    other = tmp_path / "other" / "clip.mp4"
    other.parent.mkdir()
    write_untagged(decode(first), other)
    assert not provenance.is_synthetic_footage(other)
    assert not provenance.is_synthetic_footage(other.parent)
    # a mixed folder is not synthetic; missing paths, empty folders and non-videos are not
    shutil.copy(first, other.parent / "a_synth.mp4")
    assert not provenance.is_synthetic_footage(other.parent)
    (tmp_path / "empty").mkdir()
    (tmp_path / "text.mp4").write_text("not a video")
    assert not provenance.is_synthetic_footage(tmp_path / "empty")
    assert not provenance.is_synthetic_footage(tmp_path / "text.mp4")
    assert not provenance.is_synthetic_footage(tmp_path / "missing.mp4")


def test_is_synthetic_footage_reads_untagged_datasets_from_synth_meta(lossless, tmp_path):
    """Datasets written before write_mp4 tagged its files are known by synth_meta.json."""
    root = lossless[0]
    ds = tmp_path / "old"
    (ds / "videos").mkdir(parents=True)
    shutil.copy(root / "synth_meta.json", ds / "synth_meta.json")
    listed = json.loads((root / "synth_meta.json").read_text())["videos"][0]["video_id"]
    src = root / "videos" / f"{listed}.mp4"
    write_untagged(decode(src), ds / "videos" / f"{listed}.mp4")
    assert not provenance.has_synth_tag(ds / "videos" / f"{listed}.mp4")
    assert provenance.is_synthetic_footage(ds / "videos" / f"{listed}.mp4")
    (ds / "videos" / "stranger.mp4").write_bytes((ds / "videos" / f"{listed}.mp4").read_bytes())
    assert not provenance.is_synthetic_footage(ds / "videos" / "stranger.mp4")


def test_synthetic_model_warning_only_for_the_synthetic_model_on_other_footage(lossless, tmp_path):
    root = lossless[0]
    assert provenance.synthetic_model_warning("ViT-B-32", tmp_path) is None
    assert provenance.synthetic_model_warning(provenance.SYNTH_MODEL, root) is None
    warning = provenance.synthetic_model_warning(provenance.SYNTH_MODEL, tmp_path)
    assert warning.startswith("warning: vidclip-synth knows only the synthetic shapes world")


def test_cli_synth_prints_a_summary_line_not_a_dict(tmp_path, capsys):
    from vidclip.cli.main import main

    assert main(["synth", str(tmp_path / "s"), "--videos", "4", "--size", "32", "--frames", "4"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "{" not in out[0], out
    assert re.fullmatch(r"wrote 4 synthetic videos \(2 train, 2 test, \d+ captions\) to .*/s in \d+\.\d s"
                        r"(, \d+ videos/s)?", out[0]), out[0]
    assert main(["synth", str(tmp_path / "t"), "--videos", "2", "--size", "32", "--frames", "4", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["seconds"] == round(summary["seconds"], 2)


def test_synthetic_datasets_are_named_after_their_folder(lossless, tmp_path):
    from vidclip.data.datasets import load_dataset

    assert load_dataset("msrvtt", lossless[0], "test").name == "synth-lossless-test"
    make_synthetic_dataset(tmp_path / "synth", SynthConfig(**SMALL), progress=False)
    assert load_dataset("msrvtt", tmp_path / "synth", "train").name == "synth-train"


# ----------------------------------------------------------------------------- frame captions (pretraining)


def test_position_index_thirds():
    centres = np.array([[0.1, 0.1], [0.5, 0.1], [0.9, 0.1], [0.1, 0.5], [0.5, 0.5], [0.9, 0.5],
                        [0.1, 0.9], [0.5, 0.9], [0.9, 0.9], [0.34, 0.66], [0.0, 1.0]])
    got = captions.position_index(centres)
    assert got.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 4, 6]
    assert [captions.POSITIONS[i] for i in got[:3]] == ["top left", "top", "top right"]


def test_frame_captions_name_attributes_and_never_motion():
    attrs = [synth.SHAPES.index("circle"), list(synth.COLORS).index("red"), list(synth.SIZES).index("small"),
             list(synth.BACKGROUNDS).index("gray"), captions.POSITIONS.index("top left")]
    assert captions.canonical_caption(attrs) == "a small red circle in the top left on a gray background"
    assert captions.canonical_caption([synth.SHAPES.index("square"), list(synth.COLORS).index("orange"), 1,
                                       list(synth.BACKGROUNDS).index("dark blue"), 4]) == \
        "a large orange square in the center on a dark blue background"
    rng = np.random.default_rng(0)
    motion = set(captions.VERBS) | set(captions.GERUNDS) | {"towards", "from the", "across", "moving"}
    full = 0
    for _ in range(400):
        cap = captions.frame_caption(attrs, rng, full_prob=0.5)
        words = set(cap.split())
        assert not any(m in cap for m in motion if " " in m) and not words & motion, cap
        full += all(w in cap for w in ("red", "gray")) and any(s in cap for s in ("small", "little", "tiny"))
    assert 150 < full < 300  # about half name everything (a few partial ones do too)
    # full_prob=1: every caption names every attribute (with a paraphrase)
    for _ in range(50):
        cap = captions.frame_caption(attrs, rng, full_prob=1.0)
        assert "red" in cap and "gray background" in cap and ("top left" in cap)


# ----------------------------------------------------------------------------- scene libraries


def test_scene_description_names_object_and_background():
    spec = ClipSpec("square", "green", "large", "left", (0.5, 0.5), "dark blue", 0)
    assert captions.scene_description(spec) == "a large green square on a dark blue background"
    assert scenes.SCENE_SECONDS == 3.0  # 24 frames at 8 fps


def test_scene_library_follows_its_seed_rule_and_keeps_files(tmp_path):
    plain = scenes.write_scene_library(tmp_path / "plain", 2, 2, seed=3)
    captioned = scenes.write_scene_library(tmp_path / "cap", 2, 2, seed=3, captions=True)
    # the rule by hand: per video, its scenes' specs, then (with captions) their full captions
    rng = np.random.default_rng(3)
    cfg = scenes.SCENE_CONFIG
    want = []
    for _ in range(2):
        specs = tuple(synth.random_spec(rng, cfg) for _ in range(2))
        want.append((specs, tuple(captions.caption_for(s, rng, full=True) for s in specs)))
    assert [(v.name, v.specs, v.captions) for v in captioned] == [
        ("scene000.mp4", *want[0]), ("scene001.mp4", *want[1])]
    assert plain[0].specs == captioned[0].specs and plain[0].captions == ()
    assert plain[1].specs != captioned[1].specs  # no caption draws between videos
    frames = decode(tmp_path / "cap" / "scene001.mp4")
    assert frames.shape == (2 * cfg.num_frames, cfg.size, cfg.size, 3)
    np.testing.assert_allclose(frames[cfg.num_frames:].mean(), render_clip(want[1][0][1], cfg).mean(), atol=3)
    before = (tmp_path / "cap" / "scene000.mp4").stat().st_mtime_ns
    assert scenes.write_scene_library(tmp_path / "cap", 2, 2, seed=3, captions=True) == captioned
    assert (tmp_path / "cap" / "scene000.mp4").stat().st_mtime_ns == before  # kept, not rewritten
    assert sorted(p.name for p in (tmp_path / "cap").iterdir()) == ["scene000.mp4", "scene001.mp4"]  # no temporaries
