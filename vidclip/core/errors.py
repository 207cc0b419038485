"""Error types. Every error names the file, row or field at fault and says what is wrong."""

from __future__ import annotations


class VidclipError(Exception):
    """Base class for all errors vidclip raises on purpose."""


class VideoDecodeError(VidclipError):
    """A video could not be opened or decoded. ``path`` and ``reason`` say which and why."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{display_path(self.path)}: {reason}")  # one line, whatever the name


class BackendUnavailableError(VidclipError):
    """A requested decoding backend (or its GPU mode) is not installed or not usable here."""


class WeightsNotFoundError(VidclipError):
    """Model weights could not be found or downloaded."""


class ConfigError(VidclipError):
    """A configuration value or command-line override is invalid."""


class DatasetError(VidclipError):
    """A dataset file is missing or malformed; the message names the file and row."""


class IndexMismatchError(VidclipError):
    """An index directory is inconsistent with the request (e.g. a different model)."""


def display_path(path) -> str:
    """A path as one printable line: for messages, reports and the web page.

    Names that are not valid UTF-8 (kept by Python as surrogate escapes, or given as bytes) show
    their raw bytes as ``\\xNN``; control characters (a newline in a name) show escaped, so one
    problem stays one line. Plain names come back unchanged.
    """
    import os

    raw = os.fsencode(path)
    text = raw.decode("utf-8", errors="backslashreplace")
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)
