"""vidclip: text-to-video search and video recognition on a frozen image CLIP.

The obvious things are one line each::

    import vidclip
    clip = vidclip.load_clip("ViT-B-32", "openai")              # or a local checkpoint file
    frames = vidclip.sample_video("a.mp4", vidclip.SamplerConfig("uniform", num_frames=12))
    vidclip.encode_videos([("a", "a.mp4")], "features/", clip, vidclip.SamplerConfig())
    index = vidclip.VideoIndex.open("my_index/"); hits = index.search("a dog catches a frisbee")

Names are imported lazily so that ``import vidclip`` (and ``vidclip --help``) stay fast.
"""

from __future__ import annotations

from vidclip.core.lazy import lazy_getattr

__version__ = "0.1.0"

_LAZY = {
    "probe": "vidclip.video.decode",
    "open_video": "vidclip.video.decode",
    "VideoInfo": "vidclip.video.decode",
    "SamplerConfig": "vidclip.video.sample",
    "plan_sample": "vidclip.video.sample",
    "sample_video": "vidclip.video.sample",
    "write_frames": "vidclip.video.frames",
    "preprocess_frames": "vidclip.models.clip",
    "load_clip": "vidclip.models.clip",
    "FrozenCLIP": "vidclip.models.clip",
    "create_temporal": "vidclip.models.temporal",
    "list_temporal": "vidclip.models.temporal",
    "FeatureStore": "vidclip.features.store",
    "FeatureWriter": "vidclip.features.store",
    "load_dataset": "vidclip.data.datasets",
    "SynthConfig": "vidclip.synthetic.world",
    "make_synthetic_dataset": "vidclip.synthetic.datasets",
    "encode_videos": "vidclip.encode.pipeline",
    "iter_encoded": "vidclip.encode.worker",
    "retrieval_metrics": "vidclip.eval.metrics",
    "VideoIndex": "vidclip.index.search",
}

__all__ = ["__version__", *_LAZY]


__getattr__ = lazy_getattr(globals(), _LAZY, cache=True)
