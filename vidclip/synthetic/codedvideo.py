"""Test videos whose every frame carries its own index, readable back from the decoded pixels.

Each frame is a 4 x 5 grid of big black/white cells (robust to lossy compression):

    W . . . B        corner cells are orientation markers: top-left white, the other three
    . . . . .        black, so a frame read sideways, upside down or mirrored is rejected;
    . . . . .        the 16 other cells hold the frame index in binary (row-major, LSB first),
    B . . . B        white = 1. Up to 65,535 frames.

``make_coded_video`` writes such a video with PyAV in any container/codec the tests need,
optionally with variable frame rate (irregular pts) and a display-rotation flag. With
``rotate=R`` the *stored* frames are the upright picture turned by -R degrees and the container
says "rotate by R (counter-clockwise) to display", so only a reader that applies the flag sees an
upright, decodable code. ``read_code`` decodes the index from an upright ``uint8 [H, W, 3]``
frame and raises ``ValueError`` when the orientation markers are wrong.

Used by the tests (through tests/videogen.py) and tools/bench_decode.py; imports no pytest and
no torch.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from vidclip.core.fileio import atomic_path

ROWS, COLS = 4, 5
_MARKERS = {(0, 0): 1, (0, COLS - 1): 0, (ROWS - 1, 0): 0, (ROWS - 1, COLS - 1): 0}
_DATA_CELLS = [(r, c) for r in range(ROWS) for c in range(COLS) if (r, c) not in _MARKERS]
MAX_CODE = (1 << len(_DATA_CELLS)) - 1

# container extension -> (codec, PyAV muxer format)
FORMATS = {
    "mp4": ("libx264", "mp4"),
    "mkv": ("libx264", "matroska"),
    "webm": ("libvpx-vp9", "webm"),
    "avi": ("mpeg4", "avi"),
    "mov": ("libx264", "mov"),
}


def _cell_bounds(n: int, size: int) -> np.ndarray:
    """Integer edges of ``n`` equal cells over ``size`` pixels: int [n + 1]."""
    return np.round(np.linspace(0, size, n + 1)).astype(int)


def code_bits(index: int) -> np.ndarray:
    """The 4x5 cell colours (0/1) of frame ``index``."""
    if not 0 <= index <= MAX_CODE:
        raise ValueError(f"frame index {index} does not fit in {len(_DATA_CELLS)} bits")
    grid = np.zeros((ROWS, COLS), dtype=np.uint8)
    for (r, c), v in _MARKERS.items():
        grid[r, c] = v
    for b, (r, c) in enumerate(_DATA_CELLS):
        grid[r, c] = (index >> b) & 1
    return grid


_TEXTURES: dict = {}


def _texture(width: int, height: int, noise: float) -> np.ndarray:
    """A fixed Gaussian grain field (float32 [height + 32, width + 32]), cached."""
    key = (width, height, noise)
    if key not in _TEXTURES:
        _TEXTURES.clear()
        rng = np.random.default_rng(12345)
        _TEXTURES[key] = rng.normal(0.0, noise, size=(height + 32, width + 32)).astype(np.float32)
    return _TEXTURES[key]


def paint_code(index: int, width: int, height: int, noise: float = 0.0) -> np.ndarray:
    """Upright frame ``uint8 [height, width, 3]`` showing ``index``.

    ``noise`` > 0 overlays a grain texture of that standard deviation (grey levels) that drifts
    by a few pixels per frame, so an encoder has real (motion-compensable) work to do, as in
    camera footage (benchmarks); codes still read back for noise up to ~40.
    """
    grid = code_bits(index)
    ys, xs = _cell_bounds(ROWS, height), _cell_bounds(COLS, width)
    row_of = np.repeat(np.arange(ROWS), np.diff(ys))
    col_of = np.repeat(np.arange(COLS), np.diff(xs))
    img = (grid[row_of][:, col_of] * 255).astype(np.float32)
    if noise > 0:
        dy, dx = (3 * index) % 32, (5 * index) % 32
        img += _texture(width, height, noise)[dy:dy + height, dx:dx + width]
    img = np.clip(img, 0, 255).astype(np.uint8)
    return np.repeat(img[:, :, None], 3, axis=2)


def read_code(frame) -> int:
    """Frame index painted by :func:`paint_code`, read from an upright ``uint8 [H, W, 3]`` frame.

    Each cell is judged by the mean of its central half, threshold 128. Raises ``ValueError``
    when the corner markers are not (white, black / black, black): wrong orientation or not a
    coded frame.
    """
    a = np.asarray(frame.cpu() if hasattr(frame, "cpu") else frame)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"expected an [H, W, 3] frame, got shape {a.shape}")
    gray = a.astype(np.float32).mean(axis=2)
    h, w = gray.shape
    ys, xs = _cell_bounds(ROWS, h), _cell_bounds(COLS, w)
    grid = np.zeros((ROWS, COLS), dtype=np.uint8)
    for r in range(ROWS):
        for c in range(COLS):
            y0, y1, x0, x1 = ys[r], ys[r + 1], xs[c], xs[c + 1]
            qy, qx = (y1 - y0) // 4, (x1 - x0) // 4
            grid[r, c] = gray[y0 + qy:y1 - qy, x0 + qx:x1 - qx].mean() > 128
    for (r, c), v in _MARKERS.items():
        if grid[r, c] != v:
            raise ValueError(f"orientation markers wrong (cell {r},{c} is {int(grid[r, c])}, expected {v}): "
                             "frame not upright or not a coded frame")
    return int(sum(int(grid[r, c]) << b for b, (r, c) in enumerate(_DATA_CELLS)))


@dataclass
class CodedVideo:
    """What :func:`make_coded_video` wrote: the truth the decoders are checked against."""

    path: Path
    num_frames: int
    pts: np.ndarray       # float64 [F] presentation time of frame i (seconds, first frame = 0)
    width: int            # upright (displayed) size
    height: int
    rotate: int
    codec: str
    gop: int
    duration: float       # end of the last frame: last pts + its nominal duration


def vfr_pts(num_frames: int, gaps_ms=(33, 100, 33, 33, 100)) -> np.ndarray:
    """Irregular presentation times in integer milliseconds (cycles through ``gaps_ms``)."""
    gaps = np.resize(np.asarray(gaps_ms, dtype=np.int64), max(num_frames - 1, 0))
    return np.concatenate([[0], np.cumsum(gaps)]).astype(np.int64)


def _encode_all(container, stream, frames) -> None:
    """Encode each av frame of ``frames`` on ``stream``, then flush the encoder; mux every packet."""
    for frame in frames:
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def make_coded_video(
    path,
    num_frames: int,
    fps: float = 30,
    size: tuple[int, int] = (96, 64),
    codec: str | None = None,
    container: str | None = None,
    vfr: bool = False,
    rotate: int = 0,
    gop: int = 12,
    bframes: int = 2,
    noise: float = 0.0,
    quality: str = "high",
    flag_rotation: bool = True,
    preset: str = "veryfast",
) -> CodedVideo:
    """Write a coded test video and return what was written.

    Args:
        path: output file; its extension picks the container unless ``container`` is given
            ("mp4", "mkv", "webm", "avi", "mov").
        num_frames: frame count (<= 65,535).
        fps: nominal rate; frame i is shown at i / fps (CFR).
        size: (width, height) of the *upright* picture.
        codec: encoder (default per container: libx264, libvpx-vp9 for webm, mpeg4 for avi).
        vfr: irregular gaps of 33 ms and 100 ms (time base 1/1000) instead of 1/fps.
        rotate: display rotation flag in degrees counter-clockwise (0, 90, 180, 270), written
            as the container's display matrix (what ``ffmpeg -metadata:s:v rotate=R`` writes
            with ffmpeg 5.1 and what PyAV reports as ``frame.rotation``).
        gop: keyframe interval (scene-cut detection off, so keyframes are exactly every ``gop``).
        bframes: B-frames between references (exercises pts reordering).
        noise: texture noise std in grey levels (benchmarks: makes decoding realistically costly).
        quality: "high" (near lossless) or "normal" (x264 crf 23 / default-ish bit rates).
        flag_rotation: False stores the turned frames *without* the flag, so that a test can
            add it afterwards with :func:`ffmpeg_rotate_copy`.
        preset: x264 speed preset (B-frames and GOP are set explicitly whatever the preset).
    """
    path = Path(path)
    ext = (container or path.suffix.lstrip(".")).lower()
    if ext not in FORMATS:
        raise ValueError(f"unsupported container {ext!r}; choose one of {sorted(FORMATS)}")
    codec = codec or FORMATS[ext][0]
    if rotate % 90 or rotate not in (0, 90, 180, 270):
        raise ValueError(f"rotate must be 0, 90, 180 or 270, got {rotate}")
    width, height = size
    # Stored (coded) picture: the upright one turned by -rotate, so that applying the flag
    # (counter-clockwise by `rotate`) restores it. np.rot90(k>0) turns counter-clockwise.
    k_store = (-rotate // 90) % 4
    coded_w, coded_h = (height, width) if rotate in (90, 270) else (width, height)

    if vfr:
        ticks = vfr_pts(num_frames)
        time_base = Fraction(1, 1000)
        pts_s = ticks / 1000.0
        last_gap = 0.033
    else:
        rate = Fraction(fps).limit_denominator(1001)
        time_base = 1 / rate
        ticks = np.arange(num_frames, dtype=np.int64)
        pts_s = ticks * float(time_base)
        last_gap = float(time_base)

    path.parent.mkdir(parents=True, exist_ok=True)
    args = dict( fmt=FORMATS[ext][1], codec=codec, num_frames=num_frames, fps=fps, vfr=vfr,
                time_base=[time_base.numerator, time_base.denominator], ticks=ticks.tolist(), size=[width, height],
                coded=[coded_w, coded_h], k_store=k_store, rotate=rotate if flag_rotation else 0, gop=gop,
                bframes=bframes, noise=noise, quality=quality, preset=preset)
    with atomic_path(path) as tmp:
        args["tmp"] = str(tmp)
        if codec == "libvpx-vp9" and "decord" in sys.modules:
            # decord's bundled FFmpeg brings its own libvpx; once it is loaded, PyAV's libvpx
            # encoder fails with "ABI version mismatch". Encode in a fresh interpreter instead.
            subprocess.run([sys.executable, "-m", "vidclip.synthetic.codedvideo", json.dumps(args)], check=True)
        else:
            _encode(**args)
    return CodedVideo(path=path, num_frames=num_frames, pts=pts_s.astype(np.float64), width=width,
                      height=height, rotate=rotate, codec=codec, gop=gop,
                      duration=float(pts_s[-1] + last_gap))


def _encode(tmp, fmt, codec, num_frames, fps, vfr, time_base, ticks, size, coded, k_store, rotate, gop,
            bframes, noise, quality, preset="veryfast") -> None:
    """Encode the coded frames into ``tmp`` (the body of make_coded_video; plain-JSON args)."""
    import av

    time_base = Fraction(*time_base)
    width, height = size
    coded_w, coded_h = coded
    out = av.open(str(tmp), "w", format=fmt)
    try:
        rate_arg = Fraction(fps).limit_denominator(1001) if not vfr else None
        stream = out.add_stream(codec, rate=rate_arg) if rate_arg else out.add_stream(codec)
        stream.width, stream.height = coded_w, coded_h
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = time_base
        stream.time_base = time_base
        if rotate:
            stream.set_display_rotation(rotate)
        opts: dict[str, str] = {}
        if codec == "libx264":
            crf = "12" if quality == "high" else "23"
            opts = {"preset": preset, "crf": crf,
                    "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes={bframes}"}
        elif codec == "libvpx-vp9":
            stream.codec_context.gop_size = gop
            opts = {"deadline": "realtime", "cpu-used": "8", "crf": "10" if quality == "high" else "32",
                    "b": "0", "row-mt": "1"}
        elif codec == "mpeg4":
            stream.codec_context.gop_size = gop
            stream.codec_context.max_b_frames = bframes
            opts = {"qscale": "2" if quality == "high" else "5"}
            stream.codec_context.qscale = 2 if quality == "high" else 5
        stream.codec_context.options = opts
        def frames():
            for i in range(num_frames):
                img = paint_code(i, width, height, noise=noise)
                if k_store:
                    img = np.ascontiguousarray(np.rot90(img, k=k_store))
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                frame.pts = int(ticks[i])
                frame.time_base = time_base
                yield frame

        _encode_all(out, stream, frames())
    finally:
        out.close()


def ffmpeg_rotate_copy(src, dst, rotate: int) -> Path:
    """Re-mux ``src`` with ffmpeg's ``-metadata:s:v:0 rotate=R`` flag (ffmpeg 5.1 style).

    Raises FileNotFoundError when no ffmpeg executable is installed.
    """
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise FileNotFoundError("ffmpeg executable not found")
    subprocess.run([exe, "-v", "error", "-y", "-i", str(src), "-c", "copy",
                    "-metadata:s:v:0", f"rotate={rotate}", str(dst)], check=True)
    return Path(dst)


def make_audio_only(path, seconds: float = 0.5, rate: int = 16000) -> Path:
    """A tiny audio-only file (.wav = PCM, .m4a = AAC) with a 440 Hz tone."""
    import av

    path = Path(path)
    fmt, codec = {"wav": ("wav", "pcm_s16le"), "m4a": ("ipod", "aac")}[path.suffix.lstrip(".")]
    out = av.open(str(path), "w", format=fmt)
    try:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = "mono"
        n = int(seconds * rate)
        tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / rate) * 32767).astype(np.int16)
        chunk = 1024

        def frames():
            for start in range(0, n, chunk):
                frame = av.AudioFrame.from_ndarray(tone[None, start:start + chunk], format="s16", layout="mono")
                frame.sample_rate = rate
                frame.pts = start
                yield frame

        _encode_all(out, stream, frames())
    finally:
        out.close()
    return path


if __name__ == "__main__":  # make_coded_video's fresh-interpreter encode (see the VP9 note there)
    _encode(**json.loads(sys.argv[1]))
