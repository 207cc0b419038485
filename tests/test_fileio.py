"""Atomic writes: a reader sees the old file or the new one, and a failed write leaves no debris."""

import pytest

from vidclip.core.fileio import atomic_path, atomic_write_text


def test_atomic_write_replaces_and_failure_keeps_the_old_file(tmp_path):
    target = tmp_path / "header.json"
    atomic_write_text(target, "old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new"

    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(target) as tmp:
            tmp.write_text("half of a new fi")
            raise RuntimeError("disk full")
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["header.json"]  # no .tmp left behind

    with pytest.raises(FileNotFoundError):  # the block wrote nothing: an error, not an empty file
        with atomic_path(tmp_path / "never.bin"):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["header.json"]



def test_durable_atomic_path_syncs_the_file_then_the_folder(tmp_path, monkeypatch):
    import os
    import stat

    from vidclip.core import fileio

    synced = []  # what each fsync was given: a file or a folder

    def fsync(fd):
        synced.append("folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")

    monkeypatch.setattr(fileio.os, "fsync", fsync)
    target = tmp_path / "vectors.faiss"
    with atomic_path(target, durable=True) as tmp, open(tmp, "wb") as f:
        f.write(b"abc")
    assert target.read_bytes() == b"abc"
    # the data before the rename, the rename after it (Windows cannot open a folder to sync it)
    assert synced == (["file"] if os.name == "nt" else ["file", "folder"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vectors.faiss"]
    with pytest.raises(FileNotFoundError):  # nothing written: an error, as without durable
        with atomic_path(tmp_path / "never.bin", durable=True):
            pass
