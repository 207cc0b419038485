"""Decoding exactness: every returned frame is the planned one (its painted index is read back),
for each container/codec, VFR, rotation flags, both backends; real clips; bad inputs; GPU errors."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess

import numpy as np
import pytest
import torch
from videogen import make_audio_only, make_coded_video, read_code

from vidclip.core.errors import BackendUnavailableError, ConfigError, VideoDecodeError
from vidclip.video import (
    SamplerConfig,
    available_backends,
    open_video,
    plan_sample,
    probe,
    sample_video,
    write_frames,
)
from vidclip.video.decode import FrameIndexError, PyAVReader

BACKENDS = [b for b in ("pyav", "decord") if b in available_backends()]
FORMATS = ["mp4", "mkv", "webm", "avi", "vfr_mkv", "vfr_mp4", "rot90", "rot180", "rot270"]
SAMPLERS = {
    "uniform8": SamplerConfig("uniform", num_frames=8),
    "uniform_train": SamplerConfig("uniform", num_frames=6, train=True, seed=1),
    "uniform_pad": SamplerConfig("uniform", num_frames=100),
    "fps7": SamplerConfig("fps", fps=7.0),
    "fps_cap": SamplerConfig("fps", fps=20.0, max_frames=9),
    "windows": SamplerConfig("windows", fps=4.0, window=0.6, stride=0.45),
}


def codes(frames: torch.Tensor) -> list[int]:
    return [read_code(f) for f in frames.cpu().numpy()]


def ms_tolerance(video) -> float:
    # Matroska/WebM store pts in milliseconds: the truth (k / fps) is rounded there.
    return 1e-3 if video.path.suffix in (".mkv", ".webm") else 1e-9


# ----------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_index_timestamps_and_info(coded_videos, fmt, backend):
    v = coded_videos[fmt]
    with open_video(v.path, backend=backend) as r:
        assert r.info.backend == backend
        np.testing.assert_allclose(r.timestamps, v.pts, rtol=0, atol=ms_tolerance(v))
        info = r.info
    assert info.num_frames == v.num_frames
    assert (info.width, info.height) == (v.width, v.height)  # upright size
    assert info.rotation == v.rotate
    assert info.duration == pytest.approx(v.duration, abs=2e-3)
    assert info.codec == {"libx264": "h264", "libvpx-vp9": "vp9", "mpeg4": "mpeg4"}[v.codec]
    assert info.has_audio is False
    assert json.loads(json.dumps(info.to_dict()))["num_frames"] == v.num_frames


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("sampler", list(SAMPLERS))
@pytest.mark.parametrize("fmt", FORMATS)
def test_sampled_frames_are_the_planned_frames(coded_videos, fmt, sampler, backend):
    v = coded_videos[fmt]
    cfg = SAMPLERS[sampler]
    got = sample_video(v.path, cfg, backend=backend)
    s = got.sample
    # the plan is exactly plan_sample on the video's timestamps
    with open_video(v.path, backend="pyav") as r:
        ref = plan_sample(r.timestamps, cfg)
    np.testing.assert_array_equal(s.indices, ref.indices)
    np.testing.assert_array_equal(s.mask, ref.mask)
    # every returned frame carries the planned index; timestamps are those frames' pts
    assert got.frames.dtype == torch.uint8 and got.frames.shape == (int(s.mask.sum()), v.height, v.width, 3)
    assert codes(got.frames) == s.indices[s.mask].tolist()
    np.testing.assert_allclose(s.timestamps, v.pts[s.indices], atol=ms_tolerance(v))


@pytest.mark.parametrize("backend", ["auto", *BACKENDS])
@pytest.mark.parametrize("fmt", ["mp4", "webm", "avi", "vfr_mp4", "rot90"])
def test_random_access_any_order(coded_videos, fmt, backend):
    v = coded_videos[fmt]
    rng = np.random.default_rng(7)
    with open_video(v.path, backend=backend) as r:
        for _ in range(3):
            idx = rng.integers(0, v.num_frames, size=9)
            assert codes(r.get_frames(idx)) == idx.tolist()
        # backwards jumps, repeats, first and last frame, an empty request
        idx = [v.num_frames - 1, 0, 0, v.num_frames // 2, 1, v.num_frames - 1]
        assert codes(r.get_frames(idx)) == idx
        assert r.get_frames([]).shape == (0, v.height, v.width, 3)
        every = r.get_frames(np.arange(v.num_frames))
        assert codes(every) == list(range(v.num_frames))
        with pytest.raises(FrameIndexError, match=str(v.num_frames)):
            r.get_frames([v.num_frames])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fmt", ["vfr_mkv", "vfr_mp4"])
def test_fps_on_vfr_returns_frame_shown_at_each_time(coded_videos, fmt, backend):
    v = coded_videos[fmt]
    rate = 20.0
    got = sample_video(v.path, SamplerConfig("fps", fps=rate), backend=backend)
    # hand reference: at each t = k/20 < duration, the last frame whose true pts <= t
    expected = []
    k = 0
    while k / rate < v.duration - 1e-9:
        t = k / rate
        expected.append(max(i for i in range(v.num_frames) if v.pts[i] <= t + 1e-9))
        k += 1
    assert codes(got.frames) == expected
    assert len(set(expected)) < len(expected)  # long (100 ms) frames are shown at 2 grid times
    assert set(range(v.num_frames)) - set(expected)  # and some 33 ms frames at none


def test_sparse_decoding_skips_most_frames(tmp_path):
    """12 frames of a 600-frame video (GOP 60) must not decode all 600 frames."""
    v = make_coded_video(tmp_path / "long.mp4", 600, size=(64, 48), gop=60, bframes=3)
    produced = {}
    for skip in (False, True):
        r = PyAVReader(v.path, skip_nonref=skip)
        out = produced[skip] = []
        original = r._frames

        def counting_frames(original=original, out=out):
            for f in original():
                out.append(f.pts)
                yield f

        r._frames = counting_frames
        plan = plan_sample(r.timestamps, SamplerConfig("uniform", num_frames=12))
        assert codes(r.get_frames(plan.indices)) == plan.indices.tolist()
        r.close()
    # Targets 25 + 50k; each is reached from the keyframe (multiple of 60) before it, or from
    # the previous target when that is closer: about half the frames are passed through.
    assert len(produced[False]) < 600 * 0.6, len(produced[False])
    # Skipping non-reference frames on the way (x264 B-frames) saves a good part of that.
    assert len(produced[True]) < 0.75 * len(produced[False]), (len(produced[True]), len(produced[False]))


# ----------------------------------------------------------------------------- rotation


@pytest.mark.parametrize("backend", BACKENDS)
def test_ffmpeg_flagged_rotation_is_applied(coded_videos, backend):
    if "ffmpeg_rot90" not in coded_videos:
        pytest.skip("no ffmpeg executable: cannot write an ffmpeg-flagged rotation test video")
    v = coded_videos["ffmpeg_rot90"]
    info = probe(v.path, backend=backend)
    assert info.rotation == 90 and (info.width, info.height) == (v.width, v.height)
    got = sample_video(v.path, SamplerConfig("uniform", num_frames=5), backend=backend)
    assert codes(got.frames) == got.sample.indices.tolist()


@pytest.mark.parametrize("fmt", ["rot90", "rot180", "rot270"])
def test_rotation_matches_ffmpeg_autorotate(coded_videos, fmt, tmp_path):
    """The upright frame equals what the ffmpeg CLI shows (it applies the display matrix)."""
    exe = shutil.which("ffmpeg")
    if exe is None:
        pytest.skip("no ffmpeg executable")
    from PIL import Image

    v = coded_videos[fmt]
    png = tmp_path / "f0.png"
    subprocess.run([exe, "-v", "error", "-y", "-i", str(v.path), "-frames:v", "1", str(png)], check=True)
    ref = np.asarray(Image.open(png).convert("RGB"))
    for backend in BACKENDS:
        with open_video(v.path, backend=backend) as r:
            ours = r.get_frames([0])[0].numpy()
        assert ours.shape == ref.shape
        assert np.abs(ours.astype(int) - ref.astype(int)).mean() < 3
        assert read_code(ours) == 0


# ----------------------------------------------------------------------------- backends


def test_auto_chooses_pyav_for_sparse_and_decord_for_dense_requests(coded_videos):
    """backend="auto": the faster exact backend per request (BENCHMARKS.md, Decoding)."""
    from vidclip.video.decode import DENSE_MIN_FRAMES

    v = coded_videos["mp4"]  # 60 frames, keyframe every 12
    with open_video(v.path) as r:
        assert r.info.backend == "auto"
        sparse = [5, 29, 53]
        assert codes(r.get_frames(sparse)) == sparse and r.last_backend == "pyav"
        if "decord" in available_backends():
            every = list(range(v.num_frames))
            assert codes(r.get_frames(every)) == every and r.last_backend == "decord"
            # too few frames to be worth decord's reader
            few = every[: DENSE_MIN_FRAMES - 1]
            assert codes(r.get_frames(few)) == few and r.last_backend == "pyav"
    # AVI: decord cannot seek by pts there; PyAV counts frames without converting them all
    with open_video(coded_videos["avi"].path) as r:
        every = list(range(coded_videos["avi"].num_frames))
        assert codes(r.get_frames(every)) == every and r.last_backend == "pyav"


def test_decord_malformed_output_falls_back(tmp_path):
    """decord 0.6 returns 4-channel padded frames for some widths (dmlc/decord#336)."""
    if "decord" not in available_backends():
        pytest.skip("decord not installed")
    v = make_coded_video(tmp_path / "w72.mp4", 12, size=(72, 72), gop=4)
    got = sample_video(v.path, SamplerConfig("uniform", num_frames=4))  # auto: must be right
    assert codes(got.frames) == got.sample.indices.tolist()
    try:
        direct = sample_video(v.path, SamplerConfig("uniform", num_frames=4), backend="decord")
    except VideoDecodeError as e:
        assert "decord" in str(e) and "w72.mp4" in str(e)
    else:  # a fixed decord must then be exact
        assert codes(direct.frames) == direct.sample.indices.tolist()


@pytest.mark.parametrize("backend", ["auto", "decord", "torchcodec", "pyav"])
def test_gpu_decoding_unavailable_raises(coded_videos, backend):
    if torch.cuda.is_available() and backend == "torchcodec" and "torchcodec" in available_backends():
        pytest.skip("a CUDA torchcodec may really work here")
    with pytest.raises(BackendUnavailableError) as e:
        open_video(coded_videos["mp4"].path, backend=backend, device="cuda")
    assert "cuda" in str(e.value).lower() or "gpu" in str(e.value).lower()


def test_unknown_backend_and_device():
    with pytest.raises(ConfigError, match="backend"):
        open_video("x.mp4", backend="opencv")
    with pytest.raises(ConfigError, match="device"):
        open_video("x.mp4", device="tpu")


def test_torchcodec_absent_is_a_clear_error(coded_videos):
    if "torchcodec" in available_backends():
        pytest.skip("torchcodec installed")
    with pytest.raises(BackendUnavailableError, match="torchcodec"):
        open_video(coded_videos["mp4"].path, backend="torchcodec")


# ----------------------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, coded_videos):
    d = tmp_path_factory.mktemp("bad")
    good = coded_videos["mp4"].path.read_bytes()
    (d / "empty.mp4").write_bytes(b"")
    (d / "truncated.mp4").write_bytes(good[: len(good) // 2])
    (d / "text.mp4").write_text("this is a text file, not a video\n" * 20)
    make_audio_only(d / "tone.m4a")
    make_audio_only(d / "tone.wav")
    # an mp4 whose container is intact but whose video payload is noise
    garbled = bytearray(good)
    start, stop = garbled.find(b"mdat") + 4, garbled.find(b"moov")
    assert 0 < start < stop
    garbled[start:stop] = np.random.default_rng(0).integers(0, 256, stop - start, dtype=np.uint8).tobytes()
    (d / "garbled.mp4").write_bytes(bytes(garbled))
    return d


@pytest.mark.parametrize("backend", ["auto", *BACKENDS])
@pytest.mark.parametrize("name,reason", [
    ("missing.mp4", "file not found"),
    ("empty.mp4", "empty file"),
    ("truncated.mp4", "not a readable media file"),
    ("text.mp4", "not a readable media file"),
    ("tone.m4a", "no video stream"),
    ("tone.wav", "no video stream"),
    ("garbled.mp4", "could not be decoded"),
])
def test_bad_input_raises_video_decode_error(bad_files, name, reason, backend):
    path = bad_files / name
    with pytest.raises(VideoDecodeError) as e:
        sample_video(path, SamplerConfig(num_frames=4), backend=backend)
    assert e.value.path == str(path) and reason in e.value.reason and name in str(e.value)


def test_truncated_faststart_file_keeps_decodable_frames(tmp_path, coded_videos):
    """moov first, payload cut: the frames that remain decodable are indexed and decode."""
    exe = shutil.which("ffmpeg")
    if exe is None:
        pytest.skip("no ffmpeg executable")
    v = make_coded_video(tmp_path / "src.mp4", 120, size=(96, 64), gop=20, noise=20, quality="normal")
    fast = tmp_path / "fast.mp4"
    subprocess.run([exe, "-v", "error", "-y", "-i", str(v.path), "-c", "copy", "-movflags", "faststart", str(fast)],
                   check=True)
    data = fast.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    with open_video(cut, backend="pyav") as r:
        n = r.info.num_frames
        assert 20 < n < 120
        assert codes(r.get_frames(np.arange(n))) == list(range(n))


# ----------------------------------------------------------------------------- write_frames


def test_write_frames(coded_videos, tmp_path):
    v = coded_videos["mkv"]
    out = tmp_path / "frames"
    m = write_frames(v.path, out, SamplerConfig("uniform", num_frames=5))
    from PIL import Image

    assert m["files"] == [f"frame_{k:03d}.png" for k in range(5)]
    assert [read_code(np.asarray(Image.open(out / f))) for f in m["files"]] == m["indices"]
    on_disk = json.loads((out / "frames.json").read_text())
    assert on_disk == m and on_disk["info"]["num_frames"] == v.num_frames and on_disk["mask"] == [True] * 5
    # a second, smaller run leaves no stale PNGs and no temporary files
    m2 = write_frames(v.path, out, {"name": "windows", "fps": 2.0, "window": 0.5, "stride": 0.5})
    assert sorted(p.name for p in out.iterdir()) == sorted([*m2["files"], "frames.json"])
    assert m2["windows"][0][:2] == [0.0, 0.5]


# ----------------------------------------------------------------------------- real clips


def _real_clips(shared):
    clips = sorted((shared / "videos").glob("*.*"))
    clips = [c for c in clips if c.suffix in (".mp4", ".mkv", ".avi")]
    clips += sorted((shared / "msrvtt" / "mini" / "videos").glob("*.mp4"))
    return clips


@pytest.mark.shared
def test_real_clips_both_backends_agree(shared_dir):
    clips = _real_clips(shared_dir)
    assert len(clips) >= 8
    manifest = {row["file"]: row for row in csv.DictReader(open(shared_dir / "videos" / "MANIFEST.tsv"), delimiter="\t")}
    cfg = SamplerConfig("uniform", num_frames=8)
    for clip in clips:
        info = probe(clip)
        assert info.num_frames > 8 and info.duration > 1 and info.width > 0 and info.rotation == 0
        row = manifest.get(clip.name)
        if row and clip.name != "nasa_13013.mp4":  # nasa has two video streams; FFmpeg picks the larger
            assert f"{info.width}x{info.height}" == row["size"]
            assert info.codec == row["codec"] and info.has_audio == (row["audio"] == "yes")
            assert info.duration == pytest.approx(float(row["seconds"]), abs=0.15)
        a = sample_video(clip, cfg, backend="pyav")
        assert a.frames.shape == (8, info.height, info.width, 3)
        assert len(set(a.sample.indices.tolist())) == 8
        if "decord" in BACKENDS:
            b = sample_video(clip, cfg, backend="decord")
            np.testing.assert_array_equal(a.sample.indices, b.sample.indices)
            np.testing.assert_array_equal(a.sample.timestamps, b.sample.timestamps)
            diff = (a.frames.int() - b.frames.int()).abs().float().mean((1, 2, 3))
            assert diff.max() < 1.0, (clip.name, diff.tolist())
