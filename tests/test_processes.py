"""Worker processes never fork a threaded parent (issue 16: a DataLoader forked from a pytest
process that still held Ray's threads hung in ``futex_wait`` until the suite's timeout).

A forked child inherits every lock in the state it was in at the fork, but only the forking
thread: a lock another thread held stays held in the child forever. The tests below hold such
a lock on purpose, in a background thread, around code the workers run.
"""

from __future__ import annotations

import threading

import pytest
import torch

import vidclip.encode.worker
from vidclip.core.processes import worker_context

# Held by a background thread while the pixel-training test runs; a worker that inherited it
# (fork) and calls `_locked_decode_job` waits on it forever, a spawned one never sees it held.
HELD = threading.Lock()


def _locked_decode_job(*args, **kwargs):
    with HELD:
        pass
    return _REAL_DECODE_JOB(*args, **kwargs)


_REAL_DECODE_JOB = vidclip.encode.worker.decode_job


@pytest.fixture
def threads_holding_a_lock():
    """Like a process that ran Ray (or any threaded library) before: other threads exist, and one
    of them holds a lock when workers start."""
    release = threading.Event()
    taken = threading.Event()

    def hold():
        with HELD:
            taken.set()
            release.wait()

    threads = [threading.Thread(target=hold, daemon=True, name="holds-a-lock")]
    threads += [threading.Thread(target=release.wait, daemon=True, name=f"idle-{i}") for i in range(3)]
    for t in threads:
        t.start()
    assert taken.wait(10)
    yield
    release.set()
    for t in threads:
        t.join(10)


def test_worker_context_never_forks(monkeypatch):
    ctx = worker_context()
    assert ctx.get_start_method() == "spawn"
    assert ctx.Process.__name__ != "ForkProcess"
    monkeypatch.setattr("sys.platform", "win32")
    on_windows = worker_context()  # the stdlib spawn context: the no-main one starts posix processes
    assert on_windows.get_start_method() == "spawn" and type(on_windows) is not type(ctx)


def test_train_dataloader_and_decode_pool_use_the_worker_context(monkeypatch, tmp_path):
    """The two process pools vidclip starts (training's prefetching DataLoader, the encode
    pipeline's decode pool) are given the shared non-fork context."""
    from vidclip.eval.evaluate import PixelSource
    from vidclip.train.trainer import video_batches

    seen = {}

    class Stop(Exception):
        pass

    class SpyLoader(torch.utils.data.DataLoader):
        def __init__(self, *args, **kwargs):
            seen["loader"] = kwargs.get("multiprocessing_context"), kwargs.get("num_workers")
            raise Stop  # recorded; no need to start workers

    monkeypatch.setattr(torch.utils.data, "DataLoader", SpyLoader)
    source = PixelSource({"a": str(tmp_path / "a.mp4")}, 4, 32)
    with pytest.raises(Stop):
        next(video_batches(source, [["a"], ["a"]], workers=2))
    ctx, workers = seen["loader"]
    assert workers == 2  # worker count as configured (capped by the steps)
    assert ctx is not None and ctx.get_start_method() != "fork"

    real_pool = vidclip.encode.worker.ProcessPoolExecutor

    class SpyPool(real_pool):
        def __init__(self, *args, **kwargs):
            seen["pool"] = kwargs.get("mp_context")
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(vidclip.encode.worker, "ProcessPoolExecutor", SpyPool)
    from vidclip.video.sample import SamplerConfig

    # no items: the pool is created (workers start lazily, on the first job) and closed at once
    assert list(vidclip.encode.worker._decoded_stream([], SamplerConfig("uniform", num_frames=4), "auto", 32, 2,
                                               "cpu")) == []
    assert seen["pool"] is not None and seen["pool"].get_start_method() != "fork"


@pytest.mark.timeout(180)
def test_pixel_training_finishes_while_other_threads_hold_locks(tiny_clip, tmp_path, monkeypatch,
                                                                 threads_holding_a_lock):
    """The pixel path (ted: frames decoded per step in DataLoader workers) after threads exist.
    A forked worker inherits HELD locked and hangs in `_locked_decode_job` (pytest-timeout fails
    the test); spawned workers start clean and import the real decode_job."""
    from train_helpers import run_train

    from vidclip.synthetic.datasets import SynthConfig, make_synthetic_dataset
    from vidclip.train.config import config_from_dict

    make_synthetic_dataset(tmp_path / "synth", SynthConfig(num_videos=14, seed=0, size=32, num_frames=6),
                           progress=False)
    # What a forked worker would run (PixelSource.batch looks decode_job up when called).
    monkeypatch.setattr(vidclip.encode.worker, "decode_job", _locked_decode_job)
    cfg = config_from_dict({
        "name": "ted", "run_dir": str(tmp_path / "run"), "device": "cpu",
        "data": {"root": str(tmp_path / "synth"), "cache_dir": str(tmp_path / "cache"), "num_frames": 4,
                 "val_fraction": 0.2, "encode_workers": 1},
        "model": {"clip": "tiny-vit", "pretrained": None, "temporal": "ted", "max_frames": 4},
        "optim": {"batch_size": 4, "epochs": 1, "lr": 1e-2, "warmup": 0.0},
    })
    import vidclip.train.trainer as trainer

    # Validation decodes in this process, where HELD is held: after the training steps, give it
    # the real decoder back.
    real_validate = trainer._validate

    def validate(*args, **kwargs):
        monkeypatch.setattr(vidclip.encode.worker, "decode_job", _REAL_DECODE_JOB)
        return real_validate(*args, **kwargs)

    monkeypatch.setattr(trainer, "_validate", validate)
    res = run_train(cfg, tiny_clip)
    assert res.global_step == 2  # both steps' batches came from the workers
