"""Subtitles as timed text (vidclip/video/subtitles.py): sidecar SRT / WebVTT parsing that never
raises on content and warns once per file per kind, sidecar discovery, embedded text streams."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from vidclip.video.subtitles import (
    MAX_CUE_CHARS,
    MAX_FILE_BYTES,
    Cue,
    clean_text,
    collect_subtitles,
    find_sidecars,
    parse_srt,
    parse_subtitle_file,
    parse_vtt,
    read_embedded_subtitles,
)

SRT = """1
00:00:01,000 --> 00:00:02,500
<i>Hello</i> <font color="red">budget</font> &amp; world
second line {\\an8}here

2
00:00:02,000 --> 00:00:04,000
Overlapping speaker

3
01:02:03,250 --> 01:02:04,000
Late cue
"""


def _write(path, data):
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(data)
    return path


def test_srt_cues_times_lines_and_clean_text(tmp_path):
    cues, warnings = parse_srt(_write(tmp_path / "a.srt", SRT))
    assert warnings == []
    assert cues == [
        Cue(1.0, 2.5, "Hello budget & world second line here", 2),
        Cue(2.0, 4.0, "Overlapping speaker", 7),  # overlaps the first: legal, kept
        Cue(3723.25, 3724.0, "Late cue", 11),
    ]


def test_vtt_header_notes_settings_identifiers_and_voice_tags(tmp_path):
    vtt = ("WEBVTT - a title\n\nSTYLE\n::cue { color: yellow }\n\nNOTE a comment\nspanning lines\n\n"
           "intro\n00:01.000 --> 00:02.000 align:start position:10%\n<v Bob>Good</v> <c.loud>morning</c>\n\n"
           "00:00:03.000 --> 00:00:04.500\nkaraoke <00:00:03.500>words &lt;3\n")
    cues, warnings = parse_vtt(_write(tmp_path / "a.vtt", vtt))
    assert warnings == []
    assert cues == [Cue(1.0, 2.0, "Good morning", 10), Cue(3.0, 4.5, "karaoke words <3", 13)]


def test_clean_text_keeps_a_lone_less_than_sign():
    assert clean_text("a < b and c > d") == "a < b and c > d"
    assert clean_text("line one\\Nline two {\\i1}x{\\i0}") == "line one line two x"


def test_bom_and_crlf_and_cr_only(tmp_path):
    # A BOM right before a timing line: were it kept, that line would not parse (cue lost).
    body = "00:00:01,000 --> 00:00:02,000\r\nwith BOM\r\n\r\n00:00:03,000 --> 00:00:04,000\r\nsecond\r\n"
    cues, warnings = parse_srt(_write(tmp_path / "bom.srt", b"\xef\xbb\xbf" + body.encode()))
    assert warnings == []
    assert [(c.start, c.text, c.line) for c in cues] == [(1.0, "with BOM", 1), (3.0, "second", 4)]
    # Old Mac line ends (CR only) are lines too.
    cues, warnings = parse_srt(_write(tmp_path / "cr.srt", body.replace("\r\n", "\r")))
    assert warnings == [] and [c.text for c in cues] == ["with BOM", "second"]


def test_utf16_with_bom(tmp_path):
    cues, warnings = parse_srt(_write(tmp_path / "u16.srt", SRT.encode("utf-16")))
    assert warnings == [] and cues[0].text == "Hello budget & world second line here"


def test_wrong_encoding_falls_back_with_one_warning_naming_file_and_line(tmp_path):
    text = "1\n00:00:01,000 --> 00:00:02,000\nplain\n\n2\n00:00:03,000 --> 00:00:04,000\ncafé naïve €5\n\n" \
           "3\n00:00:05,000 --> 00:00:06,000\nencore été\n"
    path = _write(tmp_path / "win.srt", text.encode("cp1252"))
    cues, warnings = parse_srt(path)
    assert [c.text for c in cues] == ["plain", "café naïve €5", "encore été"]
    assert len(warnings) == 1, warnings  # several bad bytes, one warning
    assert str(path) in warnings[0] and "line 7" in warnings[0] and "cp1252" in warnings[0]
    # 0x81 is undefined in cp1252: latin-1 then, still one warning.
    cues, warnings = parse_srt(_write(tmp_path / "odd.srt", b"00:00:01,000 --> 00:00:02,000\nx\x81y\n"))
    assert len(cues) == 1 and len(warnings) == 1 and "latin-1" in warnings[0]


def test_bad_timestamps_skip_the_cue_and_warn_once(tmp_path):
    text = ("1\n00:00:01,000 --> 00:00:02,000\ngood one\n\n"
            "2\n00:00:0x,000 --> 00:00:03,000\nbad digits\n\n"
            "3\n00:75:00,000 --> 00:76:00,000\nminutes over 59\n\n"
            "4\n00:00:09,000 --> 00:00:08,000\nends before it starts\n\n"
            "5\n00:00:10,000 -> 00:00:11,000\nbroken arrow\n\n"
            "6\n00:00:12,000 --> 00:00:13,000\ngood two\n")
    path = _write(tmp_path / "bad.srt", text)
    cues, warnings = parse_srt(path)
    assert [c.text for c in cues] == ["good one", "good two"]  # no bad cue's text joins a good one
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"{path}: line 6: bad timing line") and "(and 3 more like it)" in warnings[0]


def test_missing_blank_line_between_cues_drops_only_the_number(tmp_path):
    text = "1\n00:00:01,000 --> 00:00:02,000\nfirst\n2\n00:00:03,000 --> 00:00:04,000\nsecond\n"
    cues, _ = parse_srt(_write(tmp_path / "tight.srt", text))
    assert [c.text for c in cues] == ["first", "second"]


def test_huge_cue_and_huge_file_are_bounded_with_one_warning_each(tmp_path):
    words = ("budget " * (10 * 1024 * 1024 // 7)).encode()  # a 10 MB cue
    data = b"1\n00:00:01,000 --> 00:00:02,000\nshort\n\n2\n00:00:03,000 --> 00:00:04,000\n" + words + b"\n"
    path = _write(tmp_path / "huge.srt", data)
    cues, warnings = parse_srt(path)
    assert [c.text for c in cues][0] == "short"
    assert len(cues) == 2 and len(cues[1].text) <= MAX_CUE_CHARS and cues[1].text.startswith("budget budget")
    assert len(warnings) == 2, warnings
    assert any("only the first 2 MB read" in w for w in warnings)
    assert any("line 6: cue text of" in w and f"cut to {MAX_CUE_CHARS}" in w for w in warnings)
    assert all(w.startswith(str(path)) for w in warnings)
    assert MAX_FILE_BYTES < len(data)


def test_empty_binary_and_cueless_files_warn_and_return_nothing(tmp_path):
    for name, data, expect in [("empty.srt", b"", "empty file"), ("blank.vtt", b"WEBVTT\n\n", "no WebVTT cues"),
                               ("bin.srt", b"\x00\x01\x02garbage", "not a text file")]:
        path = _write(tmp_path / name, data)
        cues, warnings = parse_subtitle_file(path)
        assert cues == [] and len(warnings) == 1 and expect in warnings[0] and str(path) in warnings[0]


def test_a_fifo_is_never_opened(tmp_path):
    fifo = tmp_path / "clip.srt"
    os.mkfifo(fifo)
    cues, warnings = parse_srt(fifo)  # opening it would block
    assert cues == [] and "not a regular file" in warnings[0]
    (tmp_path / "clip.mp4").write_bytes(b"x")
    assert find_sidecars(tmp_path / "clip.mp4") == []


def test_find_sidecars_same_stem_and_language_tags(tmp_path):
    names = ["clip.srt", "clip.vtt", "clip.en.srt", "clip.pt-BR.vtt", "clip.fr.SRT", "clip2.srt",
             "clip.final.srt", "other.srt", "clip.en.txt", "clip.mp4"]
    for n in names:
        (tmp_path / n).write_text("x")
    found = find_sidecars(tmp_path / "clip.mp4")
    assert [(s.path.name, s.language, s.format) for s in found] == [
        ("clip.en.srt", "en", "srt"), ("clip.fr.SRT", "fr", "srt"), ("clip.pt-BR.vtt", "pt-BR", "vtt"),
        ("clip.srt", None, "srt"), ("clip.vtt", None, "vtt")]
    # A given listing is used instead of scanning the folder (clip.en.srt is not in it).
    (tmp_path / "clip.de.vtt").write_text("x")
    assert [s.path.name for s in find_sidecars(tmp_path / "clip.mp4", ["clip.srt", "clip.de.vtt"])] == [
        "clip.de.vtt", "clip.srt"]


def test_a_tagged_name_that_is_another_videos_plain_sidecar_is_left_to_it(tmp_path):
    for n in ["clip.mp4", "clip.en.mp4", "clip.en.srt", "clip.de.srt"]:
        (tmp_path / n).write_text("x")
    assert [s.path.name for s in find_sidecars(tmp_path / "clip.mp4")] == ["clip.de.srt"]
    assert [s.path.name for s in find_sidecars(tmp_path / "clip.en.mp4")] == ["clip.en.srt"]


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    """Videos with an embedded subtitle stream written by ffmpeg: SubRip in Matroska, mov_text in
    MP4 starting at 5 s (cues must come back on the frame timeline), ASS in Matroska."""
    if not shutil.which("ffmpeg"):
        pytest.skip("no ffmpeg executable: cannot write a video with an embedded subtitle stream")
    root = tmp_path_factory.mktemp("embedded")
    srt = root / "in.srt"
    srt.write_text("1\n00:00:00,200 --> 00:00:00,800\n<i>Hello</i> budget\n\n"
                   "2\n00:00:01,000 --> 00:00:01,900\nsecond\ncue\n", encoding="utf-8")
    out = {}
    for name, codec, extra in [("srt.mkv", "srt", ["-metadata:s:s:0", "language=eng"]),
                               ("movtext.mp4", "mov_text", ["-output_ts_offset", "5"]),
                               ("ass.mkv", "ass", [])]:
        cmd = ["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=10:duration=2",
               "-i", str(srt), "-c:v", "mpeg4", "-c:s", codec, *extra, str(root / name)]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)
        out[name] = root / name
    return out


@pytest.mark.parametrize("name", ["srt.mkv", "movtext.mp4", "ass.mkv"])
def test_embedded_text_stream_is_read(embedded, name):
    tracks, warnings = read_embedded_subtitles(embedded[name])
    assert warnings == []
    assert len(tracks) == 1
    track = tracks[0]
    assert track.source == "stream 1"
    assert track.language == ("eng" if name == "srt.mkv" else None)
    assert [(c.start, c.end, c.text) for c in track.cues] == [(0.2, 0.8, "Hello budget"), (1.0, 1.9, "second cue")]


def test_collect_subtitles_sidecars_then_embedded(embedded, tmp_path):
    video = tmp_path / "show.mkv"
    shutil.copy(embedded["srt.mkv"], video)
    (tmp_path / "show.en.srt").write_text("00:00:05,000 --> 00:00:06,000\nfrom the sidecar\n")
    (tmp_path / "show.vtt").write_text("WEBVTT\n\n00:00:0x.000 --> 00:00:01.000\nbad\n")
    tracks, warnings = collect_subtitles(video)
    assert [(t.source, t.language, [c.text for c in t.cues]) for t in tracks] == [
        ("show.en.srt", "en", ["from the sidecar"]), ("stream 1", "eng", ["Hello budget", "second cue"])]
    assert len(warnings) == 1 and "show.vtt: line 3: bad timing line" in warnings[0]


def test_collect_subtitles_of_a_file_that_is_no_video(tmp_path):
    video = tmp_path / "fake.mp4"
    video.write_bytes(b"not a video at all")
    (tmp_path / "fake.srt").write_text("00:00:01,000 --> 00:00:02,000\nstill read\n")
    tracks, warnings = collect_subtitles(video)
    assert [t.source for t in tracks] == ["fake.srt"] and warnings == []


def test_subtitles_module_does_not_import_torch():
    code = "import sys, vidclip.video.subtitles; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "False"
