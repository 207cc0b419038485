"""The text channel (vidclip/index/textsearch.py): FTS5 storage of names, subtitle cues and
metadata; user text matched as words, never as FTS5 syntax; BM25 order; deletes."""

from __future__ import annotations

import sqlite3

import pytest

from vidclip.core.errors import BackendUnavailableError, ConfigError
from vidclip.index import textsearch
from vidclip.index.textsearch import (
    TextEntry,
    add_text,
    check_fts5,
    create_text_schema,
    delete_text,
    has_text,
    match_query,
    metadata_entries,
    name_entries,
    search_text,
    subtitle_entries,
)
from vidclip.video.subtitles import Cue

FILLER = ["weather report sunny", "football match highlights", "cooking pasta recipe", "mountain hike",
          "city traffic at night", "ocean waves", "cat video", "piano lesson", "garden tour", "train station"]


@pytest.fixture
def conn():
    c = sqlite3.connect(":memory:")
    create_text_schema(c)
    create_text_schema(c)  # idempotent
    # Ten videos of unrelated words: BM25's IDF needs the query words to be rare in the corpus.
    for i, text in enumerate(FILLER, start=100):
        add_text(c, i, [TextEntry("subtitle", text, 0.0, 1.0, "f.srt")])
    c.commit()
    yield c
    c.close()


def _integrity(c):
    # 'integrity-check' with rank 1 also checks the index against the external content table.
    c.execute("INSERT INTO text_fts(text_fts, rank) VALUES ('integrity-check', 1)")


def test_name_entries_split_folders_camel_case_and_digits():
    (entry,) = name_entries("news/2023-05_BudgetMeeting.final.mp4")
    assert entry.kind == "name" and entry.source == "news/2023-05_BudgetMeeting.final.mp4"
    assert entry.text == "news 2023 05 Budget Meeting BudgetMeeting final"
    assert name_entries("HTTPServer_S01E02.mkv")[0].text == "HTTP Server HTTPServer S 01 E 02 S01E02"
    # a video outside its library folder: the last folders, not the whole disk path
    assert name_entries("/home/me/media/shows/clip.mp4")[0].text == "media shows clip"
    assert name_entries("caféBar über_Straße.mp4")[0].text == "café Bar caféBar über Straße"
    assert name_entries("") == []


def test_undecodable_file_names_are_stored(conn):
    key = b"caf\xe9_budget.mp4".decode("utf-8", "surrogateescape")  # a Latin-1 name on a UTF-8 disk
    add_text(conn, 1, name_entries(key))  # SQLite refuses lone surrogates: they become U+FFFD
    (hit,) = search_text(conn, "budget", k=1)
    assert hit.source == "caf\ufffd_budget.mp4" and hit.words == ("budget",)


def test_subtitle_and_metadata_entries():
    cues = [Cue(1.0, 2.0, "hello", 3), Cue(2.0, 3.0, "", 7)]
    assert subtitle_entries(cues, "a.en.srt") == [TextEntry("subtitle", "hello", 1.0, 2.0, "a.en.srt")]
    assert metadata_entries({"topic": "budget", "year": 2023, "tags": ["news", "tv"], "empty": " "}) == [
        TextEntry("metadata", "budget", source="topic"), TextEntry("metadata", "2023", source="year"),
        TextEntry("metadata", "news tv", source="tags")]


def test_subtitle_word_finds_its_video_with_the_cue_span(conn):
    add_text(conn, 1, name_entries("news/monday.mp4") + subtitle_entries(
        [Cue(0.0, 2.0, "good morning everyone", 1), Cue(12.5, 15.0, "the budget was approved", 5)], "monday.srt"))
    add_text(conn, 2, name_entries("news/tuesday.mp4"))
    (hit,) = search_text(conn, "budget", k=5)
    assert (hit.video_id, hit.kind, hit.source, hit.start, hit.end) == (1, "subtitle", "monday.srt", 12.5, 15.0)
    assert hit.words == ("budget",) and hit.text == "the budget was approved" and hit.score > 0


