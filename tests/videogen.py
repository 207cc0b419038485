"""Test videos whose every frame carries its own index: see vidclip/synthetic/codedvideo.py.

The generator lives in the package so that tools (tools/bench_decode.py) use it without
importing from tests/; the tests keep importing it under this name.
"""

from vidclip.synthetic.codedvideo import (  # noqa: F401
    COLS,
    FORMATS,
    MAX_CODE,
    ROWS,
    CodedVideo,
    code_bits,
    ffmpeg_rotate_copy,
    make_audio_only,
    make_coded_video,
    paint_code,
    read_code,
    vfr_pts,
)
