"""A synthetic MSR-VTT-style world: coloured shapes moving across simple backgrounds.

Every clip shows one object (a shape with a colour and a size) moving in a straight line
in one of four (or eight, with diagonals) directions over a solid or gradient background,
with a little Gaussian pixel noise.  Each clip gets several paraphrased captions that name
the object and its motion ("a small red circle moves to the left", "red dot going left").

The *test* split is made of time-reversed twins: for every test clip there is a second
test clip holding exactly the same frames in reverse order, whose captions state the
opposite motion (left <-> right, up <-> down, up-left <-> down-right ...).  A model that
pools frames without regard to order (mean pooling) gives both twins the same embedding
and so cannot do better than chance between them; a temporal model can.  Train clips are
independent random specs with balanced directions, or, with ``train_twins=True``, twin
pairs as well, which is what teaches a contrastive model the direction of motion.

``make_synthetic_dataset`` writes the layout the MSR-VTT reader
(:func:`vidclip.data.datasets.load_dataset` with ``kind="msrvtt"``) reads unchanged::

    OUT/
      videos/videoN.mp4            h264 yuv420p, ``size`` x ``size``, ``num_frames`` at ``fps``
      MSRVTT_data.json             {"info", "videos": [...], "sentences": [...]} (official keys)
      MSRVTT_train.9k.csv          column ``video_id``: the train videos
      MSRVTT_JSFUSION_test.csv     key,vid_key,video_id,sentence: one caption per test video
      synth_meta.json              config, and per video: split, spec, motion, twin, captions

Output is deterministic for a seed: byte-identical json files and identical rendered frames.
Decoded frames are identical with ``crf=0`` (lossless); at the default crf the x264 build that
PyAV wheels ship is not bit-reproducible (two encodes of the same frames can differ by a few
grey levels). Written atomically (built in a temporary sibling folder, then renamed into place).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from vidclip.core.errors import ConfigError, DatasetError, display_path

META_VERSION = 1

#: Written into every synthetic mp4's container metadata (the ``comment`` tag) by
#: :func:`write_mp4`; :func:`is_synthetic_footage` looks for it.
SYNTH_TAG = "vidclip synthetic footage"

#: The shipped model trained on this world alone (vidclip/assets): it knows its shapes, colours
#: and backgrounds, nothing else.
SYNTH_MODEL = "vidclip-synth"

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

# Caption vocabulary: paraphrases of each attribute.
SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
SHAPE_WORDS = {
    "circle": ("circle", "ball", "dot", "disc"),
    "square": ("square", "box", "block"),
    "triangle": ("triangle",),
    "diamond": ("diamond", "rhombus"),
    "cross": ("cross", "plus sign"),
}
_VERBS = ("moves", "travels", "slides", "drifts", "glides", "goes")
_GERUNDS = ("moving", "travelling", "sliding", "drifting", "gliding", "going", "heading")
_DIR_WORDS = {
    "left": ("to the left", "left", "leftwards", "towards the left"),
    "right": ("to the right", "right", "rightwards", "towards the right"),
    "up": ("up", "upwards", "towards the top"),
    "down": ("down", "downwards", "towards the bottom"),
    "up-left": ("up and to the left", "diagonally up and left", "towards the top left"),
    "up-right": ("up and to the right", "diagonally up and right", "towards the top right"),
    "down-left": ("down and to the left", "diagonally down and left", "towards the bottom left"),
    "down-right": (
        "down and to the right",
        "diagonally down and right",
        "towards the bottom right",
    ),
}
#: (where the motion starts, where it ends) for "from the X to the Y" captions.
_FROM_TO = {
    "left": ("right", "left"),
    "right": ("left", "right"),
    "up": ("bottom", "top"),
    "down": ("top", "bottom"),
    "up-left": ("bottom right", "top left"),
    "up-right": ("bottom left", "top right"),
    "down-left": ("top right", "bottom left"),
    "down-right": ("top left", "bottom right"),
}
_TEMPLATES = (
    "{a_size} {size} {color} {shape} {verb} {dir}",
    "{color} {shape} {gerund} {dir}",
    "{a_size} {size} {color} {shape} {verb} {dir} across the frame",
    "{a_color} {color} {shape} {verb} from the {src} to the {dst}",
    "the {shape} is {color} and {size}, and it {verb} {dir}",
    "{a_size} {size} {color} {shape} {gerund} {dir} on a {bg} background",
    "a video of {a_color} {color} {shape} {gerund} {dir}",
    "{a_size} {size} {color} {shape} {verb} from the {src} to the {dst} over a {bg} background",
)

#: Templates naming every attribute (size, colour, shape, motion, background): a test caption
#: describes its clip completely, so anything a model gets wrong is its own misreading.
_FULL_TEMPLATES = tuple(t for t in _TEMPLATES if "{size}" in t and "{bg}" in t)


# ----------------------------------------------------------------------------- config / spec


@dataclass
class SynthConfig:
    """Parameters of the synthetic world.  Every field is written to ``synth_meta.json``."""

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
    # Train clips in time-reversed twin pairs too (see _plan): the only way a contrastive batch
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


# ----------------------------------------------------------------------------- captions


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def caption_for(spec: ClipSpec, rng: np.random.Generator, *, full: bool = False) -> str:
    """One paraphrased caption naming the object's colour and shape (usually its size) and
    its visible motion (:attr:`ClipSpec.motion`, i.e. after any reversal). ``full=True``
    uses only templates that name the size and the background too, so the caption
    describes everything that is visible."""

    def pick(options):
        return options[int(rng.integers(len(options)))]

    motion = spec.motion
    src, dst = _FROM_TO[motion]
    size, color = pick(SIZE_WORDS[spec.size]), spec.color
    template = pick(_FULL_TEMPLATES if full else _TEMPLATES)
    return template.format(
        size=size,
        a_size=_article(size),
        color=color,
        a_color=_article(color),
        shape=pick(SHAPE_WORDS[spec.shape]),
        verb=pick(_VERBS),
        gerund=pick(_GERUNDS),
        dir=pick(_DIR_WORDS[motion]),
        src=src,
        dst=dst,
        bg=spec.background,
    )


def _captions(spec: ClipSpec, n: int, rng: np.random.Generator) -> list[str]:
    """``n`` distinct captions (distinct when the vocabulary allows; 100 draws max).

    The first names every attribute (it is the one the test CSV uses)."""
    out: list[str] = [caption_for(spec, rng, full=True)]
    for _ in range(100):
        c = caption_for(spec, rng)
        if c not in out:
            out.append(c)
        if len(out) == n:
            return out
    while len(out) < n:  # tiny vocabularies only: repeat rather than fail
        out.append(caption_for(spec, rng))
    return out


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


def _plan(cfg: SynthConfig) -> list[dict[str, Any]]:
    """Specs, splits, twins and captions of every video, drawn from ``cfg.seed`` alone."""
    rng = np.random.default_rng(cfg.seed)
    num_train, num_test = cfg.split_counts()
    dirs = cfg.directions
    # Balanced directions: each direction appears (almost) equally often in train and in
    # the test originals, so the train set always has both of every opposite pair.
    train_dirs = [dirs[i % len(dirs)] for i in range(num_train)]
    rng.shuffle(train_dirs)
    test_dirs = [dirs[i % len(dirs)] for i in range(num_test // 2)]
    rng.shuffle(test_dirs)

    plan: list[dict[str, Any]] = []
    if cfg.train_twins:
        # Each random clip is followed by its time-reversed twin (an odd count ends with one
        # single clip). Independent clips almost never put two clips that differ only in the
        # direction of motion into one training batch, so a contrastive loss is minimised by the
        # object's attributes alone and order-aware modules never have to learn direction.
        for k in range(num_train // 2):
            spec = random_spec(rng, cfg, train_dirs[k])
            a, b = f"video{2 * k}", f"video{2 * k + 1}"
            plan.append({"video_id": a, "split": "train", "spec": spec, "twin": b})
            plan.append({"video_id": b, "split": "train", "spec": spec.twin(), "twin": a})
        if num_train % 2:
            spec = random_spec(rng, cfg, train_dirs[-1])
            plan.append({"video_id": f"video{num_train - 1}", "split": "train", "spec": spec, "twin": None})
    else:
        for i, d in enumerate(train_dirs):
            plan.append(
                {
                    "video_id": f"video{i}",
                    "split": "train",
                    "spec": random_spec(rng, cfg, d),
                    "twin": None,
                }
            )
    # Test pairs differ in (shape, colour, size, motion axis) whenever the world has enough
    # combinations, so that a full caption singles out one pair and only the direction of
    # motion tells the two twins apart.
    used: set[tuple] = set()
    for k, d in enumerate(test_dirs):
        a, b = f"video{num_train + 2 * k}", f"video{num_train + 2 * k + 1}"
        for _ in range(200):
            spec = random_spec(rng, cfg, d)
            key = (spec.shape, spec.color, spec.size, frozenset((d, spec.twin().motion)))
            if key not in used:
                break
        used.add(key)
        plan.append({"video_id": a, "split": "test", "spec": spec, "twin": b})
        plan.append({"video_id": b, "split": "test", "spec": spec.twin(), "twin": a})
    # Captions come from their own stream so that changing captions_per_video leaves the
    # specs (and so the videos) of a seed unchanged.
    cap_rng = np.random.default_rng([cfg.seed, 1])
    for item in plan:
        item["captions"] = _captions(item["spec"], cfg.captions_per_video, cap_rng)
    return plan


# ----------------------------------------------------------------------------- writing


def _dump_json(obj: Any, path: Path) -> None:
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.write_text(buf.getvalue(), encoding="utf-8")


def make_synthetic_dataset(
    out_dir: str | os.PathLike,
    cfg: SynthConfig | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Render, encode and write a synthetic MSR-VTT-style dataset to ``out_dir``.

    Returns a summary: ``root``, ``videos_dir``, ``data_json``, ``train_csv``, ``test_csv``,
    ``meta_json`` (paths as str), ``num_videos``, ``num_train``, ``num_test``,
    ``num_captions`` and ``seconds`` (wall time).  Raises :class:`DatasetError` if
    ``out_dir`` exists and is not empty, unless ``overwrite=True``.
    """
    cfg = cfg or SynthConfig()
    t0 = time.perf_counter()
    out = Path(out_dir).absolute()
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise DatasetError(
            f"{out}: already exists and is not empty (pass overwrite=True to replace it)"
        )
    out.parent.mkdir(parents=True, exist_ok=True)

    plan = _plan(cfg)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        (tmp / "videos").mkdir()
        from vidclip.core.progress import progress_iter

        for item in progress_iter(plan, desc="synth videos", unit="video", disable=not progress):
            write_mp4(
                render_clip(item["spec"], cfg),
                tmp / "videos" / f"{item['video_id']}.mp4",
                cfg.fps,
                cfg.crf,
            )

        duration = cfg.num_frames / cfg.fps
        videos, sentences = [], []
        for item in plan:
            vid = item["video_id"]
            videos.append(
                {
                    "category": SHAPES.index(
                        item["spec"].shape
                    ),  # MSR-VTT has 20 genres; we use the shape
                    "url": "",
                    "video_id": vid,
                    "start time": 0.0,
                    "end time": duration,
                    "split": item["split"],
                    "id": int(vid[len("video") :]),
                }
            )
            for cap in item["captions"]:
                sentences.append({"caption": cap, "video_id": vid, "sen_id": len(sentences)})
        info = {
            "description": "vidclip synthetic moving-shapes dataset (MSR-VTT layout)",
            "version": META_VERSION,
            "seed": cfg.seed,
        }
        _dump_json(
            {"info": info, "videos": videos, "sentences": sentences}, tmp / "MSRVTT_data.json"
        )

        train = [it for it in plan if it["split"] == "train"]
        test = [it for it in plan if it["split"] == "test"]
        _write_csv(tmp / "MSRVTT_train.9k.csv", ["video_id"], [[it["video_id"]] for it in train])
        _write_csv(
            tmp / "MSRVTT_JSFUSION_test.csv",
            ["key", "vid_key", "video_id", "sentence"],
            [
                [
                    f"ret{k}",
                    "msr" + it["video_id"][len("video") :],
                    it["video_id"],
                    it["captions"][0],
                ]
                for k, it in enumerate(test)
            ],
        )
        meta = {
            "version": META_VERSION,
            "config": dataclasses.asdict(cfg),
            "videos": [
                {
                    "video_id": it["video_id"],
                    "split": it["split"],
                    "motion": it["spec"].motion,
                    "twin": it["twin"],
                    "spec": it["spec"].to_dict(),
                    "captions": it["captions"],
                }
                for it in plan
            ],
        }
        _dump_json(meta, tmp / "synth_meta.json")

        # Commit: move any old tree aside, rename the finished one into place, drop the old.
        old = None
        if out.exists():
            if out.is_dir() and not any(out.iterdir()):
                out.rmdir()
            else:
                old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
                os.replace(out, old / "x")
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    return {
        "root": str(out),
        "videos_dir": str(out / "videos"),
        "data_json": str(out / "MSRVTT_data.json"),
        "train_csv": str(out / "MSRVTT_train.9k.csv"),
        "test_csv": str(out / "MSRVTT_JSFUSION_test.csv"),
        "meta_json": str(out / "synth_meta.json"),
        "num_videos": len(plan),
        "num_train": len(train),
        "num_test": len(test),
        "num_captions": len(sentences),
        "seconds": round(time.perf_counter() - t0, 2),
    }