def test_bm25_order_and_score_is_negated_bm25(conn):
    add_text(conn, 1, [TextEntry("subtitle", "budget meeting about the new budget plan", 0, 1, "a.srt")])
    add_text(conn, 2, [TextEntry("subtitle", "a budget talk with many other words in this long cue", 0, 1, "b.srt")])
    add_text(conn, 3, [TextEntry("subtitle", "meeting", 0, 1, "c.srt")])
    add_text(conn, 4, [TextEntry("metadata", "budget meeting", source="title")])
    hits = search_text(conn, "Budget meeting", k=10)
    assert [h.video_id for h in hits][:2] == [4, 1]  # both words, short; then both words, longer
    assert set(h.video_id for h in hits) == {1, 2, 3, 4}  # OR: one word is enough to be found
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))
    raw = dict(conn.execute("SELECT s.video_id, bm25(text_fts) FROM text_fts JOIN text_spans s "
                            "ON s.id = text_fts.rowid WHERE text_fts MATCH ?", (match_query("Budget meeting"),)))
    assert all(h.score == pytest.approx(-raw[h.video_id]) for h in hits)
    assert all(v < 0 for v in raw.values())  # FTS5: lower is better; ours: higher is better


def test_best_span_per_video(conn):
    add_text(conn, 1, subtitle_entries([Cue(0.0, 1.0, "a long cue that says budget once among many words", 1),
                                        Cue(30.0, 31.0, "budget budget", 9)], "x.srt"))
    (hit,) = search_text(conn, "budget", k=5)
    assert (hit.start, hit.end, hit.text) == (30.0, 31.0, "budget budget")


def test_stemming_diacritics_case_and_unicode(conn):
    add_text(conn, 1, [TextEntry("subtitle", "The BUDGETS were discussed", 0, 1, "a.srt")])
    add_text(conn, 2, [TextEntry("metadata", "Café Crème", source="place")])
    add_text(conn, 3, [TextEntry("subtitle", "日本語 ニュース", 0, 1, "ja.srt")])
    add_text(conn, 4, [TextEntry("subtitle", "Ελληνικά νέα", 0, 1, "el.srt")])
    (hit,) = search_text(conn, "budget", k=5)
    assert hit.video_id == 1 and hit.words == ("BUDGETS",)  # the word as the text writes it
    assert [h.video_id for h in search_text(conn, "CAFE creme", k=5)] == [2]
    assert [h.video_id for h in search_text(conn, "ニュース", k=5)] == [3]
    assert [h.video_id for h in search_text(conn, "ΕΛΛΗΝΙΚΆ", k=5)] == [4]


@pytest.mark.parametrize("user_text", [
    '"', '""', "'", "a AND", "AND", "OR OR", "NOT budget", "NEAR(", "NEAR(budget meeting, 2)", "col:x", "text:budget",
    "*", "budg*", "^budget", "budget)", "(((", "{text}: x", "-budget", "+", "\\", "\x00", "🙂", "x" * 5000,
    "word " * 1000, "%_", "';DROP TABLE text_spans;--",
])
def test_hostile_user_text_never_reaches_fts5_as_syntax(conn, user_text):
    add_text(conn, 1, [TextEntry("subtitle", "the budget meeting", 0, 1, "a.srt")])
    hits = search_text(conn, user_text, k=5)  # no sqlite3.OperationalError
    assert all(h.video_id == 1 for h in hits)
    expr = match_query(user_text)
    assert expr == "" or all(part.startswith('"') and part.endswith('"') for part in expr.split(" OR "))
    assert conn.execute("SELECT count(*) FROM text_spans").fetchone()[0] == len(FILLER) + 1


def test_raw_user_text_would_be_fts5_syntax(conn):
    """Why match_query exists: the same strings passed to MATCH as they are fail or change meaning."""
    for raw in ['"', "a AND", "NEAR(", "col:x", "*"]:
        with pytest.raises(sqlite3.OperationalError):
            conn.execute("SELECT rowid FROM text_fts WHERE text_fts MATCH ?", (raw,)).fetchall()


