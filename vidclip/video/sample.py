"""Frame samplers: which frames of a video to decode, as pure index math.

:func:`plan_sample` maps a video's frame timestamps to a :class:`Sample` (frame indices, their
timestamps, a padding mask and, for the window sampler, the windows). It decodes nothing and
is the single source of truth for every sampler; :func:`sample_video` then decodes exactly the
distinct frames the plan needs.

Samplers (F = number of decodable frames, times in seconds from the first frame, ``end`` =
:func:`~vidclip.video.decode.video_end`):

* ``uniform`` N: segment k = [k F/N, (k+1) F/N); evaluation picks ``floor((k + 0.5) F / N)``
  (CLIP4Clip-style middle frame), training a seeded random integer inside each segment. With
  F < N the F real frames are followed by padding (mask False) that repeats the last index.
* ``fps`` r: the frames *shown* at t = 0, 1/r, 2/r, ... < end, i.e. the last frame whose
  pts <= t (real pts, so VFR is exact); optional cap M subsamples that grid of G times with
  the same rule, positions ``floor((k + 0.5) G / M)``.
* ``windows`` W, S: windows [0, W), [S, S+W), ... until one reaches the end (clipped to it; a
  video shorter than W gives one window). Frames are the fps grid (rate ``fps``) over the whole
  video; each window is the contiguous run of grid times t with start <= t < end. A window
  containing no grid time gets the frame shown at its start. Times are stored once even when
  windows overlap; ``Window.first``/``count`` point into the Sample.

A time t "shows" frame i when pts_i <= t + 1e-6 s: the microsecond tolerance absorbs float
rounding of pts vs. grid times (real frame gaps are >= ~1 ms).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING

import numpy as np

from vidclip.core.errors import ConfigError, VidclipError

if TYPE_CHECKING:
    import torch

from vidclip.video.decode import open_video
from vidclip.video.reader import VideoInfo, video_end

__all__ = ["SamplerConfig", "Window", "Sample", "SampledFrames", "SampleError", "plan_sample", "sample_video"]

SAMPLERS = ("uniform", "fps", "windows")
#: What a library index samples unless told otherwise: 10-second windows every 5 seconds, on a
#: 1 frame-per-second grid (:meth:`SamplerConfig.index_default`).
INDEX_SAMPLER = {"name": "windows", "fps": 1.0, "window": 10.0, "stride": 5.0}
_EPS = 1e-6  # seconds; see module docstring


class SampleError(VidclipError, ValueError):
    """plan_sample was given unusable timestamps (empty, unsorted, not finite)."""


@dataclass
class SamplerConfig:
    """Which frames to take from each video (see module docstring for exact semantics)."""

    name: str = "uniform"          # "uniform" | "fps" | "windows"
    num_frames: int = 12           # uniform: N
    fps: float = 1.0               # fps: rate r; windows: grid rate inside windows
    max_frames: int | None = None  # fps: cap M (uniform subsample of the grid)
    window: float = 10.0           # windows: W seconds
    stride: float = 5.0            # windows: S seconds
    train: bool = False            # uniform: random index inside each segment
    seed: int = 0                  # uniform training: seed when no rng is passed

    def __post_init__(self):
        if self.name not in SAMPLERS:
            raise ConfigError(f"sampler name: expected one of {', '.join(SAMPLERS)}, got {self.name!r}")
        if isinstance(self.num_frames, bool) or not isinstance(self.num_frames, (int, np.integer)) \
                or self.num_frames < 1:
            raise ConfigError(f"sampler num_frames: expected an int >= 1, got {self.num_frames!r}")
        if self.max_frames is not None and (isinstance(self.max_frames, bool)
                                            or not isinstance(self.max_frames, (int, np.integer))
                                            or self.max_frames < 1):
            raise ConfigError(f"sampler max_frames: expected None or an int >= 1, got {self.max_frames!r}")
        for name in ("fps", "window", "stride"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) \
                    or not math.isfinite(v) or v <= 0:
                raise ConfigError(f"sampler {name}: expected a positive number, got {v!r}")
        if not isinstance(self.train, (bool, np.bool_)):
            raise ConfigError(f"sampler train: expected true or false, got {self.train!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)):
            raise ConfigError(f"sampler seed: expected an int, got {self.seed!r}")
        self.num_frames = int(self.num_frames)
        self.max_frames = None if self.max_frames is None else int(self.max_frames)
        self.fps, self.window, self.stride = float(self.fps), float(self.window), float(self.stride)
        self.train, self.seed = bool(self.train), int(self.seed)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def index_default(cls, **given) -> "SamplerConfig":
        """The index's default sampler (:data:`INDEX_SAMPLER`), with the fields in ``given`` replaced."""
        return cls(**{**INDEX_SAMPLER, **given})

    @classmethod
    def from_dict(cls, d) -> "SamplerConfig":
        if isinstance(d, SamplerConfig):
            return d
        if not isinstance(d, dict):
            raise ConfigError(f"sampler: expected a mapping, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"sampler: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**d)


@dataclass
class Window:
    """A time window and the frames ``[first, first + count)`` of the Sample inside it."""

    start: float
    end: float
    first: int
    count: int


@dataclass
class Sample:
    indices: np.ndarray    # int64 [T] frame indices (padding repeats the last valid index)
    timestamps: np.ndarray  # float64 [T] seconds (pts of those frames)
    mask: np.ndarray       # bool [T] True = real frame
    windows: list[Window] | None = None

    def __len__(self) -> int:
        return len(self.indices)


@dataclass
class SampledFrames:
    frames: torch.Tensor   # uint8 [T_valid, H, W, 3]: only the real frames, in Sample order
    sample: Sample
    info: VideoInfo


