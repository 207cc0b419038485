"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Single files that later runs read (feature-store headers, training checkpoints and RNG state,
cached text embeddings, frame PNGs, pretrained weights, benchmark results) are written here:
a temporary sibling in the same folder, then ``os.replace`` onto the target, which is atomic
on POSIX and Windows. A failure leaves no debris; a kill leaves at most a hidden
``.NAME.*.tmp`` file, never a truncated target. (Folders, such as feature shards and synth
datasets, are built the same way in a temporary sibling and renamed.)
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_path", "atomic_write_text"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; on success it replaces ``path``.

    The temporary file is removed if the block raises (or if it never made one)::

        with atomic_path("ckpt.pt") as tmp:
            torch.save(obj, tmp)
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str, *, durable: bool = True) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically; ``durable`` fsyncs it before the rename."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            if durable:
                f.flush()
                os.fsync(f.fileno())
