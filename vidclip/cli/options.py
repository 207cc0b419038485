"""Options shared by several verbs, and how they become API objects.

A leaf of the CLI: the verb modules (``cli/main.py``, ``*/commands.py``) import it; it imports
nothing of theirs, and nothing heavy at import time (torch and the models load in the
functions that need them).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from vidclip.core.errors import ConfigError, VidclipError, display_path


def add_verb_parser(subparsers, name: str, *, help: str, description: str,
                    examples: str | None = None) -> argparse.ArgumentParser:
    """Register verb ``name``: ``help`` is its line in ``vidclip --help``, ``description`` heads its
    own --help and ``examples`` (an epilog) ends it, printed as written (line breaks kept; that
    formatter keeps the description's too, so it is only used where there are examples)."""
    if examples is None:
        return subparsers.add_parser(name, help=help, description=description)
    return subparsers.add_parser(name, help=help, description=description, epilog=examples,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)


def add_model_args(parser: argparse.ArgumentParser, default_model: str = "ViT-B-32", default_pretrained: str | None = None,
                   runtime: bool = False) -> None:
    """--model, --pretrained, --device, --precision; ``runtime``: also --runtime torch|onnx and
    --precision int8 (the image tower on ONNX Runtime, :func:`add_runtime_arg`)."""
    g = parser.add_argument_group("model")
    g.add_argument("--model", default=default_model,
                   help="open_clip architecture (ViT-B-32, ...), 'hf-hub:ORG/REPO', 'hf:ORG/NAME' or a local "
                        "transformers CLIP directory, or a vidclip config (tiny-vit, hf-tiny, vidclip-synth) "
                        f"(default: {default_model})")
    g.add_argument("--pretrained", default=default_pretrained,
                   help="open_clip pretrained tag (e.g. openai, laion2b_s34b_b79k) or a local checkpoint file; "
                        "'none' for random weights; default: what --model implies (the shipped weights of "
                        "vidclip-synth, the folder's or hub repo's own weights, else openai or the first tag)"
                        + (f" (default: {default_pretrained})" if default_pretrained else ""))
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    g.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"] + (["int8"] if runtime else []),
                   help="encoder precision; auto = fp16 autocast on GPU, fp32 on CPU"
                        + ("; int8 (with --runtime onnx): dynamically quantised image tower" if runtime else ""))
    if runtime:
        add_runtime_arg(g)


def add_runtime_arg(group, default: str | None = "torch") -> None:
    """--runtime: torch (the default), or onnx: the image tower exported to ONNX once per model
    (user cache) and run by ONNX Runtime on the CPU, fp32 or --precision int8 (README: Light runtime)."""
    group.add_argument("--runtime", default=default, choices=["torch", "onnx"],
                       help="image encoder: torch, or onnx (ONNX Runtime on the CPU; with --precision int8 the "
                            "dynamically quantised tower, ~1.5x faster, features of their own identity)"
                            + (f" (default: {default})" if default else " (default: the index's, else torch)"))


def wrap_runtime(clip, ns: argparse.Namespace):
    """``clip`` with its image tower on ONNX Runtime when ``ns.runtime`` is onnx, else itself."""
    if getattr(ns, "runtime", None) != "onnx":
        return clip
    from vidclip.models.clip.onnx_encoder import onnx_image_clip

    return onnx_image_clip(clip, ns.precision)


def check_runtime_args(ns: argparse.Namespace) -> None:
    """--runtime/--precision/--device together (one line naming them), before anything loads."""
    if getattr(ns, "runtime", None) is None and getattr(ns, "precision", None) != "int8":
        return
    runtime, precision, device = getattr(ns, "runtime", None) or "torch", ns.precision, getattr(ns, "device", "auto")
    if runtime == "torch" and precision == "int8":
        raise ConfigError("--precision int8 needs --runtime onnx (dynamic int8 quantisation of the exported "
                          "image tower, on CPU)")
    if runtime == "onnx":
        if precision not in ("auto", "fp32", "int8"):
            raise ConfigError(f"--runtime onnx: --precision must be fp32 or int8 (auto = fp32), got {precision}")
        if device not in ("auto", "cpu"):
            raise ConfigError(f"--runtime onnx runs on the CPU; --device {device} is for --runtime torch")


def resolve_device(device: str) -> str:
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def model_from_args(ns: argparse.Namespace):
    from vidclip.models.clip.load import load_clip

    check_runtime_args(ns)
    if getattr(ns, "runtime", None) == "onnx":  # the tower is exported from the CPU fp32 model
        return wrap_runtime(load_clip(ns.model, ns.pretrained or None, device="cpu", precision="fp32"), ns)
    # load_clip applies the one --pretrained rule: None = what the model implies, 'none' = random
    return load_clip(ns.model, ns.pretrained or None, device=resolve_device(ns.device), precision=ns.precision)


