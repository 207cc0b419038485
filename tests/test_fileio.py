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
