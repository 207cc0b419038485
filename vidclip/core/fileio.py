"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Single files that later runs read (feature-store headers, training checkpoints and RNG state,
cached text embeddings, frame PNGs, pretrained weights, benchmark results) are written here:
a temporary sibling in the same folder, then ``os.replace`` onto the target, which is atomic
on POSIX and Windows. A failure leaves no debris; a kill leaves at most a hidden
``.NAME.<12 hex>.tmp`` file, never a truncated target, which :func:`clean_stale_temps` removes
on a later write of the same target. (Folders, such as feature shards and synth datasets, are
built the same way in a temporary sibling and renamed.)

:func:`check_output_file` checks an output path before the work that produces it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import stat
import time
import uuid
from pathlib import Path
from typing import Iterator

from vidclip.core.errors import ConfigError, display_path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: temp files are then told apart by age alone
    fcntl = None

__all__ = ["atomic_path", "atomic_write_text", "check_output_file", "clean_stale_temps", "fsync_dir"]

#: A temp file younger than this is never taken for debris: it may belong to a writer that has
#: created it and not yet locked it (see clean_stale_temps).
STALE_TEMP_MIN_AGE_S = 2.0


def fsync_dir(path: str | os.PathLike) -> None:
    """Make the entries of folder ``path`` (a rename into it) durable; a no-op where a folder cannot
    be opened (Windows) or synced."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; on success it replaces ``path``.

    The temporary file is removed if the block raises (or if it never made one)::

        with atomic_path("ckpt.pt") as tmp:
            torch.save(obj, tmp)

    ``durable``: the written file is synced to disk before the rename, and the folder after it,
    so that a power cut too leaves the old file or the whole new one.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")  # the pattern clean_stale_temps knows
    try:
        yield tmp
        if durable:
            fd = os.open(tmp, os.O_RDWR)  # read-write: Windows' fsync needs a handle that may write
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
        if durable:
            fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str, *, durable: bool = True) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically; ``durable`` fsyncs it before the rename."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            if fcntl is not None:  # held until closed or killed: clean_stale_temps leaves a live write alone
                fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            f.write(text)
            if durable:
                f.flush()
                os.fsync(f.fileno())


def clean_stale_temps(path: str | os.PathLike, *, min_age_s: float = STALE_TEMP_MIN_AGE_S) -> list[Path]:
    """Delete the ``.NAME.<12 hex>.tmp`` siblings of ``path`` that killed atomic writes left; returns them.

    Only files of exactly our temp-name pattern for this ``path`` are candidates, and one is
    deleted only when no live writer holds it: :func:`atomic_write_text` holds an flock on its temp
    file while it writes (the kernel drops it when the writer dies, even by SIGKILL), so a file we
    can lock belongs to nobody. A file younger than ``min_age_s`` is kept either way (a writer may
    have created it and not locked it yet). Writers that use :func:`atomic_path` directly take no
    lock: only the age protects theirs, so call this for targets written by atomic_write_text.
    """
    path = Path(path)
    pattern = re.compile(r"\." + re.escape(path.name) + r"\.[0-9a-f]{12}\.tmp")
    removed = []
    now = time.time()
    for tmp in path.parent.glob(glob.escape(f".{path.name}.") + "*.tmp"):
        if not pattern.fullmatch(tmp.name):
            continue
        try:
            st = tmp.lstat()
            if not stat.S_ISREG(st.st_mode) or now - st.st_mtime < min_age_s:  # no link, no folder
                continue
            fd = os.open(tmp, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:  # a live writer holds it
                    continue
            tmp.unlink()
            removed.append(tmp)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def check_output_file(path: str | os.PathLike, option: str = "--out") -> Path:
    """Check that ``path`` can be written as a file, before any work: not a directory, and its folder
    exists and is writable. Raises ConfigError naming ``option`` and the path; returns the path."""
    path = Path(path).expanduser()
    where = f"{option} {display_path(path)}"
    if path.is_dir():
        raise ConfigError(f"{where}: is a directory; give a file path")
    parent = path.parent
    if not parent.exists():
        raise ConfigError(f"{where}: the folder {display_path(parent)} does not exist")
    if not parent.is_dir():
        raise ConfigError(f"{where}: {display_path(parent)} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{where}: cannot write in the folder {display_path(parent)} (permission denied)")
    return path