def add_sampler_args(parser: argparse.ArgumentParser, default: str = "uniform") -> None:
    g = parser.add_argument_group("frame sampling")
    g.add_argument("--sampler", default=default, choices=["uniform", "fps", "windows"],
                   help="uniform: N frames, one per equal segment; fps: the frames shown at 0, 1/r, 2/r, ... s; "
                        "windows: fixed-length windows for segment-level indexing (default: %(default)s)")
    g.add_argument("--num-frames", type=int, default=12, help="uniform: frames per video (default: %(default)s)")
    g.add_argument("--fps", type=float, default=1.0, help="fps/windows: sampling rate in frames per second (default: %(default)s)")
    g.add_argument("--max-frames", type=int, default=None, help="fps: cap on frames per video, subsampled uniformly")
    g.add_argument("--window", type=float, default=10.0, help="windows: window length in seconds (default: %(default)s)")
    g.add_argument("--stride", type=float, default=5.0, help="windows: stride in seconds (default: %(default)s)")
    g.add_argument("--backend", default="auto", help="decoder: auto (per request: PyAV for sparse frames, decord for dense runs), decord, pyav, "
                        "torchcodec")
    g.add_argument("--decode-device", default="cpu",
                   help="cpu, or cuda for GPU decoding (decord built with CUDA or torchcodec); an error when unavailable")


def sampler_from_args(ns: argparse.Namespace):
    from vidclip.video.sample import SamplerConfig

    # SamplerConfig checks every field itself (ConfigError naming the field)
    return SamplerConfig(name=ns.sampler, num_frames=ns.num_frames, fps=ns.fps, max_frames=ns.max_frames,
                         window=ns.window, stride=ns.stride)


def add_engine_args(parser: argparse.ArgumentParser) -> None:
    """--engine local|ray and the Ray engine's options (vidclip/encode/engines/ray.py)."""
    g = parser.add_argument_group("engine (Ray: see README, 'Index a library on a cluster')")
    g.add_argument("--engine", default="local", choices=["local", "ray"],
                   help="local: decode worker processes on this machine, encoding in this process; ray: partitions "
                        "of the library decoded and encoded on a Ray cluster, committed here in order; needs "
                        "pip install -e \".[ray]\" (default: %(default)s)")
    g.add_argument("--ray-address", metavar="ADDR", default=None,
                   help="ray: the cluster to use (HOST:PORT as `ray start --head` prints it, or 'auto'); default: "
                        "RAY_ADDRESS, else a cluster started with `ray start` on this machine, else a new local one")
    g.add_argument("--decode-workers", type=int, default=None, metavar="N",
                   help="ray: decode tasks kept in flight, queued or running, one CPU each (default: 2 x the "
                        "cluster's CPUs)")
    g.add_argument("--encoders", type=int, default=1, metavar="N",
                   help="ray: encoder actors, each loading the model once (default: %(default)s)")
    g.add_argument("--num-gpus", type=float, default=0.0, metavar="G",
                   help="ray: GPUs per encoder actor; 0 encodes on CPU (default: %(default)s)")


def ray_options_from_args(ns: argparse.Namespace):
    """The RayOptions of --engine ray (None for the local engine); checks each value."""
    if ns.engine != "ray":
        return None
    from vidclip.encode.options import RayOptions

    return RayOptions(address=ns.ray_address, decode_workers=ns.decode_workers, encoders=ns.encoders,
                      num_gpus=ns.num_gpus, precision=getattr(ns, "precision", "auto"))


def check_out_folder(out: str) -> None:
    """``--out`` of a verb that writes a folder: it must not be a file (checked before any work)."""
    if os.path.lexists(out) and not os.path.isdir(out):
        raise ConfigError(f"--out {display_path(out)}: exists and is not a directory (the output is a folder)")


def print_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def run_verb(ns: argparse.Namespace) -> int:
    """Run the parsed verb ``ns.func(ns)`` (``ns.verb`` names it) and return the exit code: errors
    vidclip raises on purpose are one line on stderr and code 2, Ctrl-C 130, a closed pipe 141."""
    try:
        rc = int(ns.func(ns) or 0)
        sys.stdout.flush()  # inside the try: a closed pipe is reported as such, below
        return rc
    except VidclipError as e:
        print(f"vidclip {ns.verb}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vidclip {ns.verb}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`vidclip search ... | head`): stop quietly, as Unix tools do.
        # stdout is pointed at /dev/null so the interpreter's final flush cannot raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
