"""How to encode: :class:`EncodeOptions` (what every engine reads) and :class:`RayOptions` (how
the Ray engine uses its cluster). Plain data: nothing here imports torch or Ray.

Callers build one options object and hand it to an engine (:func:`vidclip.encode.pipeline.start_engine`);
``vidclip encode`` and ``vidclip index`` fill it from their flags (vidclip/cli/options.py).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from vidclip.core.errors import ConfigError
from vidclip.video.sample import SamplerConfig

ENGINES = ("local", "ray")
SHARD_FRAMES = 65_536  # a local shard closes at this many frames (bounds memory for long videos)


@dataclass
class RayOptions:
    """How the Ray engine uses the cluster.

    ``address``: a running cluster (``ray start --head`` prints it; "auto" = the one on this
    machine); None: RAY_ADDRESS, else the cluster ``ray start`` left on this machine, else a new
    local one for this run. ``decode_workers``: decode tasks kept in flight, queued or running
    (Ray runs as many at once as there are free CPUs; each takes one); None: twice the cluster's
    CPUs. ``encoders``: encoder actors, each loading the model once. ``num_gpus``: GPUs per actor
    (0: the actor encodes on CPU). ``encoder_cpus``: CPUs reserved per actor (None: 1 without
    GPUs, else 0, leaving every CPU to decoding). ``precision``: the actors' encoder precision
    (auto: fp16 autocast on GPU, fp32 on CPU); the local engine encodes with the model it is given.
    """

    address: str | None = None
    decode_workers: int | None = None
    encoders: int = 1
    num_gpus: float = 0.0
    encoder_cpus: float | None = None
    precision: str = "auto"

    def __post_init__(self):
        if self.decode_workers is not None and int(self.decode_workers) <= 0:
            raise ConfigError(f"--decode-workers must be positive, got {self.decode_workers}")
        if int(self.encoders) <= 0:
            raise ConfigError(f"--encoders must be positive, got {self.encoders}")
        if float(self.num_gpus) < 0:
            raise ConfigError(f"--num-gpus must be >= 0, got {self.num_gpus}")
        if self.encoder_cpus is not None and float(self.encoder_cpus) < 0:
            raise ConfigError(f"encoder_cpus must be >= 0, got {self.encoder_cpus}")


@dataclass
class EncodeOptions:
    """What an engine needs to turn videos into stored frame embeddings.

    ``sampler``: which frames (required to encode; the index fills in its default).
    ``backend``: the decoder. ``batch_frames``: rows of every encoder forward pass, the last one
    padded (:class:`~vidclip.encode.worker.FixedPassEncoder`), so what is stored does not depend
    on decode order or engine. ``workers``: local decode processes ("auto": in this process for
    up to 4 videos, else one per core up to 4). ``decode_device``: "cpu", or "cuda" to decode on
    the GPU (local engine only). ``shard_size``: videos (failures included) per shard, which is
    what a caller commits at once, so the most a kill can cost; Ray's partition size.
    ``shard_frames``: the local engine also closes a shard once it holds this many frames
    (bounds memory for long videos). ``progress``: a bar (a string: its label). ``engine``:
    "local" (decode workers here, encoding in this process) or "ray" (``ray``: its RayOptions).
    """

    sampler: SamplerConfig | None = None
    backend: str = "auto"
    batch_frames: int = 256
    workers: int | str = "auto"
    decode_device: str = "cpu"
    shard_size: int = 256
    shard_frames: int = SHARD_FRAMES
    progress: bool | str = True
    engine: str = "local"
    ray: RayOptions | None = None

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise ConfigError(f"--engine: expected 'local' or 'ray', got {self.engine!r}")
        for name in ("batch_frames", "shard_size", "shard_frames"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name}: must be a positive integer, got {value!r}")
        if self.engine == "ray" and self.decode_device != "cpu":
            raise ConfigError("--engine ray decodes on the cluster's CPUs; --decode-device cuda is a local-engine option")

    @classmethod
    def build(cls, options: EncodeOptions | SamplerConfig | None = None, **changes) -> EncodeOptions:
        """``options`` with ``changes`` (field names) applied; a SamplerConfig stands for
        ``EncodeOptions(sampler=it)`` (the call README shows: ``encode_videos(items, out, clip, cfg)``)."""
        if isinstance(options, SamplerConfig):
            changes = {"sampler": options, **changes}
            options = None
        if options is not None and not isinstance(options, cls):
            raise ConfigError(f"options: expected EncodeOptions or a SamplerConfig, got {type(options).__name__}")
        return replace(options, **changes) if options is not None else cls(**changes)

    def labelled(self, label: str) -> EncodeOptions:
        """These options with the progress bar named ``label`` (when it is shown and not named yet)."""
        return replace(self, progress=label) if self.progress is True else self


ENCODE_FIELDS = frozenset(f.name for f in fields(EncodeOptions))
