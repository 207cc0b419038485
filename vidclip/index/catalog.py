"""The library catalog: one SQLite database (WAL mode) saying what is indexed.

The catalog is the source of truth of a library index. Frame embeddings live in feature-store
shards and the faiss files are derived data; a video is *indexed* exactly when its catalog row
says so, and the row names the shard, offset and count of its frames.

Tables::

    meta(key, value)                 JSON values: schema, model identity, sampler, temporal
                                     module, index designs, generation counter, libraries
    videos(id, key, source, root, path, abs_path, size, mtime_ns, hash, duration, fps,
           status, error, metadata, shard, offset, count, vector, indexed_at)
    segments(id, video_id, start, end, first, count, vector)

``videos.id`` and ``segments.id`` are AUTOINCREMENT, so an id is never reused: they double as
faiss ids, and a stale faiss file can never point at a different video. A changed file gets a
new row (the old one becomes ``deleted``). ``status``: ``indexed`` | ``failed`` (``error`` says
why) | ``deleted``. At most one non-deleted row per absolute path (a partial unique index).
``vector`` columns hold the L2-normalised float32 [D] video / window vectors the faiss indexes
are (re)built from.

The text channel (:mod:`vidclip.index.textsearch`: ``text_spans`` + the FTS5 index ``text_fts``)
lives in the same database, plus ``text_state(video_id, fingerprint)``: what the stored words of
a video were read from (its sidecar subtitles' and ``clip.json``'s names, sizes and mtimes, its
metadata), so ``vidclip index`` re-reads the words of a video whose sidecars changed without
re-encoding its frames. A video's words are written and deleted in the transaction that writes
or deletes its row. A catalog made before the text channel existed gets the tables the next
time it is opened for writing (``vidclip index``); read-only, it searches by picture only.

``generation`` (meta) is incremented by every transaction that changes the set of indexed
vectors; a faiss file records the generation it was built at, so a mismatch on open means
"stale, rebuild from the stored vectors".

Content hash (:func:`vidclip.features.identity.fast_hash`): blake2b-128 over the file size (8 bytes, little endian), the
first MiB and the last MiB. Reading 2 MiB makes it cheap for any file size. It catches every
size change and any edit to the head or tail (where containers keep their headers and index
atoms); an edit confined to the middle of a large file that keeps the size would be missed by
the hash alone, but such an edit changes the mtime, and a changed (size, mtime) is what triggers
the hash in the first place: the hash only decides whether a touched file really changed.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from vidclip.core.errors import IndexMismatchError, VidclipError
from vidclip.features.identity import fast_hash  # noqa: F401  (the content hash the catalog stores; re-exported)
from vidclip.index.textsearch import TextEntry, add_text, create_text_schema, delete_text

SCHEMA_VERSION = 1
STATUSES = ("indexed", "failed", "deleted")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS videos (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    key        TEXT NOT NULL,              -- feature-store key: path relative to its library root
    source     TEXT NOT NULL,              -- the library (folder / list / CSV) it was found in
    root       TEXT NOT NULL,              -- that library's root folder
    path       TEXT NOT NULL,              -- relative to root (absolute when outside it)
    abs_path   TEXT NOT NULL,
    size       INTEGER,
    mtime_ns   INTEGER,
    hash       TEXT,
    duration   REAL,
    fps        REAL,
    status     TEXT NOT NULL CHECK (status IN ('indexed', 'failed', 'deleted')),
    error      TEXT,
    metadata   TEXT NOT NULL DEFAULT '{}',
    shard      TEXT,
    offset     INTEGER,
    count      INTEGER,
    vector     BLOB,
    indexed_at REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS videos_live_path ON videos(abs_path) WHERE status != 'deleted';
CREATE INDEX IF NOT EXISTS videos_status ON videos(status);
CREATE INDEX IF NOT EXISTS videos_source ON videos(source);
CREATE TABLE IF NOT EXISTS segments (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    video_id INTEGER NOT NULL REFERENCES videos(id),
    start    REAL NOT NULL,
    end      REAL NOT NULL,
    first    INTEGER NOT NULL,
    count    INTEGER NOT NULL,
    vector   BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS segments_video ON segments(video_id);
"""

_TEXT_STATE = """CREATE TABLE IF NOT EXISTS text_state (
    video_id    INTEGER PRIMARY KEY,           -- videos.id
    fingerprint TEXT NOT NULL                  -- what its words were read from (build._text_fingerprint)
)"""

