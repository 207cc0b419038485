"""Progress bars start their clock after start-up (issue 16: the first ETA of an encode read
``1/24 [00:57<22:13]``, the worker start-up taken as the pace of the rest).

No timing asserts: each test marks, with ``time.time()`` (tqdm's clock) a moment after start-up
ended, and checks the bar's clock started at or after it; a bar timed from its creation started
before the mark.
"""

from __future__ import annotations

import io
import time
import warnings

import pytest


@pytest.fixture
def bars(monkeypatch):
    """Every tqdm.auto bar made while the test runs (vidclip imports tqdm.auto where it makes one)."""
    import tqdm.auto

    made = []

    class Recorded(tqdm.auto.tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(tqdm.auto, "tqdm", Recorded)
    return made


def mark() -> float:
    """tqdm's clock a moment from now: a clock started before this call reads less."""
    time.sleep(0.02)
    return time.time()


def test_start_clock_counts_start_up_work_as_done_before_the_clock():
    from tqdm import tqdm

    from vidclip.core.progress import start_clock

    bar = tqdm(total=5, file=io.StringIO())
    created = bar.start_t
    start_clock(bar, done=1)
    assert bar.start_t > created and bar.n == bar.initial == 1
    bar.update(2)
    assert bar.n == 3 and bar.format_dict["initial"] == 1  # the rate counts the 2 units after the start
    bar.close()
    off = tqdm(total=5, disable=True)
    start_clock(off, done=1)  # a disabled bar still counts, and has no clock to start
    assert off.n == 1


def test_progress_iter_starts_the_clock_after_the_first_item(bars):
    from vidclip.core.progress import progress_iter

    seen = []
    for i, item in enumerate(progress_iter(["a", "b", "c"], desc="t", file=io.StringIO())):
        seen.append(item)
        if i == 0:
            first_done = mark()  # the first item's one-time costs end here
        else:
            assert bars[0].start_t >= first_done and bars[0].initial == 1
    assert seen == ["a", "b", "c"] and bars[0].n == 3


def test_encode_bar_starts_when_the_first_video_is_decoded(bars, monkeypatch, tiny_clip, tmp_path):
    from videogen import make_coded_video

    import vidclip.encode.worker as pipeline
    from vidclip.video.sample import SamplerConfig

    items = []
    for name in ("a", "b"):
        make_coded_video(tmp_path / f"{name}.mp4", 9, size=(64, 64))
        items.append((name, str(tmp_path / f"{name}.mp4")))
    real, ready = pipeline._decoded_stream, []

    def decoded(*args, **kwargs):
        for i, result in enumerate(real(*args, **kwargs)):
            if i == 0:
                ready.append(mark())  # start-up (workers starting, first decode) ends here
            yield result

    monkeypatch.setattr(pipeline, "_decoded_stream", decoded)
    out = list(pipeline.iter_encoded(items, tiny_clip, SamplerConfig("uniform", num_frames=4), workers=0,
                                     progress="encode"))
    assert len(out) == 2 and bars[0].n == 2
    assert bars[0].start_t >= ready[0]


def test_train_bar_starts_after_the_first_step(bars, monkeypatch, tiny_clip, tmp_path):
    from train_helpers import make_feature_dataset, tiny_config

    import vidclip.train.trainer as trainer

    data = make_feature_dataset(tmp_path / "ds", tiny_clip.identity.to_dict(), tiny_clip.embed_dim)
    cfg = tiny_config(data, tmp_path, "optim.epochs=1")
    real, marks = trainer.video_batches, []

    def batches(*args, **kwargs):
        for i, batch in enumerate(real(*args, **kwargs)):
            if i == 0:
                marks.append(mark())  # inside the first step (its start-up: workers, first batch)
            yield batch
            if i == 0:
                marks.append(time.time())  # the first step is done

    monkeypatch.setattr(trainer, "video_batches", batches)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights
        res = trainer.train(cfg, clip=tiny_clip, progress=True)
    bar = next(b for b in bars if str(b.desc).startswith("train"))
    assert bar.n == res.global_step == 3 and bar.initial == 1
    assert marks[0] <= bar.start_t <= marks[1]


def test_synth_bar_starts_after_the_first_video(bars, monkeypatch, tmp_path):
    from vidclip.synthetic import datasets as synth

    real, marks = synth.write_mp4, []

    def write(*args, **kwargs):
        real(*args, **kwargs)
        if not marks:
            marks.append(mark())  # the first video's one-time costs end here

    monkeypatch.setattr(synth, "write_mp4", write)
    synth.make_synthetic_dataset(tmp_path / "s", synth.SynthConfig(num_videos=3, seed=0, size=32, num_frames=4))
    assert bars[0].n == 3 and bars[0].start_t >= marks[0]


def test_pretrain_step_bar_starts_after_the_first_step(bars, monkeypatch, tmp_path):
    import vidclip.train.losses as losses
    from vidclip.train import pretrain as P

    real, marks = losses.contrastive_loss, []

    def loss(*args, **kwargs):
        marks.append(mark())  # the second entry: the first step is done
        return real(*args, **kwargs)

    monkeypatch.setattr(losses, "contrastive_loss", loss)
    data = dict(videos=8, seed=3, size=32, num_frames=4, test_fraction=0.25, frames_per_video=2)
    cfg = P.load_pretrain_config(None, [f"data.{k}={v}" for k, v in data.items()] + [
        f"data.root={tmp_path / 'synth'}", "model=tiny-vit", "optim.batch_size=4", "optim.steps=3",
        "log_every=1", "threads=1", "hard_groups=0"])
    P.pretrain(cfg, tmp_path / "out", progress=True)
    steps = next(b for b in bars if str(b.desc).startswith("pretrain"))
    assert steps.n == 3 and steps.initial == 1
    assert marks[0] <= steps.start_t <= marks[1]
    decode = [b for b in bars if str(b.desc).startswith("decode")]
    assert decode and all(b.initial == 1 for b in decode)  # their first video was start-up too