def test_operators_are_plain_words(conn):
    add_text(conn, 1, [TextEntry("subtitle", "rock and roll", 0, 1, "a.srt")])
    add_text(conn, 2, [TextEntry("subtitle", "near the river", 0, 1, "b.srt")])
    assert match_query('NEAR(river, 2) "AND"') == '"near" OR "river" OR "2" OR "and"'
    assert [h.video_id for h in search_text(conn, "AND", k=5)] == [1]
    assert [h.video_id for h in search_text(conn, "NEAR", k=5)] == [2]
    assert match_query("") == "" and search_text(conn, "  ***  ", k=5) == []


def test_allowed_ids_filter_inside_the_query(conn):
    for vid in range(1, 21):
        add_text(conn, vid, [TextEntry("subtitle", "budget " * (21 - vid), 0, 1, "a.srt")])
    assert [h.video_id for h in search_text(conn, "budget", k=3)] == [1, 2, 3]
    # only the 3 weakest matches are allowed: k=3 still gives 3 hits
    assert [h.video_id for h in search_text(conn, "budget", k=3, allowed_ids={18, 19, 20})] == [18, 19, 20]
    assert search_text(conn, "budget", k=3, allowed_ids=[]) == []


def test_delete_removes_words_and_keeps_the_index_consistent(conn):
    add_text(conn, 1, name_entries("budget.mp4") + [TextEntry("metadata", "finance", source="topic")])
    add_text(conn, 2, [TextEntry("subtitle", "budget cuts", 3.0, 4.0, "b.srt")])
    conn.commit()
    assert delete_text(conn, [1]) == 2
    conn.commit()
    assert [h.video_id for h in search_text(conn, "budget finance", k=5)] == [2]
    assert conn.execute("SELECT count(*) FROM text_fts WHERE text_fts MATCH 'finance'").fetchone()[0] == 0
    _integrity(conn)
    assert delete_text(conn, []) == 0


def test_add_and_delete_follow_the_callers_transaction(conn):
    add_text(conn, 1, [TextEntry("subtitle", "budget", 0, 1, "a.srt")])
    conn.rollback()  # add_text did not commit: the words go with the rolled-back transaction
    assert search_text(conn, "budget", k=5) == []
    add_text(conn, 1, [TextEntry("subtitle", "budget", 0, 1, "a.srt")])
    conn.commit()
    delete_text(conn, [1])
    conn.rollback()
    assert [h.video_id for h in search_text(conn, "budget", k=5)] == [1]
    _integrity(conn)


def test_has_text_and_bad_kind_and_control_characters(conn):
    c = sqlite3.connect(":memory:")
    create_text_schema(c)
    add_text(c, 1, name_entries("clip.mp4"))
    assert not has_text(c) and has_text(c, kinds=("name",))
    add_text(c, 1, [TextEntry("metadata", "a\x01b\x02c", source="k")])
    assert has_text(c)
    (hit,) = search_text(c, "b", k=1)
    assert hit.text == "a b c" and hit.words == ("b",)
    with pytest.raises(ConfigError, match="text entry kind 'audio'"):
        add_text(c, 1, [TextEntry("audio", "x")])


def test_check_fts5_says_what_is_missing(monkeypatch):
    class NoFTS5:
        def execute(self, sql):
            raise sqlite3.OperationalError("no such module: fts5")

        def close(self):
            pass

    check_fts5.cache_clear()
    monkeypatch.setattr(textsearch.sqlite3, "connect", lambda *a, **k: NoFTS5())
    try:
        with pytest.raises(BackendUnavailableError, match=r"needs SQLite's FTS5 .*no such module: fts5.*--mode visual"):
            check_fts5()
    finally:
        monkeypatch.undo()
        check_fts5.cache_clear()
    check_fts5()  # the real one has it


def test_subtitle_cues_in_time_order_per_video_without_names_or_metadata(conn):
    add_text(conn, 1, name_entries("news/monday.mp4") + metadata_entries({"show": "news"}) + subtitle_entries(
        [Cue(12.5, 15.0, "second", 5), Cue(0.0, 2.0, "first", 1)], "monday.srt"))
    add_text(conn, 2, name_entries("news/tuesday.mp4"))
    assert textsearch.subtitle_cues(conn, [2, 1, 1]) == {1: [(0.0, 2.0, "first"), (12.5, 15.0, "second")]}
    assert textsearch.subtitle_cues(conn, []) == {}