def load_synth_meta(root: str | os.PathLike) -> dict[str, Any]:
    """Read ``root/synth_meta.json``; each video entry's ``spec`` is returned as a
    :class:`ClipSpec` and ``config`` as a :class:`SynthConfig` (so frames can be re-rendered)."""
    path = Path(root) / "synth_meta.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"{path}: not found (is {root} a synthetic dataset?)") from None
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: invalid JSON: {e}") from None
    if meta.get("version") != META_VERSION:
        raise DatasetError(f"{path}: version {meta.get('version')!r}, expected {META_VERSION}")
    try:
        meta["config"] = SynthConfig(**meta["config"])
        for i, v in enumerate(meta["videos"]):
            try:
                v["spec"] = ClipSpec.from_dict(v["spec"])
            except (KeyError, TypeError, ConfigError) as e:
                raise DatasetError(f"{path}: videos[{i}].spec: {e}") from None
    except (KeyError, TypeError, ConfigError) as e:
        raise DatasetError(f"{path}: malformed: {e}") from None
    return meta


# ----------------------------------------------------------------------------- scene libraries

#: The clips of a scene library (``vidclip demo``, ``python -m vidclip.synthetic.rerank_example``).
SCENE_CONFIG = SynthConfig(size=64, num_frames=24, fps=8.0)
#: Length of one scene of a scene library: 24 frames at 8 fps.
SCENE_SECONDS = SCENE_CONFIG.num_frames / SCENE_CONFIG.fps


