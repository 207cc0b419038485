"""Files that are not plain videos, header-only probing, the pixel limit, light imports, and
the CLI verbs around them (issue 7): each message names the file and says what is wrong."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
from videogen import make_coded_video

from vidclip.cli.main import main
from vidclip.core.errors import ConfigError, VideoDecodeError
from vidclip.video import SamplerConfig, open_video, probe, sample_video
from vidclip.video.files import find_videos

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(os.path.dirname(__file__)),
                                                     os.environ.get("PYTHONPATH", "")])}


def run_py(code: str, *args, stdin: str | None = None, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout,
                          input=stdin, env=ENV)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    d = tmp_path_factory.mktemp("small")
    return make_coded_video(d / "a.mp4", 40, size=(96, 64), gop=10)


# ----------------------------------------------------------------------------- light imports


def test_import_video_and_probe_do_not_import_torch(small):
    code = textwrap.dedent("""
        import sys, json
        import vidclip.video
        after_import = 'torch' in sys.modules
        from vidclip.cli.main import main
        rc = main(['probe', sys.argv[1], '--json'])
        print(json.dumps([after_import, 'torch' in sys.modules, 'decord' in sys.modules, rc]))
    """)
    proc = run_py(code, str(small.path))
    assert proc.returncode == 0, proc.stderr
    flags = json.loads(proc.stdout.strip().splitlines()[-1])
    assert flags == [False, False, False, 0]


# ----------------------------------------------------------------------------- bad files


@pytest.fixture
def odd_files(tmp_path, small):
    d = tmp_path / "lib"
    (d / "sub").mkdir(parents=True)
    shutil.copy(small.path, d / "good.mp4")
    os.symlink("loop.mp4", d / "loop.mp4")
    os.symlink("nowhere.mp4", d / "dangling.mp4")
    os.mkfifo(d / "fifo.mp4")
    os.symlink("/dev/zero", d / "zero.mp4")
    os.symlink(d, d / "sub" / "up")  # a folder that contains itself
    (d / "notes.txt").write_text("not a video, ignored\n")
    return d


@pytest.mark.parametrize("name,reason", [
    ("loop.mp4", "symbolic link loop"),
    ("dangling.mp4", "dangling symbolic link"),
    ("fifo.mp4", "not a regular file: a FIFO"),
    ("zero.mp4", "not a regular file: a character device"),
])
def test_odd_files_are_named_for_what_they_are(odd_files, name, reason):
    for fn in (lambda p: probe(p), lambda p: sample_video(p, SamplerConfig(num_frames=2))):
        with pytest.raises(VideoDecodeError) as e:
            fn(odd_files / name)  # a FIFO must not block: it is never opened
        assert reason in e.value.reason and name in str(e.value)


def test_find_videos_reports_each_problem(odd_files):
    found, problems = find_videos([odd_files, odd_files / "missing.mp4"])
    assert [k for k, _ in found] == ["good.mp4"]
    reasons = {os.path.basename(p): r for p, r in problems}
    assert "symbolic link loop" in reasons["loop.mp4"]
    assert "dangling" in reasons["dangling.mp4"]
    assert "FIFO" in reasons["fifo.mp4"] and "character device" in reasons["zero.mp4"]
    assert "loop" in reasons["up"]
    assert reasons["missing.mp4"] == "file not found"
    assert "notes.txt" not in reasons


def test_cli_encode_reports_scan_problems_one_line_each_and_missing_creates_nothing(odd_files, tmp_path):
    bad = odd_files / "..."  # odd name on purpose: does not exist
    out = tmp_path / "store"
    rc = main(["encode", str(bad), "--out", str(out), "--model", "tiny-vit", "--pretrained", "none"])
    assert rc == 2 and not out.exists()

    name = "new\nline.mp4"
    shutil.copy(odd_files / "good.mp4", odd_files / name)
    proc = subprocess.run([sys.executable, "-m", "vidclip", "encode", str(odd_files), "--out", str(out),
                           "--model", "tiny-vit", "--pretrained", "none", "--workers", "0", "--quiet"],
                          capture_output=True, text=True, timeout=300, env=ENV)
    assert proc.returncode == 1, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("vidclip encode: ") and "RANDOM" not in ln]
    assert len(lines) == 5, proc.stderr  # loop, dangling, fifo, zero, folder loop
    assert "Traceback" not in proc.stderr and "encoded 2 videos" in proc.stdout


# ----------------------------------------------------------------------------- probe, pixel limit


@pytest.mark.skipif(shutil.which("ffmpeg") is None or not os.path.exists("/proc/self/status"),
                    reason="needs an ffmpeg executable and Linux /proc")
def test_probe_of_a_huge_picture_reads_the_header_and_decoding_is_refused(tmp_path):
    big = tmp_path / "big.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "color=black:s=8192x8192:d=0.08",
                    "-frames:v", "2", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(big)],
                   check=True, timeout=120)
    code = textwrap.dedent("""
        import sys, json
        from vidclip.cli.main import main
        rc = main(['probe', sys.argv[1], '--json'])
        # VmHWM: this process's peak RSS (getrusage's ru_maxrss would include the parent's before exec)
        hwm = [ln for ln in open('/proc/self/status') if ln.startswith('VmHWM')][0].split()[1]
        print(json.dumps([rc, int(hwm)]))
    """)
    proc = run_py(code, str(big))
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout[: proc.stdout.rindex("}") + 1])
    rc, peak_kb = json.loads(proc.stdout.strip().splitlines()[-1])
    assert rc == 0 and (info["width"], info["height"], info["num_frames"]) == (8192, 8192, 2)
    # One decoded 8192x8192 frame alone is 100 MB as YUV and 200 MB as RGB; the old probe peaked at 3 GB.
    assert peak_kb < 400 * 1024, peak_kb
    with pytest.raises(VideoDecodeError, match="over the decoding limit"):
        open_video(big)
    with open_video(big, backend="pyav", max_pixels=8192 * 8192) as r:
        assert r.info.width == 8192


# ----------------------------------------------------------------------------- cut files


def test_file_cut_mid_stream_warns_once(tmp_path):
    v = make_coded_video(tmp_path / "long.mkv", 300, size=(96, 64), gop=30)
    data = v.path.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) * 6 // 10])
    for info in (probe(cut), sample_video(cut, SamplerConfig(num_frames=4)).info):
        assert len(info.warnings) == 1 and "cut.mkv" in info.warnings[0] and "10.00 s" in info.warnings[0]
    assert probe(v.path).warnings == []
    out = tmp_path / "frames"
    proc = subprocess.run([sys.executable, "-m", "vidclip", "frames", str(cut), "--out", str(out)],
                          capture_output=True, text=True, timeout=120, env=ENV)
    assert proc.returncode == 0
    assert [ln for ln in proc.stderr.splitlines() if ln] == [f"vidclip frames: warning: {info.warnings[0]}"]


def _cut_avi_infos(path):
    infos = [probe(path), sample_video(path, SamplerConfig(num_frames=4)).info]
    for backend in ("pyav", "decord"):
        with open_video(path, backend=backend) as r:
            infos.append(r.info)
    return infos


@pytest.mark.parametrize("keep", [0.5, 0.6])
def test_avi_cut_mid_stream_warns_like_mkv(tmp_path, capsys, keep):
    """An AVI's index (idx1) is at its end: a cut file has none, and FFmpeg then re-estimates the
    duration from the file size (5 s of 10 at 50%), so the cut went unnoticed. The stream header's
    frame count still says 10 s: the same one-line warning as a cut MKV or MP4."""
    v = make_coded_video(tmp_path / "long.avi", 300, size=(96, 64), gop=30)
    data = v.path.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: int(len(data) * keep)])
    for info in _cut_avi_infos(cut):
        assert info.num_frames < 300
        assert len(info.warnings) == 1 and "cut.avi" in info.warnings[0] and "10.00 s" in info.warnings[0], info
    assert main(["frames", str(cut), "--num-frames", "2", "--out", str(tmp_path / "frames")]) == 0
    assert [ln for ln in capsys.readouterr().err.splitlines() if ln] == [f"vidclip frames: warning: {info.warnings[0]}"]
    # The whole file, and one that lost only its index (every frame is there): no warning.
    no_index = tmp_path / "no_index.avi"
    no_index.write_bytes(data[: data.rindex(b"idx1")])
    for f in (v.path, no_index):
        assert all(info.warnings == [] and info.num_frames == 300 for info in _cut_avi_infos(f)), f


@pytest.mark.shared
def test_real_avi_cut_in_half_warns(shared_dir, tmp_path):
    avis = sorted((shared_dir / "videos").glob("*.avi"))
    if not avis:
        pytest.skip(f"no .avi in {shared_dir / 'videos'}")
    for src in avis:
        data = src.read_bytes()
        cut = tmp_path / src.name
        cut.write_bytes(data[: len(data) // 2])
        whole = probe(src)
        assert whole.warnings == [], src
        for info in _cut_avi_infos(cut):
            assert len(info.warnings) == 1 and f"{whole.duration:.2f} s" in info.warnings[0], (src, info)


# ----------------------------------------------------------------------------- frames folders


def test_frames_of_same_named_videos_get_their_own_folders(tmp_path, small):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        shutil.copy(small.path, tmp_path / sub / "clip.mp4")
    shutil.copy(small.path, tmp_path / "a" / "clip.mkv")  # same stem, same folder
    out = tmp_path / "o"
    videos = [str(tmp_path / "a" / "clip.mp4"), str(tmp_path / "b" / "clip.mp4"), str(tmp_path / "a" / "clip.mkv")]
    assert main(["frames", *videos, "--num-frames", "2", "--out", str(out)]) == 0
    manifests = {json.loads(p.read_text())["video"]: p.parent.relative_to(out).as_posix()
                 for p in out.rglob("frames.json")}
    assert manifests == {videos[0]: "a/clip.mp4", videos[1]: "b/clip", videos[2]: "a/clip.mkv"}


# ----------------------------------------------------------------------------- sampler fields


@pytest.mark.parametrize("field,value", [("train", "no"), ("seed", "x"), ("seed", 1.5), ("num_frames", 0),
                                         ("fps", float("nan")), ("window", -1.0), ("stride", 0)])
def test_sampler_config_names_the_bad_field(field, value):
    with pytest.raises(ConfigError, match=field):
        SamplerConfig(**{field: value})


def test_cli_sampler_errors_are_one_line(small, tmp_path, capsys):
    assert main(["frames", str(small.path), "--num-frames", "0", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "num_frames" in err[0]


# ----------------------------------------------------------------------------- FFmpeg log noise


def _damaged_mkv(tmp_path):
    v = make_coded_video(tmp_path / "src.mkv", 100, size=(96, 64), gop=10)
    data = bytearray(v.path.read_bytes())
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(bytes(data[: len(data) // 2]))
    for i in range(2000, len(data), 97):  # flip bytes all through the clusters
        data[i] ^= 0xFF
    garbled = tmp_path / "garbled.mkv"
    garbled.write_bytes(bytes(data))
    return cut, garbled


def test_ffmpeg_log_lines_never_reach_the_terminal(tmp_path):
    cut, garbled = _damaged_mkv(tmp_path)
    # Control: decord's bundled FFmpeg does print "[matroska,webm @ 0x...]" lines on these files.
    raw = run_py("import decord, sys\nfor p in sys.argv[1:]:\n    r = decord.VideoReader(p)\n"
                 "    try: r.get_batch(list(range(len(r)))).asnumpy()\n    except Exception: pass\n",
                 str(cut), str(garbled))
    assert " @ 0x" in raw.stderr
    for backend in ("decord", "pyav", "auto"):
        for verb in (["probe"], ["frames", "--out", str(tmp_path / f"o_{backend}"), "--num-frames", "8"]):
            for f in (cut, garbled):
                proc = subprocess.run([sys.executable, "-m", "vidclip", verb[0], str(f), *verb[1:],
                                       "--backend", backend], capture_output=True, text=True, timeout=120, env=ENV)
                lines = [ln for ln in proc.stderr.splitlines() if ln]
                assert " @ 0x" not in proc.stderr, (backend, verb, f.name, proc.stderr)
                assert all(ln.startswith(f"vidclip {verb[0]}: ") and f.name in ln for ln in lines), lines
                assert "/github/workspace" not in proc.stderr and "threaded_decoder" not in proc.stderr, lines
