"""Shared pytest fixtures. (Video fixtures: the video package; others may append theirs below.)"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `import videogen` from any test

from videogen import ffmpeg_rotate_copy, make_coded_video  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared"

# name -> make_coded_video keyword arguments. Small, short GOPs with B-frames so that seeking,
# forward-pass reuse and pts reordering are all exercised.
CODED_SPECS = {
    "mp4": dict(file="h264.mp4", num_frames=60, size=(96, 64), gop=12),
    "mkv": dict(file="h264.mkv", num_frames=48, size=(64, 64), gop=10),
    "webm": dict(file="vp9.webm", num_frames=45, size=(80, 60), gop=15),
    "avi": dict(file="mpeg4.avi", num_frames=50, size=(160, 120), gop=12, fps=25),
    "vfr_mkv": dict(file="vfr.mkv", num_frames=40, size=(96, 64), gop=8, vfr=True),
    "vfr_mp4": dict(file="vfr.mp4", num_frames=40, size=(96, 64), gop=8, vfr=True),
    "rot90": dict(file="rot90.mp4", num_frames=30, size=(96, 64), gop=8, rotate=90),
    "rot180": dict(file="rot180.mp4", num_frames=30, size=(96, 64), gop=8, rotate=180),
    "rot270": dict(file="rot270.mp4", num_frames=30, size=(96, 64), gop=8, rotate=270),
}


@pytest.fixture(scope="session")
def coded_videos(tmp_path_factory) -> dict:
    """name -> videogen.CodedVideo, generated once per session (see CODED_SPECS).

    When an ffmpeg executable exists, also "ffmpeg_rot90": frames stored turned, flag added by
    ``ffmpeg -c copy -metadata:s:v:0 rotate=90`` (the classic way phones' videos are flagged).
    """
    root = tmp_path_factory.mktemp("coded")
    videos = {}
    for name, spec in CODED_SPECS.items():
        spec = dict(spec)
        videos[name] = make_coded_video(root / spec.pop("file"), spec.pop("num_frames"), **spec)
    if shutil.which("ffmpeg"):
        raw = make_coded_video(root / "unflagged90.mp4", 30, size=(96, 64), gop=8, rotate=90, flag_rotation=False)
        ffmpeg_rotate_copy(raw.path, root / "ffmpeg_rot90.mp4", 90)
        raw.path = root / "ffmpeg_rot90.mp4"
        videos["ffmpeg_rot90"] = raw
    return videos


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared (real sample data); skips the test when absent."""
    if not SHARED.is_dir():
        pytest.skip(f"../shared not present: {SHARED} (real sample videos)")
    return SHARED


def pytest_collection_modifyitems(config, items):
    """Tests marked ``shared`` skip, saying why, when ../shared (real sample data) is absent.

    ../shared may be a symbolic link: it is used as named, never resolved, so paths built from
    it compare equal to the ones the tests expect.
    """
    if SHARED.is_dir():
        return
    skip = pytest.mark.skip(reason=f"../shared not present ({SHARED}): needs the real sample videos / MSR-VTT files")
    for item in items:
        if "shared" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def tiny_clip():
    """The tiny randomly initialised open_clip model (deterministic init), loaded once per module."""
    from vidclip.models.clip.load import load_clip

    return load_clip("tiny-vit")


@pytest.fixture(scope="module")
def windows_sampler():
    """The index tests' sampler: 1 s windows every 0.5 s, frames at 4 fps."""
    from vidclip.video.sample import SamplerConfig

    return SamplerConfig(name="windows", fps=4.0, window=1.0, stride=0.5)