def _check_timestamps(timestamps) -> np.ndarray:
    ts = np.asarray(timestamps, dtype=np.float64).reshape(-1)
    if ts.size == 0:
        raise SampleError("timestamps: empty (the video has no decodable frames)")
    if not np.all(np.isfinite(ts)):
        raise SampleError("timestamps: contains NaN or infinity")
    if ts.size > 1 and np.any(np.diff(ts) < 0):
        raise SampleError("timestamps: not sorted in presentation order")
    return ts


def _shown_at(ts: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Index of the frame on screen at each time: last i with ts[i] <= t (first frame before ts[0])."""
    idx = np.searchsorted(ts, times + _EPS, side="right") - 1
    return np.clip(idx, 0, ts.size - 1).astype(np.int64)


def _middle_positions(total: int, n: int) -> np.ndarray:
    """floor((k + 0.5) * total / n) for k < n, in exact integer arithmetic."""
    k = np.arange(n, dtype=np.int64)
    return ((2 * k + 1) * total) // (2 * n)


def _uniform(ts: np.ndarray, cfg: SamplerConfig, rng) -> Sample:
    f, n = ts.size, cfg.num_frames
    if f < n:
        idx = np.concatenate([np.arange(f, dtype=np.int64), np.full(n - f, f - 1, dtype=np.int64)])
        mask = np.arange(n) < f
        return Sample(idx, ts[idx], mask, None)
    if cfg.train:
        k = np.arange(n, dtype=np.int64)
        lo = (k * f + n - 1) // n            # ceil(k F / N): first integer in segment k
        hi = ((k + 1) * f + n - 1) // n      # ceil((k+1) F / N): one past the last
        rng = rng if rng is not None else np.random.default_rng(cfg.seed)
        idx = rng.integers(lo, hi).astype(np.int64)
    else:
        idx = _middle_positions(f, n)
    return Sample(idx, ts[idx], np.ones(n, dtype=bool), None)


def _grid(ts: np.ndarray, rate: float) -> np.ndarray:
    """Grid times ts[0] + k / rate, k = 0.. while < end."""
    t0 = float(ts[0])
    span = video_end(ts) - t0
    count = max(1, math.ceil(span * rate - _EPS))
    return t0 + np.arange(count, dtype=np.float64) / rate


def _fps(ts: np.ndarray, cfg: SamplerConfig) -> Sample:
    times = _grid(ts, cfg.fps)
    if cfg.max_frames is not None and times.size > cfg.max_frames:
        times = times[_middle_positions(times.size, cfg.max_frames)]
    idx = _shown_at(ts, times)
    return Sample(idx, ts[idx], np.ones(idx.size, dtype=bool), None)


def _windows(ts: np.ndarray, cfg: SamplerConfig) -> Sample:
    t0, end = float(ts[0]), video_end(ts)
    span = end - t0
    w, s = cfg.window, cfg.stride
    # Window j starts at j*S; stop after the first one that reaches the end, or when starts
    # pass the end (S > W leaves gaps, which is then the caller's choice).
    n_cover = max(0, math.ceil((span - w) / s - _EPS)) + 1
    n_start = math.ceil(span / s - _EPS)
    starts = t0 + np.arange(max(1, min(n_cover, n_start)), dtype=np.float64) * s
    ends = np.minimum(starts + w, end)
    grid = _grid(ts, cfg.fps)
    # A window with no grid time gets the frame shown at its start as an extra time point.
    lo = np.searchsorted(grid, starts - _EPS, side="left")
    hi = np.searchsorted(grid, ends - _EPS, side="left")
    extra = starts[hi <= lo]
    times = np.union1d(grid, extra) if extra.size else grid
    lo = np.searchsorted(times, starts - _EPS, side="left")
    hi = np.searchsorted(times, ends - _EPS, side="left")
    idx = _shown_at(ts, times)
    windows = [Window(float(a), float(b), int(f), int(c))
               for a, b, f, c in zip(starts, ends, lo, hi - lo)]
    return Sample(idx, ts[idx], np.ones(idx.size, dtype=bool), windows)


def plan_sample(timestamps: np.ndarray, cfg: SamplerConfig, rng: np.random.Generator | None = None) -> Sample:
    """Plan which frames to take (pure index math, no decoding).

    Args:
        timestamps: float64 ``[F]`` sorted presentation times of every decodable frame
            (``VideoReader.timestamps``).
        cfg: the sampler.
        rng: uniform training mode only; default ``np.random.default_rng(cfg.seed)``. Pass a
            generator that lives across epochs to draw different frames each epoch.
    Returns:
        :class:`Sample` with indices/timestamps/mask of length T (T = N for uniform).
    """
    ts = _check_timestamps(timestamps)
    if not isinstance(cfg, SamplerConfig):
        cfg = SamplerConfig.from_dict(cfg)
    if cfg.name == "uniform":
        return _uniform(ts, cfg, rng)
    if cfg.name == "fps":
        return _fps(ts, cfg)
    return _windows(ts, cfg)


def sample_video(path, cfg: SamplerConfig, backend: str = "auto", device: str = "cpu",
                 rng: np.random.Generator | None = None, threads: int = 0) -> SampledFrames:
    """Plan and decode the sample of one video; each distinct needed frame is decoded once.

    Returns:
        :class:`SampledFrames` with ``frames`` uint8 ``[T_valid, H, W, 3]`` (rows = the real,
        mask-True positions of the Sample, in order) on ``device``.
    """
    if not isinstance(cfg, SamplerConfig):
        cfg = SamplerConfig.from_dict(cfg)
    with open_video(path, backend=backend, device=device, threads=threads) as reader:
        sample = plan_sample(reader.timestamps, cfg, rng)
        frames = reader.get_frames(sample.indices[sample.mask])
        return SampledFrames(frames=frames, sample=sample, info=reader.info)
