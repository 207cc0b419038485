"""The synthetic world put into words: captions of clips, of scenes and of single frames.

Three grammars over one vocabulary (paraphrases of each size, shape, direction of motion):

- clip captions (:func:`caption_for`, :func:`video_captions`) name the object and its visible
  motion ("a small red circle moves to the left", "red dot going left"); the video datasets'
  captions (:mod:`vidclip.synthetic.datasets`);
- scene descriptions (:func:`scene_description`) name what one frame of a scene shows, no
  motion ("a large green square on a dark blue background"); the queries of ``vidclip demo``
  and of the rerank example;
- frame captions (:func:`frame_caption`, :func:`canonical_caption`) name a frame's object,
  background and the object's place on a 3x3 grid ("a small red circle in the top left on a
  gray background"), never motion, which one frame does not show; what ``vidclip-synth`` was
  pretrained on (:mod:`vidclip.train.pretrain`).

All draws come from the ``rng`` the caller passes: same generator state, same caption.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from vidclip.synthetic.world import BACKGROUNDS, COLORS, SHAPES, SIZES, ClipSpec

# ----------------------------------------------------------------------------- vocabulary

# Caption vocabulary: paraphrases of each attribute.
SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
SHAPE_WORDS = {
    "circle": ("circle", "ball", "dot", "disc"),
    "square": ("square", "box", "block"),
    "triangle": ("triangle",),
    "diamond": ("diamond", "rhombus"),
    "cross": ("cross", "plus sign"),
}
VERBS = ("moves", "travels", "slides", "drifts", "glides", "goes")
GERUNDS = ("moving", "travelling", "sliding", "drifting", "gliding", "going", "heading")
DIRECTION_WORDS = {
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
FROM_TO = {
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


# ----------------------------------------------------------------------------- clip captions


def article(word: str) -> str:
    """The indefinite article of ``word`` ("a" or "an"), by its first letter."""
    return "an" if word[0] in "aeiou" else "a"


def caption_for(spec: ClipSpec, rng: np.random.Generator, *, full: bool = False) -> str:
    """One paraphrased caption naming the object's colour and shape (usually its size) and
    its visible motion (:attr:`ClipSpec.motion`, i.e. after any reversal). ``full=True``
    uses only templates that name the size and the background too, so the caption
    describes everything that is visible."""

    def pick(options):
        return options[int(rng.integers(len(options)))]

    motion = spec.motion
    src, dst = FROM_TO[motion]
    size, color = pick(SIZE_WORDS[spec.size]), spec.color
    template = pick(_FULL_TEMPLATES if full else _TEMPLATES)
    return template.format(
        size=size,
        a_size=article(size),
        color=color,
        a_color=article(color),
        shape=pick(SHAPE_WORDS[spec.shape]),
        verb=pick(VERBS),
        gerund=pick(GERUNDS),
        dir=pick(DIRECTION_WORDS[motion]),
        src=src,
        dst=dst,
        bg=spec.background,
    )


def video_captions(spec: ClipSpec, n: int, rng: np.random.Generator) -> list[str]:
    """``n`` distinct captions (distinct when the vocabulary allows; 100 draws max).

    The first names every attribute (it is the one the test CSV uses)."""
    out: list[str] = [caption_for(spec, rng, full=True)]
    if n == 1:  # (the loop below appends before it checks the count)
        return out
    for _ in range(100):
        c = caption_for(spec, rng)
        if c not in out:
            out.append(c)
        if len(out) == n:
            return out
    while len(out) < n:  # tiny vocabularies only: repeat rather than fail
        out.append(caption_for(spec, rng))
    return out


def scene_description(spec: ClipSpec) -> str:
    """What a single frame of a scene shows, its object and background, e.g. "a large green
    square on a dark blue background" (no motion: that needs more than one frame)."""
    return (f"{article(spec.size)} {spec.size} {spec.color} {spec.shape} on "
            f"{article(spec.background)} {spec.background} background")


# ----------------------------------------------------------------------------- frame captions

#: Frame-level attributes, in the column order of :attr:`vidclip.train.pretrain.FrameSet.attrs`.
ATTRIBUTES = ("shape", "color", "size", "background", "position")

