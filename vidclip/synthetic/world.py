"""The synthetic world: coloured shapes moving across simple backgrounds, and how a clip is drawn.

Every clip shows one object (a shape with a colour and a size) moving in a straight line
in one of four (or eight, with diagonals) directions over a solid or gradient background,
with a little Gaussian pixel noise. A :class:`ClipSpec` determines a clip's frames;
:func:`render_clip` draws them and :func:`write_mp4` encodes them (tagged as synthetic footage,
:data:`vidclip.video.provenance.SYNTH_TAG`). A spec's time-reversed :meth:`~ClipSpec.twin` holds
exactly the same frames in reverse order and shows the opposite motion.

How clips are put into words is :mod:`vidclip.synthetic.captions`; datasets of them
(MSR-VTT layout) :mod:`vidclip.synthetic.datasets`; videos of several scenes
:mod:`vidclip.synthetic.scenes`.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from vidclip.core.errors import ConfigError
from vidclip.video.provenance import SYNTH_TAG

# ----------------------------------------------------------------------------- vocabulary

#: RGB of each object colour.  All are bright and saturated so they stand out on every
#: background below (and survive yuv420p chroma subsampling at 32-64 px).
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (40, 90, 230),
    "yellow": (240, 210, 30),
    "purple": (150, 60, 200),
    "orange": (245, 130, 20),
}

#: Background name -> (top-left colour, bottom-right colour, gradient axis or None).
BACKGROUNDS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int], str | None]] = {
    "black": ((15, 15, 15), (15, 15, 15), None),
    "gray": ((110, 110, 110), (110, 110, 110), None),
    "white": ((225, 225, 225), (225, 225, 225), None),
    "dark blue": ((10, 15, 50), (35, 45, 100), "vertical"),
}

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross")

#: Object "radius" as a fraction of the frame side.  Large objects span ~44% of the frame,
#: small ones ~28%, so both stay recognisable when a model sees the clip at 32 px.
SIZES: dict[str, float] = {"small": 0.14, "large": 0.22}

#: Unit steps in image coordinates (x to the right, y downwards).
DIRECTIONS: dict[str, tuple[int, int]] = {
    "left": (-1, 0),
    "right": (1, 0),
    "up": (0, -1),
    "down": (0, 1),
    "up-left": (-1, -1),
    "up-right": (1, -1),
    "down-left": (-1, 1),
    "down-right": (1, 1),
}
OPPOSITE: dict[str, str] = {
    "left": "right",
    "right": "left",
    "up": "down",
    "down": "up",
    "up-left": "down-right",
    "down-right": "up-left",
    "up-right": "down-left",
    "down-left": "up-right",
}
STRAIGHT = ("left", "right", "up", "down")


# ----------------------------------------------------------------------------- config / spec


@dataclass
class SynthConfig:
    """Parameters of the synthetic world and of a dataset of it (:mod:`vidclip.synthetic.datasets`:
    ``num_videos``, ``test_fraction``, ``captions_per_video``, ``train_twins``). Every field is
    written to ``synth_meta.json``."""

    num_videos: int = 100
    seed: int = 0
    size: int = 64  # frame side in pixels (even: yuv420p)
    num_frames: int = 24
    fps: float = 8.0
    test_fraction: float = 0.2  # rounded to an even number of test videos (twin pairs)
    captions_per_video: int = 5
    noise: float = 6.0  # std of the Gaussian pixel noise, in 0-255 intensity levels
    travel: float = 0.4  # distance the object moves per axis, as a fraction of the frame side
    diagonal: bool = True  # also use the four diagonal directions
    crf: int = 20  # libx264 constant rate factor; 0 = lossless (exact decoded frames)
    # Train clips in time-reversed twin pairs too (vidclip.synthetic.datasets): the only way a contrastive batch
    # holds two clips that differ in nothing but the direction of motion.
    train_twins: bool = False

    def __post_init__(self) -> None:
        if self.num_videos < 1:
            raise ConfigError(f"SynthConfig.num_videos: must be >= 1, got {self.num_videos}")
        if self.size < 16 or self.size % 2:
            raise ConfigError(f"SynthConfig.size: must be an even number >= 16, got {self.size}")
        if self.num_frames < 2:
            raise ConfigError(f"SynthConfig.num_frames: must be >= 2, got {self.num_frames}")
        if not self.fps > 0:
            raise ConfigError(f"SynthConfig.fps: must be > 0, got {self.fps}")
        if not 0.0 <= self.test_fraction < 1.0:
            raise ConfigError(
                f"SynthConfig.test_fraction: must be in [0, 1), got {self.test_fraction}"
            )
        if self.captions_per_video < 1:
            raise ConfigError(
                f"SynthConfig.captions_per_video: must be >= 1, got {self.captions_per_video}"
            )
        if self.noise < 0:
            raise ConfigError(f"SynthConfig.noise: must be >= 0, got {self.noise}")
        if not 0 <= self.crf <= 51:
            raise ConfigError(f"SynthConfig.crf: must be in [0, 51], got {self.crf}")
        # The largest object must fit its whole path inside the frame.
        need = 2 * (max(SIZES.values()) * self.size + 1) + self.travel * self.size
        if not 0 < self.travel or need > self.size:
            raise ConfigError(
                f"SynthConfig.travel: {self.travel} is too long for a {self.size}px frame "
                f"(a large object needs {need:.1f}px along its path)"
            )

    @property
    def directions(self) -> tuple[str, ...]:
        return tuple(DIRECTIONS) if self.diagonal else STRAIGHT

    def split_counts(self) -> tuple[int, int]:
        """``(num_train, num_test)``; the test count is even (twin pairs), and at least one
        pair when ``test_fraction > 0`` and there are >= 2 videos."""
        pairs = int(round(self.num_videos * self.test_fraction / 2))
        if self.test_fraction > 0 and self.num_videos >= 2:
            pairs = max(pairs, 1)
        pairs = min(pairs, self.num_videos // 2)
        return self.num_videos - 2 * pairs, 2 * pairs


@dataclass(frozen=True)
class ClipSpec:
    """Everything that determines a clip's frames.

    ``direction`` and ``start`` describe the motion as rendered; ``reverse=True`` then plays
    the rendered frames backwards (that is how a test twin is made, so its frames are the
    exact reverse of its partner's).  The motion a viewer sees is :attr:`motion`.
    ``start`` is the object's centre in the first rendered frame, as fractions (x, y) of the
    frame side, x to the right and y downwards.
    """

    shape: str
    color: str
    size: str
    direction: str
    start: tuple[float, float]
    background: str
    noise_seed: int
    reverse: bool = False

    def __post_init__(self) -> None:
        for field, vocab in (
            ("shape", SHAPES),
            ("color", COLORS),
            ("size", SIZES),
            ("direction", DIRECTIONS),
            ("background", BACKGROUNDS),
        ):
            value = getattr(self, field)
            if value not in vocab:
                raise ConfigError(
                    f"ClipSpec.{field}: unknown value {value!r}; one of {list(vocab)}"
                )
        object.__setattr__(self, "start", (float(self.start[0]), float(self.start[1])))

    @property
    def motion(self) -> str:
        """Direction of motion as seen in the (possibly reversed) clip."""
        return OPPOSITE[self.direction] if self.reverse else self.direction

    def twin(self) -> ClipSpec:
        """The time-reversed twin: same frames in reverse order, opposite :attr:`motion`."""
        return dataclasses.replace(self, reverse=not self.reverse)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["start"] = list(self.start)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClipSpec:
        return cls(**{**d, "start": tuple(d["start"])})


# ----------------------------------------------------------------------------- rendering


def _sdf(shape: str, x: np.ndarray, y: np.ndarray, r: float) -> np.ndarray:
    """Signed distance (pixels, < 0 inside) of points (x, y) relative to the shape centre.

    ``x`` and ``y`` broadcast against each other (here [T,1,S] and [T,S,1] -> [T,S,S]).
    The box-like formulas are exact on the edges, which is all the anti-aliasing needs.
    """
    ax, ay = np.abs(x), np.abs(y)
    if shape == "circle":
        return np.sqrt(x * x + y * y) - r
    if shape == "square":  # half-side 0.85 r: about the same area as the circle
        return np.maximum(ax, ay) - 0.85 * r
    if shape == "diamond":  # vertices at distance r from the centre
        return (ax + ay - r) / np.sqrt(2.0)
    if shape == "triangle":  # equilateral, pointing up, circumradius r (inradius r / 2)
        s60, c60 = np.sqrt(3.0) / 2.0, 0.5
        return np.maximum(np.maximum(y, s60 * x - c60 * y), -s60 * x - c60 * y) - 0.5 * r
    if shape == "cross":  # plus sign: two bars of half-length r and half-width 0.35 r
        w = 0.35 * r
        return np.minimum(np.maximum(ax - r, ay - w), np.maximum(ax - w, ay - r))
    raise ConfigError(f"unknown shape {shape!r}")


def _background(name: str, size: int) -> np.ndarray:
    """float32 [S, S, 3] background image."""
    c0, c1, axis = BACKGROUNDS[name]
    c0a, c1a = np.asarray(c0, np.float32), np.asarray(c1, np.float32)
    ramp = np.linspace(0.0, 1.0, size, dtype=np.float32)
    if axis == "vertical":
        w = ramp[:, None, None] * np.ones((1, size, 1), np.float32)
    elif axis == "horizontal":
        w = ramp[None, :, None] * np.ones((size, 1, 1), np.float32)
    else:
        w = np.zeros((size, size, 1), np.float32)
    return c0a * (1.0 - w) + c1a * w


def object_path(spec: ClipSpec, cfg: SynthConfig) -> np.ndarray:
    """float64 [T, 2] object centre (x, y) in pixels in each rendered frame (before reverse)."""
    s = cfg.size
    dx, dy = DIRECTIONS[spec.direction]
    t = np.arange(cfg.num_frames, dtype=np.float64) / (cfg.num_frames - 1)
    cx = (spec.start[0] + dx * cfg.travel * t) * s
    cy = (spec.start[1] + dy * cfg.travel * t) * s
    return np.stack([cx, cy], axis=1)


def render_clip(spec: ClipSpec, cfg: SynthConfig) -> np.ndarray:
    """Render a clip: uint8 [T, H, W, 3] (T = cfg.num_frames, H = W = cfg.size), RGB.

    A pure function of ``spec`` and ``cfg``: the noise comes from ``spec.noise_seed``.
    Vectorised over frames: the shape's signed distance is evaluated on a [T, S, S] grid
    and turned into an anti-aliased coverage (1 px ramp) that blends colour over background.
    """
    s = cfg.size
    centres = object_path(spec, cfg).astype(np.float32)  # [T, 2]
    pix = np.arange(s, dtype=np.float32) + 0.5  # pixel centres
    x = pix[None, None, :] - centres[:, 0, None, None]  # [T, 1, S]
    y = pix[None, :, None] - centres[:, 1, None, None]  # [T, S, 1]
    dist = _sdf(spec.shape, x, y, SIZES[spec.size] * s)  # [T, S, S]
    alpha = np.clip(0.5 - dist, 0.0, 1.0)[..., None]  # [T, S, S, 1]
    colour = np.asarray(COLORS[spec.color], np.float32)
    frames = _background(spec.background, s)[None] * (1.0 - alpha) + colour * alpha
    if cfg.noise > 0:
        rng = np.random.default_rng(spec.noise_seed)
        frames += cfg.noise * rng.standard_normal(frames.shape, dtype=np.float32)
    out = np.clip(np.rint(frames), 0, 255).astype(np.uint8)
    if spec.reverse:
        out = np.ascontiguousarray(out[::-1])
    return out


def write_mp4(frames: np.ndarray, path: str | os.PathLike, fps: float, crf: int = 20) -> None:
    """Encode uint8 [T, H, W, 3] RGB frames to an h264/yuv420p mp4 with PyAV.

    The file is tagged as synthetic (container ``comment`` = :data:`SYNTH_TAG`).

    Single-threaded so that the output is deterministic (and because for tiny clips the
    thread start-up costs more than it saves).  ``crf=0`` is lossless in YUV space, so
    decoded frames are then a deterministic function of the input frames alone.
    """
    import av  # local import: PyAV is only needed when writing videos

    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ConfigError(
            f"write_mp4({path}): expected uint8 [T,H,W,3], got {frames.dtype} {frames.shape}"
        )
    t, h, w, _ = frames.shape
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), mode="w", format="mp4") as container:
        container.metadata["comment"] = SYNTH_TAG  # lets is_synthetic_footage tell it apart
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = (
            {"crf": str(crf), "preset": "veryfast", "threads": "1"}
            if crf
            else {"qp": "0", "preset": "veryfast", "threads": "1"}
        )
        stream.codec_context.thread_count = 1
        for frame in frames:  # the encoder API takes one frame at a time
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())  # flush


# ----------------------------------------------------------------------------- specs


def random_spec(
    rng: np.random.Generator, cfg: SynthConfig, direction: str | None = None
) -> ClipSpec:
    """Draw a random spec whose whole path stays inside the frame."""

    def pick(options):
        options = list(options)
        return options[int(rng.integers(len(options)))]

    shape, color, size = pick(SHAPES), pick(COLORS), pick(SIZES)
    background = pick(BACKGROUNDS)
    direction = direction or pick(cfg.directions)
    margin = SIZES[size] + 1.0 / cfg.size  # object radius + 1 px, as a fraction of the side
    start = []
    for d in DIRECTIONS[direction]:
        lo, hi = margin, 1.0 - margin
        if d > 0:
            hi -= cfg.travel
        elif d < 0:
            lo += cfg.travel
        # rounded so the json is short; rounding inward keeps the path inside the frame
        start.append(float(np.clip(round(float(rng.uniform(lo, hi)), 4), lo, hi)))
    noise_seed = int(rng.integers(2**31 - 1))
    return ClipSpec(shape, color, size, direction, (start[0], start[1]), background, noise_seed)
