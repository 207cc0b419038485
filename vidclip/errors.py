"""Error types. Every error names the file, row or field at fault and says what is wrong."""

from __future__ import annotations


class VidclipError(Exception):
    """Base class for all errors vidclip raises on purpose."""


class VideoDecodeError(VidclipError):
    """A video could not be opened or decoded. ``path`` and ``reason`` say which and why."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


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