#: 3x3 position grid, row-major from the top left; index = 3 * row + column.
POSITIONS = ("top left", "top", "top right", "left", "center", "right", "bottom left", "bottom",
             "bottom right")

#: The values of each attribute, in index order (an attribute's index is its position here).
ATTRIBUTE_VALUES: dict[str, tuple[str, ...]] = {
    "shape": SHAPES, "color": tuple(COLORS), "size": tuple(SIZES), "background": tuple(BACKGROUNDS),
    "position": POSITIONS}

#: How each cell is said; the first phrase is the canonical (evaluation) one.
_WHERE = {
    "top left": ("in the top left", "at the top left"),
    "top right": ("in the top right", "at the top right"),
    "bottom left": ("in the bottom left", "at the bottom left"),
    "bottom right": ("in the bottom right", "at the bottom right"),
    "top": ("at the top", "near the top"),
    "bottom": ("at the bottom", "near the bottom"),
    "left": ("on the left", "at the left"),
    "right": ("on the right", "at the right"),
    "center": ("in the center", "in the middle"),
}
_PREFIXES = ("", "", "", "", "a picture of ", "a frame showing ", "there is ", "an image of ")
_FULL = "{pre}{a_size} {size} {color} {shape} {where} on {a_bg} {bg} background"
_PARTIAL = (
    "{pre}{a_size} {size} {color} {shape} {where}",
    "{pre}{a_color} {color} {shape} {where}",
    "{pre}{a_size} {size} {color} {shape} on {a_bg} {bg} background",
    "{pre}{a_color} {color} {shape}",
    "{pre}a {shape} {where}",
    "{pre}{a_color} {color} shape {where} on {a_bg} {bg} background",
    "the {shape} is {color} and {size}, {where}",
    "{pre}{a_size} {size} {shape} on {a_bg} {bg} background",
)


def position_index(centre: np.ndarray) -> np.ndarray:
    """Cell of the 3x3 grid (index into :data:`POSITIONS`) of object centres.

    Args:
        centre: float ``[..., 2]`` (x, y) as fractions of the frame side (x right, y down).
    Returns:
        int64 ``[...]``: ``3 * row + column``, thirds of the frame.
    """
    cell = np.clip(np.floor(np.asarray(centre, dtype=np.float64) * 3.0), 0, 2).astype(np.int64)
    return 3 * cell[..., 1] + cell[..., 0]


def _words(attrs: Sequence[int], rng: np.random.Generator | None) -> dict[str, str]:
    """Caption slot values for one frame; ``rng=None`` takes the first (canonical) paraphrase.

    The paraphrases are the clip captions' own (:data:`SHAPE_WORDS`, :data:`SIZE_WORDS`), so a
    text tower trained on frame captions knows every word the clip captions contain."""
    shape, color, size, bg, pos = (ATTRIBUTE_VALUES[a][int(i)] for a, i in zip(ATTRIBUTES, attrs))

    def pick(options):
        return options[0] if rng is None else options[int(rng.integers(len(options)))]

    size_w, bg_w = pick(SIZE_WORDS[size]), bg
    where = pick(_WHERE[pos])
    return {"pre": "" if rng is None else pick(_PREFIXES), "shape": pick(SHAPE_WORDS[shape]), "color": color,
            "a_color": article(color), "size": size_w, "a_size": article(size_w), "bg": bg_w,
            "a_bg": article(bg_w), "where": where}


def frame_caption(attrs: Sequence[int], rng: np.random.Generator, full_prob: float = 0.5) -> str:
    """A random caption of one frame: all five attributes with probability ``full_prob``,
    else a template naming some of them. ``attrs``: indices in :data:`ATTRIBUTES` order."""
    w = _words(attrs, rng)
    template = _FULL if rng.random() < full_prob else _PARTIAL[int(rng.integers(len(_PARTIAL)))]
    return template.format(**w)


def canonical_caption(attrs: Sequence[int]) -> str:
    """The evaluation caption: every attribute, first paraphrase, e.g.
    ``"a small red circle in the top left on a gray background"``."""
    return _FULL.format(**_words(attrs, None))
