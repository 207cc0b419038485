"""Which files are videos: checking one path before it is opened, and scanning folders.

:func:`check_video_file` says precisely what is wrong with a path (a symbolic-link loop, a
dangling link, a FIFO or device, an empty file, ...) *without opening it*: opening a FIFO would
block. :func:`find_videos` expands files and folders into ``(key, path)`` pairs and reports, one
entry each, the paths it cannot use instead of skipping them; ``vidclip encode`` and the index's
library scan both call it.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable

from vidclip.core.errors import VideoDecodeError, display_path

__all__ = ["VIDEO_EXTENSIONS", "check_video_file", "file_problem", "find_videos", "is_video_name"]

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mkv", ".webm", ".avi", ".mov", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".3gp")

_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def is_video_name(name: str) -> bool:
    """True when ``name`` ends with one of VIDEO_EXTENSIONS (case-insensitive)."""
    return os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS


def file_problem(path) -> str | None:
    """Why ``path`` cannot be read as a video file, or None when it is a non-empty readable file.

    Never opens the file (a FIFO would block); follows symbolic links.
    """
    try:
        st = os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "symbolic link loop (the link points back to itself)"
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            if os.path.islink(path):
                try:
                    target = os.readlink(path)
                except OSError:
                    target = "?"
                return f"dangling symbolic link (points to {display_path(target)}, which does not exist)"
            return "file not found"
        if e.errno == errno.EACCES:
            return "cannot be reached (permission denied)"
        return f"cannot stat file: {e.strerror or e}"
    if stat.S_ISDIR(st.st_mode):
        return "is a directory, not a video file"
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _KINDS if test(st.st_mode)), "not a file")
        via = " (through a symbolic link)" if os.path.islink(path) else ""
        return f"not a regular file: {kind}{via}"
    if st.st_size == 0:
        return "empty file (0 bytes)"
    if not os.access(path, os.R_OK):
        return "file is not readable (permission denied)"
    return None


def check_video_file(path) -> None:
    """Raise VideoDecodeError naming ``path`` when :func:`file_problem` finds something wrong."""
    problem = file_problem(path)
    if problem is not None:
        raise VideoDecodeError(path, problem)


def _walk(root: str, found: list, problems: list) -> None:
    """Recursive scan of folder ``root`` (following links to folders, each folder once)."""
    seen: set[tuple[int, int]] = set()

    def visit(folder: str, rel: str) -> None:
        try:
            st = os.stat(folder)
        except OSError as e:
            problems.append((folder, f"cannot read folder: {e.strerror or e}"))
            return
        ident = (st.st_dev, st.st_ino)
        if ident in seen:
            problems.append((folder, "symbolic link loop (a folder that contains itself); not scanned again"))
            return
        seen.add(ident)
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: os.fsencode(e.name))
        except OSError as e:
            problems.append((folder, f"cannot read folder: {e.strerror or e}"))
            return
        for entry in entries:
            path = os.path.join(folder, entry.name)
            key = f"{rel}/{entry.name}" if rel else entry.name
            try:
                is_link = entry.is_symlink()
                is_dir = entry.is_dir()  # follows links; False for a dangling one
            except OSError:
                is_link, is_dir = True, False
            if is_dir:
                visit(path, key)
                continue
            video = is_video_name(entry.name)
            if not video and not is_link:
                continue  # not a video by name; only broken links are worth a word
            problem = file_problem(path)
            if problem is None:
                if video:
                    found.append((key, path))
            elif video or "symbolic link" in problem:
                problems.append((path, problem))

    visit(root, "")


def find_videos(inputs: Iterable[str | os.PathLike]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Expand video files and folders into the videos to read, and the paths that cannot be.

    A folder is scanned recursively for names with a video extension (VIDEO_EXTENSIONS), in
    byte order of the names, following links to folders (a folder reached twice is a loop and
    is reported once). A file given directly is taken whatever its extension.

    Returns:
        ``(found, problems)``: ``found`` = ``[(key, path)]`` where key is the path relative to
        the folder scanned (POSIX separators) or, for a file given directly, its file name;
        ``problems`` = ``[(path, reason)]`` for each input or scanned entry that is not a
        readable file: missing, a dangling link or link loop, a FIFO, device or socket, an
        empty or unreadable file. A scanned entry is reported when its name has a video
        extension, and any broken symbolic link is (its target's kind is unknown).
        Paths are ``str`` (undecodable bytes kept as surrogate escapes); show them with
        :func:`vidclip.core.errors.display_path`.
    """
    found: list[tuple[str, str]] = []
    problems: list[tuple[str, str]] = []
    for inp in inputs:
        path = os.fspath(inp)
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if os.path.isdir(path):
            _walk(path, found, problems)
            continue
        problem = file_problem(path)
        if problem is None:
            found.append((os.path.basename(os.path.normpath(path)), path))
        else:
            problems.append((path, problem))
    return found, problems
