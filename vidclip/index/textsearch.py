"""The text channel: words from names, subtitles and metadata, stored and searched with SQLite FTS5.

Functions over a ``sqlite3.Connection`` (the catalog's, later), so the words live in the same
database as the rest of the index and change in the same transactions: none of these functions
commits. Tables::

    text_spans(id, video_id, kind, start, end, source, text)   one row per searchable span
    text_fts(text)                                              FTS5 index over text_spans.text

``kind`` is ``name`` (file and folder names, split into words: :func:`name_entries`),
``subtitle`` (one cue: ``start`` / ``end`` its span in seconds, ``source`` the sidecar's file
name or ``"stream N"``) or ``metadata`` (one key's value: ``source`` is the key). ``text_fts``
is an *external-content* FTS5 table (``content='text_spans'``): the text is stored once, in
``text_spans``; triggers keep the index in step with every insert and delete, inside the
caller's transaction, so a crash leaves both or neither. Deleting a video's words is an indexed
delete by ``video_id`` (a plain FTS5 table with UNINDEXED columns would scan the whole table).

Tokenizer: ``porter unicode61 remove_diacritics 2``. unicode61 splits on anything but letters
and digits in every script and folds case; ``remove_diacritics 2`` makes "café" match "cafe"
(every accent, including those on characters with several); porter stems English on top, so
"budgets" finds "budget" and "meetings" finds "meeting". Stemming is applied alike to text and
query; its cost is rare over-matching ("universe" and "university" share a stem). Scripts
written without spaces (Chinese, Japanese) become one token per run of characters, so their
words match only whole runs: a known limit of unicode61.

Queries: user text is never FTS5 syntax (:func:`match_query`): it is split into words, each
quoted as a string, joined by OR, so partial matches are found and BM25 ranks videos matching
more (and rarer) words higher. ``"``, ``*``, ``^``, ``NEAR(``, ``AND``/``OR``/``NOT``,
``col:x`` reach FTS5 as plain quoted words or not at all.

Scores: FTS5's ``bm25()`` is *lower* is better (negative); :class:`TextHit` ``score`` is its
negation, so higher is better, as every vidclip score.

No torch; sqlite3 only.
"""

from __future__ import annotations

import functools
import json
import re
import sqlite3
from dataclasses import dataclass
from typing import Iterable, Sequence

from vidclip.core.errors import BackendUnavailableError, ConfigError

__all__ = [
    "KINDS",
    "TOKENIZER",
    "TextEntry",
    "TextHit",
    "add_text",
    "check_fts5",
    "create_text_schema",
    "delete_text",
    "has_text",
    "match_query",
    "metadata_entries",
    "name_entries",
    "query_words",
    "search_text",
    "subtitle_entries",
]

KINDS = ("name", "subtitle", "metadata")
TOKENIZER = "porter unicode61 remove_diacritics 2"
#: Words of one query kept (the rest ignored): bounds the work of one MATCH.
MAX_QUERY_WORDS = 32
#: Characters of a span's text stored (a subtitle cue is already capped at 2000).
MAX_SPAN_CHARS = 4000

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS text_spans (
        id       INTEGER PRIMARY KEY,          -- the rowid text_fts indexes
        video_id INTEGER NOT NULL,             -- videos.id in the catalog
        kind     TEXT NOT NULL CHECK (kind IN ('name', 'subtitle', 'metadata')),
        start    REAL,                         -- seconds (subtitle cues only)
        "end"    REAL,
        source   TEXT NOT NULL DEFAULT '',     -- sidecar file / "stream N" / metadata key / name
        text     TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS text_spans_video ON text_spans(video_id)",
    # has_text asks "any subtitle or metadata span?" on every default-mode search: without this
    # index that is a scan of every name span in a library without subtitles
    "CREATE INDEX IF NOT EXISTS text_spans_kind ON text_spans(kind)",
    f"""CREATE VIRTUAL TABLE IF NOT EXISTS text_fts USING fts5(
        text, content='text_spans', content_rowid='id', tokenize='{TOKENIZER}'
    )""",
    """CREATE TRIGGER IF NOT EXISTS text_spans_insert AFTER INSERT ON text_spans BEGIN
        INSERT INTO text_fts(rowid, text) VALUES (new.id, new.text);
    END""",
    """CREATE TRIGGER IF NOT EXISTS text_spans_delete AFTER DELETE ON text_spans BEGIN
        INSERT INTO text_fts(text_fts, rowid, text) VALUES ('delete', old.id, old.text);
    END""",
    """CREATE TRIGGER IF NOT EXISTS text_spans_update AFTER UPDATE ON text_spans BEGIN
        INSERT INTO text_fts(text_fts, rowid, text) VALUES ('delete', old.id, old.text);
        INSERT INTO text_fts(rowid, text) VALUES (new.id, new.text);
    END""",
)