def scene_description(spec: ClipSpec) -> str:
    """What a single frame of a scene shows, its object and background, e.g. "a large green
    square on a dark blue background" (no motion: that needs more than one frame)."""
    return (f"{_article(spec.size)} {spec.size} {spec.color} {spec.shape} on "
            f"{_article(spec.background)} {spec.background} background")


@dataclass(frozen=True)
class SceneVideo:
    """One video of a scene library: ``name`` (``sceneNNN.mp4``), its scenes ``specs`` in order
    (:data:`SCENE_SECONDS` each) and, when asked for, one full caption per scene."""

    name: str
    specs: tuple[ClipSpec, ...]
    captions: tuple[str, ...] = ()


def write_scene_library(library: str | os.PathLike, num_videos: int, scenes_per_video: int, seed: int,
                        *, captions: bool = False) -> list[SceneVideo]:
    """Write ``num_videos`` mp4 files of ``scenes_per_video`` random scenes each into ``library``.

    Every video's scenes are drawn from one random stream seeded with ``seed``; with
    ``captions=True`` each video's full captions (:func:`caption_for` ``full=True``) are drawn
    from that same stream right after its scenes, so a library with captions holds other videos
    (after the first) than one without: each caller keeps its own, fixed, rule. Same arguments,
    same specs and captions. Existing files are kept, so a second run reuses the library (and
    whatever was indexed from it); a new file is written beside its place and renamed into it.
    """
    cfg = SCENE_CONFIG
    library = Path(library)
    rng = np.random.default_rng(seed)
    library.mkdir(parents=True, exist_ok=True)
    videos = []
    for v in range(num_videos):
        specs = tuple(random_spec(rng, cfg) for _ in range(scenes_per_video))
        texts = tuple(caption_for(spec, rng, full=True) for spec in specs) if captions else ()
        name = f"scene{v:03d}.mp4"
        path = library / name
        if not path.exists():
            tmp = library / f".{name}.tmp.mp4"
            write_mp4(np.concatenate([render_clip(s, cfg) for s in specs]), tmp, cfg.fps)
            tmp.replace(path)
        videos.append(SceneVideo(name, specs, texts))
    return videos


