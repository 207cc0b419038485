"""A run folder's resumable state: the log, RNG states, safe checkpoint loading, the resolved config.

What ``--resume`` reads back (see :mod:`vidclip.train.trainer` for the folder layout). Every
``.pt`` file is loaded with ``weights_only=True``: a run folder may come from someone else.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import torch

from vidclip.core.errors import ConfigError
from vidclip.core.fileio import atomic_write_text
from vidclip.models.checkpoint import resolve_in_run
from vidclip.train.config import TrainConfig, config_from_dict

__all__ = ["STATE_FILE", "append_log_line", "truncate_log", "rng_state", "set_rng_state", "load_checkpoint_file",
           "read_run_yaml", "config_diff", "load_run_config"]

STATE_FILE = "state.pt"


def append_log_line(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()


def truncate_log(path: Path, step: int) -> None:
    """Drop log lines past ``step`` (written after the checkpoint we resume from)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill
    atomic_write_text(path, "".join(k + "\n" for k in keep))


def rng_state() -> dict:
    """This process's RNG states in plain form (tensors, ints, floats, tuples): what
    ``torch.load(weights_only=True)`` reads back. numpy's MT19937 key (uint32 [624]) is stored
    as an int64 tensor, not an ndarray (which a safe load refuses)."""
    name, key, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": (str(name), torch.from_numpy(key.astype(np.int64)), int(pos), int(has_gauss), float(gauss))}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, key, *rest = state["numpy"]  # key: int64 tensor, or an ndarray in files written before
    key = key.numpy() if isinstance(key, torch.Tensor) else key
    np.random.set_state((name, np.asarray(key, dtype=np.uint32), *rest))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _numpy_array_globals() -> list:
    """What an RNG file written before plain form needs besides tensors: numpy's array
    reconstruction (under numpy 2's and numpy 1's module names). It rebuilds plain arrays from
    bytes and runs no code, so a safe load may allow it."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy 1
        from numpy.core.multiarray import _reconstruct

    return [np.ndarray, np.dtype, type(np.dtype(np.uint32)), (_reconstruct, "numpy._core.multiarray._reconstruct"),
            (_reconstruct, "numpy.core.multiarray._reconstruct")]


def load_checkpoint_file(path: Path, *, what_to_do: str, numpy_arrays: bool = False):
    """``torch.load(path, weights_only=True)``: a run folder may come from someone else, and a
    full unpickle would run whatever code it names. A file that needs more than tensors and
    plain Python values (plus numpy arrays with ``numpy_arrays``) is refused with one line that
    names what it asked for and ``what_to_do``."""
    import pickle

    try:
        allow = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5
        if not numpy_arrays or allow is None:
            return torch.load(path, map_location="cpu", weights_only=True)
        with allow(_numpy_array_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        try:
            names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:  # noqa: BLE001 - only for the message
            names = []
        if numpy_arrays:
            allowed = {"numpy.ndarray", "numpy.dtype", "numpy._core.multiarray._reconstruct",
                       "numpy.core.multiarray._reconstruct"}
            names = [n for n in names if n not in allowed]
        asked = f"it asks for {', '.join(names[:3])}" if names else "it is not a plain checkpoint"
        raise ConfigError(f"{path}: refused to load: {asked}, which a safe load (weights_only) does not "
                          f"allow and vidclip never writes; {what_to_do}") from None


def read_run_yaml(path: Path) -> dict:
    import yaml

    if not path.is_file():
        raise ConfigError(f"{path}: missing (the run dir has no resolved config)")
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def config_diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict) and k != "temporal_args":
            out += config_diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}: {va!r} in the run, {vb!r} now")
    return out


def load_run_config(run_dir: str | os.PathLike) -> TrainConfig:
    """The resolved config a run dir was started with (a ``model.pretrained`` stored relative to
    the run, as convert-checkpoint writes it, resolved against ``run_dir``)."""
    path = Path(run_dir) / "config.yaml"
    cfg = config_from_dict(read_run_yaml(path), where=str(path))
    cfg.model.pretrained = resolve_in_run(cfg.model.pretrained, run_dir)
    return cfg
