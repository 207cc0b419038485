"""Samplers (pure index math): hand-computed cases plus a slow reference on random inputs."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from vidclip.core.errors import ConfigError
from vidclip.video.decode import video_end
from vidclip.video.sample import SampleError, SamplerConfig, Window, plan_sample


def cfr(n, fps=30.0):
    return np.arange(n, dtype=np.float64) / fps


# ----------------------------------------------------------------------------- reference code
# Deliberately naive: loops, Fractions, no searchsorted - an independent statement of the spec.


def ref_uniform_eval(f, n):
    if f < n:
        return list(range(f)) + [f - 1] * (n - f), [True] * f + [False] * (n - f)
    return [math.floor((Fraction(k) + Fraction(1, 2)) * f / n) for k in range(n)], [True] * n


def ref_shown(ts, t):
    best = 0
    for i, p in enumerate(ts):
        if p <= t + 1e-6:
            best = i
    return best


def ref_grid(ts, rate):
    end = video_end(ts)
    times, k = [], 0
    while True:
        t = ts[0] + k / rate
        if k > 0 and not t < end - 1e-6:
            break
        times.append(t)
        k += 1
    return times


def ref_fps(ts, rate, cap=None):
    times = ref_grid(ts, rate)
    if cap is not None and len(times) > cap:
        g = len(times)
        times = [times[math.floor((Fraction(k) + Fraction(1, 2)) * g / cap)] for k in range(cap)]
    return [ref_shown(ts, t) for t in times]


def ref_windows(ts, rate, w, s):
    end = video_end(ts)
    wins, j = [], 0
    while True:
        a = ts[0] + j * s
        if j > 0 and a >= end - 1e-6:
            break
        wins.append((a, min(a + w, end)))
        if a + w >= end - 1e-6:
            break
        j += 1
    times = ref_grid(ts, rate)
    for a, b in wins:
        if not any(a - 1e-6 <= t < b - 1e-6 for t in times):
            times.append(a)
    times.sort()
    out = []
    for a, b in wins:
        inside = [i for i, t in enumerate(times) if a - 1e-6 <= t < b - 1e-6]
        assert inside == list(range(inside[0], inside[-1] + 1))  # contiguous by construction
        out.append((a, b, inside[0], len(inside)))
    return [ref_shown(ts, t) for t in times], out


# ----------------------------------------------------------------------------- uniform


def test_uniform_eval_hand_computed():
    # F=10, N=4: floor((k+.5)*2.5) = floor(1.25, 3.75, 6.25, 8.75)
    s = plan_sample(cfr(10), SamplerConfig("uniform", num_frames=4))
    assert s.indices.tolist() == [1, 3, 6, 8]
    assert s.mask.all() and s.windows is None
    np.testing.assert_array_equal(s.timestamps, cfr(10)[[1, 3, 6, 8]])
    assert s.indices.dtype == np.int64 and s.timestamps.dtype == np.float64


def test_uniform_exact_multiple_and_equal_counts():
    assert plan_sample(cfr(12), SamplerConfig(num_frames=12)).indices.tolist() == list(range(12))
    # F=300, N=12: segment length 25, middle = 12 + 25k
    assert plan_sample(cfr(300), SamplerConfig(num_frames=12)).indices.tolist() == [12 + 25 * k for k in range(12)]


def test_uniform_pads_short_videos():
    s = plan_sample(cfr(3), SamplerConfig(num_frames=6))
    assert s.indices.tolist() == [0, 1, 2, 2, 2, 2]
    assert s.mask.tolist() == [True, True, True, False, False, False]
    np.testing.assert_array_equal(s.timestamps, cfr(3)[[0, 1, 2, 2, 2, 2]])


def test_uniform_train_stays_in_segments_and_is_seeded():
    ts = cfr(23)
    cfg = SamplerConfig("uniform", num_frames=5, train=True, seed=3)
    a = plan_sample(ts, cfg)
    assert a.indices.tolist() == plan_sample(ts, cfg).indices.tolist()  # seeded
    seen = [set() for _ in range(5)]
    rng = np.random.default_rng(0)
    for _ in range(300):
        idx = plan_sample(ts, cfg, rng=rng).indices
        for k, i in enumerate(idx.tolist()):
            # segment k = [k*23/5, (k+1)*23/5)
            assert Fraction(k * 23, 5) <= i < Fraction((k + 1) * 23, 5)
            seen[k].add(i)
    # every integer of every segment gets drawn: 0-4, 5-9, 10-13, 14-18, 19-22
    assert [sorted(x) for x in seen] == [list(range(0, 5)), list(range(5, 10)), list(range(10, 14)),
                                         list(range(14, 19)), list(range(19, 23))]


@pytest.mark.parametrize("f,n", [(1, 1), (1, 4), (7, 7), (8, 3), (100, 12), (5400, 12), (13, 12)])
def test_uniform_matches_reference(f, n):
    s = plan_sample(cfr(f), SamplerConfig(num_frames=n))
    idx, mask = ref_uniform_eval(f, n)
    assert s.indices.tolist() == idx and s.mask.tolist() == mask


# ----------------------------------------------------------------------------- fps


def test_fps_cfr_hand_computed():
    # 90 frames at 30 fps = 3.0 s: t = 0, 1, 2 -> frames 0, 30, 60
    s = plan_sample(cfr(90), SamplerConfig("fps", fps=1.0))
    assert s.indices.tolist() == [0, 30, 60]
    # 2 fps: 0, .5, 1, ..., 2.5 -> every 15th frame
    assert plan_sample(cfr(90), SamplerConfig("fps", fps=2.0)).indices.tolist() == [0, 15, 30, 45, 60, 75]
    # 89 frames end at 2.9667 s: t = 2 is still inside, t = 3 is not
    assert plan_sample(cfr(89), SamplerConfig("fps", fps=1.0)).indices.tolist() == [0, 30, 60]


def test_fps_vfr_takes_frame_on_screen():
    ts = np.array([0.0, 0.1, 0.5, 0.6, 1.4, 1.5, 2.5])  # median gap 0.1 -> end 2.6
    s = plan_sample(ts, SamplerConfig("fps", fps=2.0))
    # t = 0, .5, 1, 1.5, 2, 2.5 -> frames shown: 0, 2 (pts .5), 3 (pts .6), 5, 5, 6
    assert s.indices.tolist() == [0, 2, 3, 5, 5, 6]
    np.testing.assert_array_equal(s.timestamps, ts[[0, 2, 3, 5, 5, 6]])


def test_fps_cap_subsamples_grid_uniformly():
    # 10 s at 30 fps, 1 fps -> 10 grid times, cap 4 -> positions floor((k+.5)*10/4) = 1, 3, 6, 8
    s = plan_sample(cfr(300), SamplerConfig("fps", fps=1.0, max_frames=4))
    assert s.indices.tolist() == [30, 90, 180, 240]
    # a cap above the grid size changes nothing
    assert plan_sample(cfr(300), SamplerConfig("fps", fps=1.0, max_frames=50)).indices.tolist() == \
        [30 * k for k in range(10)]


def test_fps_faster_than_video_repeats_frames():
    s = plan_sample(cfr(4, fps=2.0), SamplerConfig("fps", fps=4.0))  # frames at 0, .5, 1, 1.5; end 2
    assert s.indices.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


# ----------------------------------------------------------------------------- windows


def test_windows_hand_computed():
    # 12 s at 10 fps, 1 fps grid: times 0..11; windows [0,10), [5,12)
    s = plan_sample(cfr(120, fps=10.0), SamplerConfig("windows", fps=1.0, window=10.0, stride=5.0))
    assert s.indices.tolist() == [10 * k for k in range(12)]  # shared frames stored once
    assert s.windows == [Window(0.0, 10.0, 0, 10), Window(5.0, 12.0, 5, 7)]
    assert s.mask.all()


def test_windows_short_video_gives_one_window():
    s = plan_sample(cfr(30), SamplerConfig("windows", fps=2.0, window=10.0, stride=5.0))  # 1 s
    assert s.windows == [Window(0.0, 1.0, 0, 2)] and s.indices.tolist() == [0, 15]


def test_windows_without_grid_frame_take_frame_at_start():
    # 10 s at 10 fps, grid 0.25 fps -> times 0, 4, 8; windows W=1, S=3: [0,1),[3,4),[6,7),[9,10)
    ts = cfr(100, fps=10.0)
    s = plan_sample(ts, SamplerConfig("windows", fps=0.25, window=1.0, stride=3.0))
    # [3,4) and [6,7) and [9,10) hold no grid time -> extra times 3, 6, 9
    times = [0.0, 3.0, 4.0, 6.0, 8.0, 9.0]
    assert s.indices.tolist() == [int(round(t * 10)) for t in times]
    assert [(w.start, w.end, w.first, w.count) for w in s.windows] == [
        (0.0, 1.0, 0, 1), (3.0, 4.0, 1, 1), (6.0, 7.0, 3, 1), (9.0, 10.0, 5, 1)]


def test_windows_contiguous_and_cover_video():
    ts = cfr(437, fps=29.97)
    s = plan_sample(ts, SamplerConfig("windows", fps=2.0, window=4.0, stride=1.5))
    assert s.windows[0].start == 0.0
    assert s.windows[-1].end == pytest.approx(video_end(ts))
    for w in s.windows:
        t = s.timestamps[w.first:w.first + w.count]
        assert w.count >= 1 and np.all(t >= w.start - 1e-6 - 1 / 29.97) and np.all(t < w.end)
    assert np.all(np.diff(s.timestamps) >= 0)


# ----------------------------------------------------------------------------- against the reference


@pytest.mark.parametrize("seed", range(25))
def test_random_vfr_inputs_match_reference(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 80))
    gaps = rng.choice([1 / 30, 1 / 10, 1 / 24, 0.5], size=n - 1)
    ts = np.concatenate([[0.0], np.cumsum(gaps)]) if n > 1 else np.zeros(1)
    rate = float(rng.choice([0.5, 1.0, 2.0, 3.0, 7.5]))
    cap = int(rng.integers(1, 12)) if rng.random() < 0.5 else None
    s = plan_sample(ts, SamplerConfig("fps", fps=rate, max_frames=cap))
    assert s.indices.tolist() == ref_fps(ts, rate, cap)
    w, st = float(rng.choice([0.5, 1.0, 2.5, 4.0])), float(rng.choice([0.25, 1.0, 2.0, 3.0]))
    s = plan_sample(ts, SamplerConfig("windows", fps=rate, window=w, stride=st))
    idx, wins = ref_windows(ts, rate, w, st)
    assert s.indices.tolist() == idx
    got = [(x.start, x.end, x.first, x.count) for x in s.windows]
    assert len(got) == len(wins)
    for g, r in zip(got, wins):
        assert g[0] == pytest.approx(r[0]) and g[1] == pytest.approx(r[1]) and g[2:] == r[2:]
    nf = int(rng.integers(1, 20))
    s = plan_sample(ts, SamplerConfig("uniform", num_frames=nf))
    assert (s.indices.tolist(), s.mask.tolist()) == ref_uniform_eval(n, nf)


def test_nonzero_start_is_relative_to_first_frame():
    ts = 5.0 + cfr(90)
    assert plan_sample(ts, SamplerConfig("fps", fps=1.0)).indices.tolist() == [0, 30, 60]
    assert plan_sample(ts, SamplerConfig("windows", fps=1.0, window=2.0, stride=2.0)).windows[0].start == 5.0


# ----------------------------------------------------------------------------- config and errors


def test_index_default_sampler():
    cfg = SamplerConfig.index_default()
    assert (cfg.name, cfg.fps, cfg.window, cfg.stride) == ("windows", 1.0, 10.0, 5.0)
    assert SamplerConfig.index_default(fps=2.0, name="fps") == SamplerConfig("fps", fps=2.0, window=10.0, stride=5.0)


def test_config_round_trip_and_validation():
    cfg = SamplerConfig("windows", fps=2.0, window=8.0, stride=4.0)
    assert SamplerConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.to_dict()["name"] == "windows"
    with pytest.raises(ConfigError, match="frames_per_video"):
        SamplerConfig.from_dict({"name": "uniform", "frames_per_video": 3})
    with pytest.raises(ConfigError, match="sampler name"):
        SamplerConfig("random")
    with pytest.raises(ConfigError, match="num_frames"):
        SamplerConfig(num_frames=0)
    with pytest.raises(ConfigError, match="fps"):
        SamplerConfig("fps", fps=-1)
    with pytest.raises(ConfigError, match="stride"):
        SamplerConfig("windows", stride=float("nan"))
    with pytest.raises(ConfigError, match="max_frames"):
        SamplerConfig("fps", max_frames=0)


def test_bad_timestamps():
    with pytest.raises(SampleError, match="empty"):
        plan_sample(np.array([]), SamplerConfig())
    with pytest.raises(SampleError, match="sorted"):
        plan_sample(np.array([0.0, 0.2, 0.1]), SamplerConfig())
    with pytest.raises(SampleError, match="NaN"):
        plan_sample(np.array([0.0, np.nan]), SamplerConfig())