@functools.cache
def check_fts5() -> None:
    """Raise BackendUnavailableError, saying what to do, when this Python's SQLite lacks FTS5
    (or its porter / unicode61 tokenizers). Cheap after the first call."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute(f"CREATE VIRTUAL TABLE probe USING fts5(x, tokenize='{TOKENIZER}')")
    except sqlite3.OperationalError as e:
        raise BackendUnavailableError(
            f"text search needs SQLite's FTS5 full-text module, which the SQLite {sqlite3.sqlite_version} "
            f"of this Python lacks ({e}); use a Python whose sqlite3 has FTS5 (python.org and conda "
            "builds do), or search with --mode visual") from None
    finally:
        conn.close()


def create_text_schema(conn: sqlite3.Connection) -> None:
    """Create the text tables, index and triggers in ``conn`` (idempotent; does not commit)."""
    check_fts5()
    for statement in _SCHEMA:  # one by one: executescript would commit the caller's transaction
        conn.execute(statement)


# --- what goes in -----------------------------------------------------------------------------

@dataclass(frozen=True)
class TextEntry:
    """One searchable span: ``kind`` in KINDS, ``text``, its ``start`` / ``end`` (seconds, subtitle
    cues) and ``source`` (sidecar file or stream, metadata key, or the name searched)."""

    kind: str
    text: str
    start: float | None = None
    end: float | None = None
    source: str = ""


_NAME_SEPARATORS = re.compile(r"[\W_]+")  # _ - . / spaces and any other non-word character


def _camel_words(piece: str) -> list[str]:
    """``piece`` split at camelCase and letter/digit boundaries, in any cased script:
    "BudgetMeeting2023" -> Budget Meeting 2023, "HTTPServer" -> HTTP Server, "S01E02" -> S 01 E 02,
    "caféBar" -> café Bar."""
    words: list[str] = []
    start = 0
    for i in range(1, len(piece)):
        prev, ch = piece[i - 1], piece[i]
        nxt = piece[i + 1] if i + 1 < len(piece) else ""
        if (ch.isdigit() != prev.isdigit()
                or (ch.isupper() and prev.islower())
                or (ch.isupper() and prev.isupper() and nxt.islower())):  # the end of an acronym
            words.append(piece[start:i])
            start = i
    words.append(piece[start:])
    return [w for w in words if w]


def _name_words(part: str) -> list[str]:
    words: list[str] = []
    for piece in _NAME_SEPARATORS.split(part):
        if not piece:
            continue
        sub = _camel_words(piece)
        words += sub
        if len(sub) > 1:
            words.append(piece)  # "BudgetMeeting" still matches a search for "budgetmeeting"
    return words


def name_entries(key: str) -> list[TextEntry]:
    """The ``name`` entry of a video from its library key (path relative to the library root,
    as the catalog's ``videos.key``): its folders and file stem, split on ``_ - . /`` spaces,
    camelCase and letter/digit boundaries; the extension is left out. Absolute keys (videos
    outside their library's folder) keep only the last two folders, not the whole disk path."""
    parts = [p for p in key.replace("\\", "/").split("/") if p]
    if not parts:
        return []
    if key.startswith("/"):
        parts = parts[-3:]
    stem = parts[-1].rsplit(".", 1)[0] if "." in parts[-1] else parts[-1]
    words = [w for part in parts[:-1] + [stem] for w in _name_words(part)]
    return [TextEntry("name", " ".join(words), source=key)] if words else []


def subtitle_entries(cues: Iterable, source: str) -> list[TextEntry]:
    """One ``subtitle`` entry per cue (:class:`vidclip.video.subtitles.Cue`: start, end, text)."""
    return [TextEntry("subtitle", c.text, float(c.start), float(c.end), source) for c in cues if c.text]


def metadata_entries(metadata: dict) -> list[TextEntry]:
    """One ``metadata`` entry per key (``source`` = the key; a list's items joined by spaces).
    Only values are searchable words: keys such as "topic" would match every video having one."""
    out = []
    for key, value in metadata.items():
        text = " ".join(str(v) for v in value) if isinstance(value, list) else str(value)
        if text.strip():
            out.append(TextEntry("metadata", text, source=str(key)))
    return out


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def add_text(conn: sqlite3.Connection, video_id: int, entries: Iterable[TextEntry]) -> int:
    """Store ``entries`` for ``video_id``; returns how many were stored (empty texts are
    skipped; texts over MAX_SPAN_CHARS are cut). Does not commit: call it inside the
    transaction that indexes the video, so its words and vectors appear together.

    Raises:
        ConfigError: an entry of unknown ``kind``.
    """
    rows = []
    for e in entries:
        if e.kind not in KINDS:
            raise ConfigError(f"text entry kind {e.kind!r}: choose {', '.join(KINDS)}")
        # control characters out: \x01 / \x02 mark matches in search_text, and none is a word;
        # lone surrogates (a file name's undecodable bytes) out: SQLite takes only valid UTF-8
        text = _SURROGATE.sub("\ufffd", _CONTROL.sub(" ", e.text)).strip()[:MAX_SPAN_CHARS]
        if text:
            rows.append((int(video_id), e.kind, e.start, e.end, _SURROGATE.sub("\ufffd", e.source), text))
    conn.executemany('INSERT INTO text_spans (video_id, kind, start, "end", source, text) '
                     "VALUES (?, ?, ?, ?, ?, ?)", rows)
    return len(rows)


def delete_text(conn: sqlite3.Connection, video_ids: Iterable[int]) -> int:
    """Remove every span of ``video_ids`` (their words leave the FTS index with them); returns
    how many spans went. Does not commit."""
    ids = json.dumps([int(v) for v in video_ids])
    cur = conn.execute("DELETE FROM text_spans WHERE video_id IN (SELECT value FROM json_each(?))", (ids,))
    return cur.rowcount


def subtitle_cues(conn: sqlite3.Connection, video_ids: Iterable[int]) -> dict[int, list[tuple[float, float, str]]]:
    """{video id: [(start, end, text), ...] of its subtitle cues in time order} for ``video_ids``
    (what :mod:`vidclip.index.export` writes beside each span's embedding)."""
    ids = json.dumps(sorted({int(v) for v in video_ids}))
    cues: dict[int, list[tuple[float, float, str]]] = {}
    for vid, start, end, text in conn.execute(
            'SELECT video_id, start, "end", text FROM text_spans WHERE kind = \'subtitle\' '
            "AND video_id IN (SELECT value FROM json_each(?)) ORDER BY video_id, start, id", (ids,)):
        cues.setdefault(int(vid), []).append((float(start or 0.0), float(end or 0.0), text))
    return cues


def has_text(conn: sqlite3.Connection, kinds: Sequence[str] = ("subtitle", "metadata")) -> bool:
    """Whether any span of ``kinds`` is stored (names alone exist in every index; by default
    only subtitles and metadata count as "the index has text")."""
    marks = ",".join("?" * len(kinds))
    row = conn.execute(f"SELECT 1 FROM text_spans WHERE kind IN ({marks}) LIMIT 1", tuple(kinds)).fetchone()
    return row is not None


# --- queries ----------------------------------------------------------------------------------

# A word: a run of letters and digits (any script). Everything else, "_" included, separates,
# as unicode61 does; so no FTS5 operator character can survive into a word.
_WORD = re.compile(r"[^\W_]+")


def query_words(user_text: str) -> list[str]:
    """The distinct words of ``user_text`` (first MAX_QUERY_WORDS, case-folded, in order)."""
    seen: dict[str, None] = {}
    for w in _WORD.findall(user_text or ""):
        seen.setdefault(w.casefold(), None)
        if len(seen) == MAX_QUERY_WORDS:
            break
    return list(seen)


def match_query(user_text: str) -> str:
    """User text -> a safe FTS5 MATCH expression: each word a quoted string, joined by OR
    (``budget "AND" x`` -> ``"budget" OR "and" OR "x"``); "" when the text has no word.

    Quoting makes every word a plain string to FTS5 (NEAR, AND, OR, NOT, ``col:`` are only
    operators outside quotes), and only letters and digits are left to quote, so no user
    character can end the string early.
    """
    return " OR ".join(f'"{w}"' for w in query_words(user_text))


@dataclass(frozen=True)
class TextHit:
    """The best text match of one video.

    ``score``: -bm25 of its best span (higher is better). ``kind`` / ``source`` / ``start`` /
    ``end`` / ``text``: where it matched (a subtitle cue's span is the moment to show; a
    metadata key; the name). ``words``: the words of ``text`` that matched, as written there
    (stemming may make them differ from the query's: "budgets" for "budget").
    """

    video_id: int
    score: float
    kind: str
    source: str
    start: float | None
    end: float | None
    text: str
    words: tuple[str, ...]


_OPEN, _CLOSE = "\x01", "\x02"  # highlight() marks: control characters no stored text holds
_MARKED = re.compile(f"{_OPEN}(.*?){_CLOSE}", re.DOTALL)


def search_text(conn: sqlite3.Connection, query: str, k: int,
                allowed_ids: Iterable[int] | None = None) -> list[TextHit]:
    """The ``k`` videos whose text best matches ``query`` (user text, see :func:`match_query`),
    best first: one :class:`TextHit` per video, its best-scoring span. ``allowed_ids``: only
    these videos (a filter applied inside the query, so ``k`` hits come back when ``k`` match).
    A query with no word gives []."""
    expression = match_query(query)
    if not expression or k <= 0:
        return []
    sql = (f"SELECT s.video_id, -bm25(text_fts) AS score, s.kind, s.source, s.start, s.\"end\", "
           f"highlight(text_fts, 0, '{_OPEN}', '{_CLOSE}') "
           "FROM text_fts JOIN text_spans s ON s.id = text_fts.rowid WHERE text_fts MATCH ?")
    params: list = [expression]
    if allowed_ids is not None:
        sql += " AND s.video_id IN (SELECT value FROM json_each(?))"
        params.append(json.dumps([int(v) for v in allowed_ids]))
    sql += " ORDER BY bm25(text_fts), s.id"  # ties: the earlier span (first cue of a video)
    hits: dict[int, TextHit] = {}
    for video_id, score, kind, source, start, end, marked in conn.execute(sql, params):
        if video_id in hits:
            continue
        words = tuple(dict.fromkeys(m.strip() for m in _MARKED.findall(marked)))
        text = marked.replace(_OPEN, "").replace(_CLOSE, "")
        hits[video_id] = TextHit(int(video_id), float(score), kind, source, start, end, text, words)
        if len(hits) == k:
            break
    return list(hits.values())