# ----------------------------------------------------------------------------- detection

#: How many video files of a folder :func:`is_synthetic_footage` inspects.
_DETECT_SAMPLE = 8
_VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v")


def _has_synth_tag(path: Path) -> bool:
    """True when the container's ``comment`` tag is :data:`SYNTH_TAG` (header read only)."""
    import av  # local import: PyAV is only needed when looking at videos

    try:
        with av.open(str(path)) as container:
            return container.metadata.get("comment", "") == SYNTH_TAG
    except (OSError, ValueError, av.error.FFmpegError):  # unreadable: not ours
        return False


def _listed_in_synth_meta(path: Path) -> bool:
    """True for ``ROOT/videos/<video_id>.mp4`` whose ROOT's synth_meta.json lists it (files
    written before :func:`write_mp4` tagged them)."""
    meta = path.parent.parent / "synth_meta.json"
    if path.parent.name != "videos" or not meta.is_file():
        return False
    try:
        listed = json.loads(meta.read_text(encoding="utf-8")).get("videos", [])
        return any(v.get("video_id") == path.stem for v in listed)
    except (OSError, ValueError, AttributeError):
        return False


def is_synthetic_footage(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds footage made by this module (what ``vidclip-synth`` knows).

    The rule, cheapest first:

    - a folder that is a synthetic dataset root (it has ``synth_meta.json``), or its
      ``videos/`` folder, is synthetic;
    - a video file is synthetic when its container carries the :data:`SYNTH_TAG` comment that
      :func:`write_mp4` writes, or when it is ``ROOT/videos/<id>.mp4`` of a dataset root whose
      ``synth_meta.json`` lists ``<id>`` (datasets written before the tag existed);
    - any other folder is synthetic when it holds video files and the first
      ``_DETECT_SAMPLE`` of them (sorted, searched recursively) are all synthetic.

    Missing or unreadable paths are not synthetic. Never raises for a bad path; reads only
    container headers (a few ms per file), never decodes, and does not import torch.
    """
    p = Path(path)
    try:
        if p.is_dir():
            if (p / "synth_meta.json").is_file():
                return True
            if p.name == "videos" and (p.parent / "synth_meta.json").is_file():
                return True
            sample: list[Path] = []
            for f in sorted(p.rglob("*")):
                if f.suffix.lower() in _VIDEO_SUFFIXES and f.is_file():
                    sample.append(f)
                    if len(sample) == _DETECT_SAMPLE:
                        break
            return bool(sample) and all(is_synthetic_footage(f) for f in sample)
        if not p.is_file():
            return False
    except OSError:
        return False
    return _has_synth_tag(p) or _listed_in_synth_meta(p)


def synthetic_model_warning(model_name: str, footage: str | os.PathLike) -> str | None:
    """The one line to show when the synthetic-domain model (:data:`SYNTH_MODEL`) is used on
    ``footage`` (a file or folder) that :func:`is_synthetic_footage` says is not synthetic;
    None when there is nothing to say (another model, or synthetic footage)."""
    if model_name != SYNTH_MODEL or is_synthetic_footage(footage):
        return None
    return (f"warning: {SYNTH_MODEL} knows only the synthetic shapes world of `vidclip synth`; "
            f"its scores mean nothing on {display_path(footage)}")
