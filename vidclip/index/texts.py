"""What the index's text channel stores of one video, and when to read it again.

:class:`TextSources` gathers, for a video of a library:

- its **name** words (:func:`vidclip.index.textsearch.name_entries` of its library key);
- its **subtitles**: sidecars (``clip.srt``, ``clip.en.vtt``: :func:`vidclip.video.subtitles.find_sidecars`)
  and the text streams inside the container;
- its **metadata**: the library CSV's extra columns, then ``clip.json`` next to the video, then
  the ``--metadata`` CSV's row (a later source overrides a key of an earlier one). The result is
  what the catalog's ``videos.metadata`` column holds (what ``--meta KEY=VALUE`` filters on) and
  its values are indexed as words.

:meth:`TextSources.fingerprint` names what those words were read from (the sidecar files'
names, sizes and mtimes; the metadata given on the command line; the key): stored per video
(``text_state``), it tells the next ``vidclip index`` that a sidecar was added, changed or
removed, so only the words are read again, in one transaction, without re-encoding frames
(subtitles do not change the pictures). A changed video file is re-encoded, and its words read
again with it, in the transaction that writes its new row.

Bad input never costs a video its visual indexing: a malformed subtitle file, or a ``clip.json``
that is refused, is a warning (one per file, naming it and the line or key), and the video is
indexed with the words that could be read. No torch.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
from pathlib import Path

from vidclip.core.errors import DatasetError
from vidclip.index.metadata import metadata_sidecar, read_metadata_json
from vidclip.index.textsearch import TextEntry, metadata_entries, name_entries, subtitle_entries
from vidclip.video.subtitles import collect_subtitles, find_sidecars

__all__ = ["TEXT_VERSION", "TextSources"]

#: Bumped when what is read from the same files changes (parsing rules): every video's words are read again.
TEXT_VERSION = 1


class TextSources:
    """The text of the videos of one ``vidclip index`` run. ``metadata``: the ``--metadata`` CSV
    read with :func:`vidclip.index.metadata.read_metadata_csv` ({absolute path: {key: text}}), or None.
    ``embedded``: also read subtitle streams inside the containers."""

    def __init__(self, metadata: dict | None = None, embedded: bool = True):
        self.extra = {str(Path(p)): m for p, m in (metadata or {}).items()}
        self.embedded = embedded
        self._listings: dict[str, list[str]] = {}
        self.warnings: list[str] = []

    def _listing(self, folder: Path) -> list[str]:
        key = str(folder)
        if key not in self._listings:
            try:
                self._listings[key] = sorted(e.name for e in os.scandir(folder))
            except OSError:
                self._listings[key] = []
        return self._listings[key]

    def _near(self, path: Path) -> list[str]:
        """The names in the video's folder that start with its stem and a dot: all that
        find_sidecars needs (a sidecar, or another video whose stem extends this one), found by
        bisection in the folder's sorted listing, so a folder of N videos costs N log N, not N^2."""
        listing = self._listing(path.parent)
        prefix = path.stem + "."
        lo = bisect.bisect_left(listing, prefix)
        hi = lo
        while hi < len(listing) and listing[hi].startswith(prefix):
            hi += 1
        return listing[lo:hi]

    def _files(self, path: Path) -> list[list]:
        """[name, size, mtime_ns] of the video's subtitle sidecars and its clip.json."""
        near = self._near(path)
        files = [s.path for s in find_sidecars(path, near)]
        meta = metadata_sidecar(path)
        if meta.name in near and meta.name != path.name:
            files.append(meta)
        out = []
        for f in files:
            try:
                st = os.stat(f)
                out.append([f.name, st.st_size, st.st_mtime_ns])
            except OSError:
                continue
        return sorted(out)

    def fingerprint(self, key: str, path: Path, library_metadata: dict | None) -> str:
        """What the words of the video at ``path`` (library ``key``) would be read from, as one string."""
        state = {"v": TEXT_VERSION, "key": key, "files": self._files(Path(path)),
                 "library": library_metadata or {}, "extra": self.extra.get(str(Path(path)), {})}
        blob = json.dumps(state, sort_keys=True, ensure_ascii=True, default=str)
        return hashlib.blake2b(blob.encode(), digest_size=16).hexdigest()

    def read(self, key: str, path: Path, library_metadata: dict | None) -> tuple[list[TextEntry], dict]:
        """(text entries, merged metadata) of one video; problems go to :attr:`warnings`."""
        path = Path(path)
        metadata = dict(library_metadata or {})
        if metadata_sidecar(path).name in self._near(path) and metadata_sidecar(path) != path:
            try:
                metadata.update(read_metadata_json(metadata_sidecar(path)))
            except DatasetError as e:
                self.warnings.append(f"{e} (its metadata left out; the video is indexed)")
        metadata.update(self.extra.get(str(path), {}))
        entries = list(name_entries(key))
        tracks, warns = collect_subtitles(path, self._near(path), embedded=self.embedded)
        self.warnings += warns
        for track in tracks:
            entries += subtitle_entries(track.cues, track.source)
        entries += metadata_entries(metadata)
        return entries, metadata
