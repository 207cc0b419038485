"""What a file is: its size, mtime and a cheap content hash, to tell a changed file from a touched one.

Caches keyed by a video's name alone go stale silently when the file is replaced (a synthetic
dataset regenerated with another seed at the same path keeps every name). Everything that stores
per-video results records :func:`file_identity` next to them and asks :func:`same_file` before
reusing them. A changed ``(size, mtime_ns)`` is what triggers the hash; the hash decides whether
a touched (or copied) file really changed.

Content hash (:func:`fast_hash`): blake2b-128 over the file size (8 bytes, little endian), the
first MiB and the last MiB (as the index catalog, vidclip/index/catalog.py). Reading 2 MiB keeps
it cheap for any file size; an edit confined to the middle of a large file that keeps the size
changes the mtime, so it is still seen as a change whenever the hash cannot tell.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["fast_hash", "file_identity", "same_file"]

_MIB = 1 << 20


def fast_hash(path: str | os.PathLike, size: int | None = None) -> str:
    """blake2b-128 hex of (size, first MiB, last MiB) of the file at ``path``."""
    path = Path(path)
    if size is None:
        size = path.stat().st_size
    h = hashlib.blake2b(digest_size=16)
    h.update(int(size).to_bytes(8, "little"))
    with open(path, "rb") as f:
        h.update(f.read(_MIB))
        if size > 2 * _MIB:
            f.seek(size - _MIB)
            h.update(f.read(_MIB))
        elif size > _MIB:
            h.update(f.read())
    return h.hexdigest()


def file_identity(path: str | os.PathLike) -> dict | None:
    """``{"size": bytes, "mtime_ns": int, "hash": fast_hash}`` of a regular file; None when the
    path is not a readable regular file (nothing to record)."""
    try:
        st = os.stat(path)
        if not os.path.isfile(path):
            return None
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "hash": fast_hash(path, st.st_size)}
    except OSError:
        return None


def same_file(recorded: dict | None, path: str | os.PathLike) -> bool:
    """Whether the file at ``path`` is the one ``recorded`` (a :func:`file_identity`) describes.

    Equal size and mtime: the same file, without reading it. Otherwise the content hash decides
    (a copied or touched file with the same bytes is the same file). No record, or a path that
    cannot be read: False (nothing proves it is the same).
    """
    if not isinstance(recorded, dict):
        return False
    try:
        st = os.stat(path)
    except OSError:
        return False
    if st.st_size != recorded.get("size"):
        return False
    if st.st_mtime_ns == recorded.get("mtime_ns"):
        return True
    try:
        return fast_hash(path, st.st_size) == recorded.get("hash")
    except OSError:
        return False