# Columns returned for a video row (the vector is fetched separately).
VIDEO_COLUMNS = ("id", "key", "source", "root", "path", "abs_path", "size", "mtime_ns", "hash", "duration", "fps",
                 "status", "error", "metadata", "shard", "offset", "count", "indexed_at")


# Text columns that may hold a file name. A name that is not valid UTF-8 (Python keeps its bytes
# as surrogate escapes) cannot be a SQLite TEXT value: it is stored as a BLOB of its raw bytes
# (os.fsencode) and read back with os.fsdecode, so it round-trips exactly and a re-run finds it.
PATH_COLUMNS = ("key", "source", "root", "path", "abs_path", "error")


def _to_db(value):
    """A str column value as SQLite can store it: itself, or its raw bytes when not UTF-8-encodable."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return os.fsencode(value)
    return value


def _from_db(value):
    return os.fsdecode(value) if isinstance(value, bytes) else value


def vector_blob(v) -> bytes:
    return np.ascontiguousarray(np.asarray(v, dtype="<f4").reshape(-1)).tobytes()


def blob_vectors(blobs: list[bytes], dim: int) -> np.ndarray:
    """float32 [N, dim] from N little-endian float32 blobs."""
    if not blobs:
        return np.zeros((0, dim), np.float32)
    return np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), dim).astype(np.float32)


class Catalog:
    """SQLite catalog at ``path``. ``readonly=True`` opens without creating or migrating.

    Writes go through :meth:`transaction` (``BEGIN IMMEDIATE``: one writer at a time, readers
    never blocked in WAL mode). ``synchronous=FULL`` makes every commit durable before the call
    returns, so "committed" survives SIGKILL and power loss alike.
    """

    def __init__(self, path: str | os.PathLike, *, readonly: bool = False):
        self.path = Path(path)
        if readonly and not self.path.is_file():
            raise VidclipError(f"{self.path}: no catalog here (not a vidclip index); create one with `vidclip index`")
        try:
            if readonly:
                self.conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None,
                                            timeout=30, check_same_thread=False)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.conn = sqlite3.connect(self.path, isolation_level=None, timeout=30, check_same_thread=False)
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.execute("PRAGMA synchronous=FULL")
                self.conn.executescript(_SCHEMA)
                if self.conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'text_spans_kind'").fetchone() is None:
                    with self.transaction():  # the text channel; an older catalog gets it here
                        create_text_schema(self.conn)
                        self.conn.execute(_TEXT_STATE)
            self.conn.row_factory = sqlite3.Row
            version = self.get_meta("schema")
        except sqlite3.DatabaseError as e:
            raise VidclipError(f"{self.path}: not a readable vidclip catalog ({e})") from None
        if version is None and not readonly:
            with self.transaction() as cur:
                self._set(cur, "schema", SCHEMA_VERSION)
                self._set(cur, "generation", 0)
                self._set(cur, "created_at", time.time())
        elif version is not None and version != SCHEMA_VERSION:
            raise IndexMismatchError(f"{self.path}: catalog schema {version}, this vidclip reads {SCHEMA_VERSION}")

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Catalog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ----------------------------------------------------------------------- transactions, meta

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Cursor]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on any exception)."""
        cur = self.conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        cur.execute("COMMIT")

    def get_meta(self, key: str, default=None):
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row is not None else default

    @staticmethod
    def _set(cur: sqlite3.Cursor, key: str, value) -> None:
        cur.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (key, json.dumps(value, sort_keys=True)))

    def set_meta(self, cur: sqlite3.Cursor, key: str, value) -> None:
        self._set(cur, key, value)

    def delete_meta(self, cur: sqlite3.Cursor, key: str) -> None:
        cur.execute("DELETE FROM meta WHERE key = ?", (key,))

    @property
    def generation(self) -> int:
        return int(self.get_meta("generation", 0))

    def bump_generation(self, cur: sqlite3.Cursor) -> int:
        gen = int(cur.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0]) + 1
        self._set(cur, "generation", gen)
        return gen

    def check_or_set_identity(self, model: dict, model_key: str, sampler: dict, temporal: dict) -> None:
        """Record model/sampler/temporal on first use; afterwards refuse anything different.

        ``model_key`` is ModelIdentity.key() (weights digest based), the comparison that matters.
        """
        stored_key = self.get_meta("model_key")
        if stored_key is None:
            with self.transaction() as cur:
                self._set(cur, "model", model)
                self._set(cur, "model_key", model_key)
                self._set(cur, "sampler", sampler)
                self._set(cur, "temporal", temporal)
            return
        if stored_key != model_key:
            old = self.get_meta("model") or {}
            raise IndexMismatchError(
                f"{self.path.parent}: this index was built with model {old.get('name')!r} "
                f"(pretrained {old.get('pretrained')!r}, key {stored_key}) and cannot mix in embeddings of "
                f"{model.get('name')!r} (pretrained {model.get('pretrained')!r}, key {model_key}); "
                "use another --index directory or the index's own model"
            )
        old_sampler = self.get_meta("sampler")
        if old_sampler != sampler:
            raise IndexMismatchError(
                f"{self.path.parent}: this index samples frames with {old_sampler}, not {sampler}; "
                "use the same sampling options or another --index directory"
            )
        old_temporal = self.get_meta("temporal")
        if old_temporal != temporal:
            raise IndexMismatchError(
                f"{self.path.parent}: this index pools frames with temporal module {old_temporal}, not {temporal}; "
                "use the same --temporal or another --index directory"
            )

    # ----------------------------------------------------------------------- reads

    def _rows(self, sql: str, args: Iterable = ()) -> list[dict]:
        out = []
        for r in self.conn.execute(sql, tuple(args)):
            d = dict(r)
            for col in PATH_COLUMNS:
                if col in d:
                    d[col] = _from_db(d[col])
            if "metadata" in d:
                d["metadata"] = json.loads(d["metadata"] or "{}")
            out.append(d)
        return out

    def video(self, video_id: int) -> dict | None:
        rows = self._rows(f"SELECT {', '.join(VIDEO_COLUMNS)} FROM videos WHERE id = ?", (int(video_id),))
        return rows[0] if rows else None

    def videos(self, status: str | None = None, source: str | None = None) -> list[dict]:
        where, args = [], []
        if status is not None:
            where.append("status = ?")
            args.append(status)
        if source is not None:
            where.append("source = ?")
            args.append(_to_db(source))
        sql = f"SELECT {', '.join(VIDEO_COLUMNS)} FROM videos"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return self._rows(sql + " ORDER BY id", args)

    def videos_by_ids(self, ids: Iterable[int]) -> dict[int, dict]:
        ids = [int(i) for i in ids]
        out: dict[int, dict] = {}
        for lo in range(0, len(ids), 500):  # stay under SQLite's bound-parameter limit
            chunk = ids[lo:lo + 500]
            for row in self._rows(f"SELECT {', '.join(VIDEO_COLUMNS)} FROM videos WHERE id IN "
                                  f"({','.join('?' * len(chunk))})", chunk):
                out[row["id"]] = row
        return out

    def live(self) -> dict[str, dict]:
        """abs_path -> {id, abs_path, source, size, mtime_ns, hash, status} for every non-deleted video.

        Only the columns change detection needs: this is read whole at the start of every run.
        """
        cols = ("id", "abs_path", "source", "size", "mtime_ns", "hash", "status")
        out = {}
        for r in self.conn.execute(f"SELECT {', '.join(cols)} FROM videos WHERE status != 'deleted'"):
            d = dict(zip(cols, r))
            d["abs_path"], d["source"] = _from_db(d["abs_path"]), _from_db(d["source"])
            out[d["abs_path"]] = d
        return out

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATUSES, 0)
        for status, n in self.conn.execute("SELECT status, COUNT(*) FROM videos GROUP BY status"):
            out[status] = n
        out["segments"] = self.conn.execute(
            "SELECT COUNT(*) FROM segments s JOIN videos v ON v.id = s.video_id WHERE v.status = 'indexed'").fetchone()[0]
        return out

    def video_vectors(self, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids int64 [N], vectors float32 [N, dim]) of every indexed video."""
        rows = self.conn.execute("SELECT id, vector FROM videos WHERE status = 'indexed' ORDER BY id").fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64), blob_vectors([r[1] for r in rows], dim)

    def segment_vectors(self, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """(segment ids int64 [M], vectors float32 [M, dim]) of every window of an indexed video."""
        rows = self.conn.execute(
            "SELECT s.id, s.vector FROM segments s JOIN videos v ON v.id = s.video_id "
            "WHERE v.status = 'indexed' ORDER BY s.id").fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64), blob_vectors([r[1] for r in rows], dim)

    _VECTOR_SQL = {
        "videos": ("SELECT COUNT(*) FROM videos WHERE status = 'indexed'",
                   "SELECT id, vector FROM videos WHERE status = 'indexed' AND id > ? ORDER BY id LIMIT ?"),
        "segments": ("SELECT COUNT(*) FROM segments s JOIN videos v ON v.id = s.video_id WHERE v.status = 'indexed'",
                     "SELECT s.id, s.vector FROM segments s JOIN videos v ON v.id = s.video_id "
                     "WHERE v.status = 'indexed' AND s.id > ? ORDER BY s.id LIMIT ?"),
    }

    def count_vectors(self, kind: str) -> int:
        """How many vectors :meth:`iter_vectors` yields for ``kind`` ("videos" / "segments")."""
        return int(self.conn.execute(self._vector_sql(kind)[0]).fetchone()[0])

    def iter_vectors(self, kind: str, dim: int, chunk: int = 65_536) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The stored vectors of ``kind`` in id order, ``chunk`` rows at a time: (ids int64 [C], vectors
        float32 [C, dim]) per step, every indexed vector exactly once, never more than one chunk in memory.

        Keyset pagination (``id > last``): each step is an index range scan, so the whole pass costs
        one table scan whatever its length. Run it inside one read transaction (``BEGIN``) when the
        pass must see a single catalog generation while writers commit.
        """
        sql = self._vector_sql(kind)[1]
        if int(chunk) <= 0:
            raise ValueError(f"catalog: chunk must be positive, got {chunk}")
        last = -1
        while True:
            rows = self.conn.execute(sql, (last, int(chunk))).fetchall()
            if not rows:
                return
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            yield ids, blob_vectors([r[1] for r in rows], dim)
            last = int(ids[-1])
            if len(rows) < chunk:
                return

    def _vector_sql(self, kind: str) -> tuple[str, str]:
        try:
            return self._VECTOR_SQL[kind]
        except KeyError:
            raise ValueError(f"catalog: vector kind must be 'videos' or 'segments', got {kind!r}") from None

    def segments_of(self, video_ids: Iterable[int], dim: int) -> dict[int, tuple[list[dict], np.ndarray]]:
        """video id -> (window rows ordered by start, their vectors float32 [W, dim])."""
        ids = [int(i) for i in video_ids]
        grouped: dict[int, tuple[list, list]] = {i: ([], []) for i in ids}
        for lo in range(0, len(ids), 500):
            chunk = ids[lo:lo + 500]
            for r in self.conn.execute(
                    f"SELECT id, video_id, start, end, first, count, vector FROM segments WHERE video_id IN "
                    f"({','.join('?' * len(chunk))}) ORDER BY video_id, start, id", chunk):
                rows, blobs = grouped[r["video_id"]]
                rows.append({k: r[k] for k in ("id", "video_id", "start", "end", "first", "count")})
                blobs.append(r["vector"])
        return {i: (rows, blob_vectors(blobs, dim)) for i, (rows, blobs) in grouped.items()}

    def segments_by_ids(self, segment_ids: Iterable[int]) -> dict[int, dict]:
        ids = [int(i) for i in segment_ids]
        out = {}
        for lo in range(0, len(ids), 500):
            chunk = ids[lo:lo + 500]
            for r in self.conn.execute(
                    f"SELECT id, video_id, start, end, first, count FROM segments WHERE id IN ({','.join('?' * len(chunk))})",
                    chunk):
                out[r["id"]] = dict(r)
        return out

    def has_text_tables(self) -> bool:
        """Whether the text channel's tables exist (a catalog made before it, opened read-only, lacks them)."""
        return self.conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'text_state'").fetchone() is not None

    def text_fingerprints(self) -> dict[int, str]:
        """video id -> fingerprint of the sources its stored words were read from."""
        if not self.has_text_tables():
            return {}
        return {int(r[0]): r[1] for r in self.conn.execute("SELECT video_id, fingerprint FROM text_state")}

    def set_text(self, cur: sqlite3.Cursor, video_id: int, entries: Iterable[TextEntry], fingerprint: str,
                 metadata: dict | None = None) -> None:
        """Replace the words of ``video_id`` by ``entries`` read from sources ``fingerprint`` (and
        its ``metadata`` column, when given), inside the caller's transaction."""
        delete_text(cur.connection, [video_id])
        add_text(cur.connection, video_id, entries)
        cur.execute("INSERT INTO text_state(video_id, fingerprint) VALUES (?, ?) ON CONFLICT(video_id) "
                    "DO UPDATE SET fingerprint = excluded.fingerprint", (int(video_id), fingerprint))
        if metadata is not None:
            cur.execute("UPDATE videos SET metadata = ? WHERE id = ?",
                        (json.dumps(metadata, sort_keys=True, default=str), int(video_id)))

    def referenced_shards(self) -> set[str]:
        return {r[0] for r in self.conn.execute("SELECT DISTINCT shard FROM videos WHERE status = 'indexed' AND shard IS NOT NULL")}

    # ----------------------------------------------------------------------- writes (inside a transaction)

    def insert_video(self, cur: sqlite3.Cursor, *, key: str, source: str, root: str, path: str, abs_path: str,
                     size: int | None, mtime_ns: int | None, hash: str | None, status: str,
                     duration: float | None = None, fps: float | None = None, error: str | None = None,
                     metadata: dict | None = None, shard: str | None = None, offset: int | None = None,
                     count: int | None = None, vector=None) -> int:
        if status not in STATUSES:
            raise ValueError(f"catalog: status must be one of {STATUSES}, got {status!r}")
        cur.execute(
            "INSERT INTO videos(key, source, root, path, abs_path, size, mtime_ns, hash, duration, fps, status, error, "
            "metadata, shard, offset, count, vector, indexed_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (*map(_to_db, (key, source, root, path, abs_path)), size, mtime_ns, hash, duration, fps, status,
             _to_db(error),
             json.dumps(metadata or {}, sort_keys=True, default=str), shard, offset, count,
             None if vector is None else vector_blob(vector), time.time()))
        return int(cur.lastrowid)

    def insert_segments(self, cur: sqlite3.Cursor, video_id: int, windows: list[tuple[float, float, int, int]],
                        vectors: np.ndarray) -> None:
        cur.executemany(
            "INSERT INTO segments(video_id, start, end, first, count, vector) VALUES (?,?,?,?,?,?)",
            [(video_id, float(w[0]), float(w[1]), int(w[2]), int(w[3]), vector_blob(v)) for w, v in zip(windows, vectors)])

    def mark_deleted(self, cur: sqlite3.Cursor, video_ids: Iterable[int]) -> None:
        """Status ``deleted``; frames, vector and windows dropped (the row stays as history)."""
        ids = [(int(i),) for i in video_ids]
        cur.executemany("UPDATE videos SET status = 'deleted', vector = NULL, shard = NULL, offset = NULL, "
                        "count = NULL, indexed_at = ? WHERE id = ?", [(time.time(), i) for (i,) in ids])
        cur.executemany("DELETE FROM segments WHERE video_id = ?", ids)
        self._drop_text(cur, [i for (i,) in ids])

    def _drop_text(self, cur: sqlite3.Cursor, ids: list[int]) -> None:
        delete_text(cur.connection, ids)
        cur.executemany("DELETE FROM text_state WHERE video_id = ?", [(i,) for i in ids])

    def mark_lost(self, cur: sqlite3.Cursor, video_ids: Iterable[int], reason: str) -> None:
        """An indexed video whose stored frames are gone: status ``failed`` with ``reason``, and its
        recorded size and mtime cleared so that the next ``vidclip index`` of its library sees it as
        changed and re-encodes it (only it)."""
        ids = [int(i) for i in video_ids]
        cur.executemany("UPDATE videos SET status = 'failed', error = ?, size = NULL, mtime_ns = NULL, vector = NULL, "
                        "shard = NULL, offset = NULL, count = NULL, indexed_at = ? WHERE id = ?",
                        [(_to_db(reason), time.time(), i) for i in ids])
        cur.executemany("DELETE FROM segments WHERE video_id = ?", [(i,) for i in ids])
        self._drop_text(cur, ids)

    @staticmethod
    def segment_ids_of(cur: sqlite3.Cursor, video_ids: Sequence[int]) -> list[int]:
        out: list[int] = []
        ids = [int(i) for i in video_ids]
        for lo in range(0, len(ids), 500):
            chunk = ids[lo:lo + 500]
            out += [r[0] for r in cur.execute(
                f"SELECT id FROM segments WHERE video_id IN ({','.join('?' * len(chunk))})", chunk)]
        return out

    def touch(self, cur: sqlite3.Cursor, video_id: int, mtime_ns: int) -> None:
        """Record a new mtime for a file whose content hash did not change."""
        cur.execute("UPDATE videos SET mtime_ns = ? WHERE id = ?", (int(mtime_ns), int(video_id)))
