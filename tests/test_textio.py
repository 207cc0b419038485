"""vidclip.core.textio and every reader of user text files built on it (issue 16, section 5 and part of 6):
a BOM changes nothing, numbers are read strictly, and hostile text is one error line naming the
file and line."""

from __future__ import annotations

import json

import pytest

from vidclip.core.errors import ConfigError, DatasetError
from vidclip.core.textio import (
    CsvRows,
    parse_float,
    parse_int,
    parse_json,
    read_text,
    read_text_lines,
)
from vidclip.data.datasets import _read_id_list, load_dataset
from vidclip.eval.trec import read_qrels, read_run
from vidclip.index.scan import scan_library
from vidclip.recognition.datasets import read_class_list, read_class_names, read_path_label_csv
from vidclip.recognition.zeroshot import read_templates
from vidclip.rerank.inputs import read_mapping, read_topics

BOM = "\ufeff"

# ----------------------------------------------------------------------------- the helpers


def test_read_text_drops_a_bom_and_names_bad_bytes(tmp_path):
    f = tmp_path / "a.txt"
    f.write_bytes(b"\xef\xbb\xbf1 x\n2 y\n")
    assert read_text(f) == "1 x\n2 y\n" and read_text_lines(f) == ["1 x", "2 y"]
    f.write_bytes(b"\xef\xbb\xbfok\nfine\nbad \xff here\n")
    with pytest.raises(DatasetError, match=r"a\.txt:3: not UTF-8 text \(byte 0xff at column 5\)"):
        read_text(f)
    f.write_bytes("1 x\n".encode("utf-16"))
    with pytest.raises(ConfigError, match=r"a\.txt: UTF-16 text; save it as UTF-8"):
        read_text(f, error=ConfigError)
    with pytest.raises(DatasetError, match="is a folder"):
        read_text(tmp_path)
    with pytest.raises(DatasetError, match=r"nope\.txt: no such file"):
        read_text(tmp_path / "nope.txt")


def test_lines_split_only_at_line_ends(tmp_path):
    # str.splitlines() also splits at U+2028 and form feeds: a caption would become two lines
    f = tmp_path / "a.txt"
    f.write_text("a\u2028b\x0cc\r\nd\re\n\nf", newline="")
    assert read_text_lines(f) == ["a\u2028b\x0cc", "d", "e", "", "f"]


def test_csv_errors_name_the_line(tmp_path):
    f = tmp_path / "a.csv"
    f.write_text("a,b\n1,2\n3," + "x" * (130 * 1024) + "\n")
    rows = CsvRows(f, header=True)
    assert rows.fieldnames == ["a", "b"]
    with pytest.raises(DatasetError, match=r"a\.csv:3: not valid CSV: field larger than field limit"):
        list(rows)
    f.write_text("a,b\n1,\"2\n3,4\n")  # an open quote would swallow the rest of the file
    with pytest.raises(DatasetError, match=r"a\.csv:3: not valid CSV: .*the row from line 2 has a quote never"):
        list(CsvRows(f))
    f.write_text("x" * (130 * 1024) + ",b\n")
    with pytest.raises(DatasetError, match=r"a\.csv:1: not valid CSV"):
        _ = CsvRows(f, header=True).fieldnames
    f.write_text("a,\"b\nc\",d\n\ne\n")
    assert list(CsvRows(f)) == [(2, ["a", "b\nc", "d"]), (3, []), (4, ["e"])]


def test_parse_json_errors_are_one_line(tmp_path):
    assert parse_json('{"a": [1]}', "f.jsonl", 3) == {"a": [1]}
    for text, what in [("[" * 100_000 + "]" * 100_000, "nested too deeply"), ("{", "invalid JSON"),
                       ("1" * 5000, "invalid JSON")]:
        with pytest.raises(DatasetError, match=rf"^f\.jsonl:3: .*{what}") as e:
            parse_json(text, "f.jsonl", 3)
        assert "\n" not in str(e.value)
    with pytest.raises(DatasetError, match=r"^f\.json:2: invalid JSON"):
        parse_json('[1,\n2,,]', "f.json")  # a whole file: the line of the error


@pytest.mark.parametrize("text,want", [("7", 7), (" -3 ", -3), ("+0012", 12), (7, 7), (7.0, 7),
                                       (str(2**63 - 1), 2**63 - 1)])
def test_parse_int_plain(text, want):
    assert parse_int(text, "f:1", "rank") == want


@pytest.mark.parametrize("value,msg", [("1_000", r"'1_000' is not an integer \(no '_' digit separators\)"),
                                       (True, "true is not an integer"), ("1.5", "'1.5' is not an integer"),
                                       (1.5, "1.5 is not an integer"), ("١٢", "is not an integer"),
                                       (str(2**63), f"{2**63} is above {2**63 - 1}"),
                                       ("9" * 5000, "9999.* is above"), ("", "'' is not an integer"),
                                       (None, "rank is missing"), ([1], r"\[1\] is not an integer")])
def test_parse_int_refuses(value, msg):
    with pytest.raises(DatasetError, match=rf"^f:1: (rank )?.*{msg}") as e:
        parse_int(value, "f:1", "rank")
    assert len(str(e.value)) < 200 and "\n" not in str(e.value)


@pytest.mark.parametrize("text,want", [("2.5", 2.5), ("-.5", -0.5), ("1e3", 1000.0), ("3.", 3.0), (2, 2.0),
                                       (0.25, 0.25)])
def test_parse_float_plain(text, want):
    assert parse_float(text, "f:1", "score") == want


@pytest.mark.parametrize("value,msg", [("1_000", r"'1_000' is not a number \(no '_' digit separators\)"),
                                       (True, "true is not a number"), (False, "false is not a number"),
                                       ("nan", r"'nan' is not a number \(must be finite\)"),
                                       ("-Infinity", "must be finite"), ("1e999", "'1e999' is not finite"),
                                       (float("nan"), "nan is not finite"), (10**400, "is not finite"),
                                       ("0x10", "is not a number"), ("١", "is not a number")])
def test_parse_float_refuses(value, msg):
    with pytest.raises(DatasetError, match=rf"^f:1: score .*{msg}"):
        parse_float(value, "f:1", "score")


# ----------------------------------------------------------------------------- every reader: a BOM changes nothing


def _both(tmp_path, name, text, read):
    """``read`` of ``text`` saved without and with a UTF-8 BOM."""
    plain, bom = tmp_path / "plain", tmp_path / "bom"
    plain.mkdir(exist_ok=True)
    bom.mkdir(exist_ok=True)
    (plain / name).write_text(text, encoding="utf-8")
    (bom / name).write_text(BOM + text, encoding="utf-8")
    return read(plain / name), read(bom / name)


def _norm(x, tmp_path):
    # results that hold the file's own path: compare them relative to their folder
    return json.loads(json.dumps(x, default=lambda o: getattr(o, "__dict__", str(o)))
                      .replace(str(tmp_path / "plain"), "D").replace(str(tmp_path / "bom"), "D"))


@pytest.mark.parametrize("name,text,read", [
    ("run.txt", "1 Q0 a 1 2.5 t\n1 Q0 b 2 1.5 t\n", read_run),
    ("run.csv", "query_id,video_id,score\n1,a,2.5\n", read_run),
    ("run.jsonl", '{"query_id": "1", "video_id": "a", "score": 2.5}\n', read_run),
    ("qrels.txt", "1 0 a 1 1\n1 0 b 1 0\n", read_qrels),
    ("topics.txt", "1001 a red circle\n1002 two words\n", read_topics),
    ("topics.tsv", "topic\ttext\n1001\ta red circle\n", read_topics),
    ("topics.jsonl", '{"topic": 1001, "text": "a red circle"}\n', read_topics),
    ("map.csv", "docid,path\nshot1,a.mp4\n", read_mapping),
    ("map2.csv", "shot1,a.mp4,0,2.5\n", read_mapping),
    ("classes.txt", "ApplyEyeMakeup\nYoYo\n", read_class_list),
    ("classInd.txt", "1 ApplyEyeMakeup\n2 YoYo\n", read_class_list),
    ("names.txt", "YoYo\tyo-yo\n", read_class_names),
    ("templates.txt", "a video of {}.\n{}\n", read_templates),
    ("templates.json", '["a video of {}.", "{}"]', read_templates),
    ("list.txt", "a.mp4\nsub/b.mp4\n", lambda p: [i.key for i in scan_library(p).items]),
    ("lib.csv", "path,title\na.mp4,A\n", lambda p: [(i.key, i.metadata) for i in scan_library(p).items]),
    ("ids.txt", "video1\nvideo2\n", _read_id_list),
    ("data.jsonl", '{"video": "a.mp4", "caption": "a dog"}\n',
     lambda p: [c for c in load_dataset("jsonl", p, "test", check_files=False).captions]),
])
def test_a_bom_changes_nothing(tmp_path, name, text, read):
    plain, bom = _both(tmp_path, name, text, read)
    assert plain  # read something
    assert _norm(plain, tmp_path) == _norm(bom, tmp_path)
    assert BOM not in json.dumps(_norm(bom, tmp_path), ensure_ascii=False)


def test_a_bom_in_path_label_csv_changes_nothing(tmp_path):
    for sub in ("plain", "bom"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "a.mp4").write_bytes(b"x")
    plain, bom = _both(tmp_path, "set.csv", "path,label\na.mp4,dog\n",
                       lambda p: read_path_label_csv(p))
    assert (plain.classes, len(plain.items)) == (bom.classes, len(bom.items)) == (["dog"], 1)


# ----------------------------------------------------------------------------- numbers in the readers


@pytest.mark.parametrize("name,text,where", [
    ("r.txt", "1 Q0 a 1 2.5 t\n1 Q0 b 2 1_000 t\n", r"r\.txt:2: score '1_000' is not a number"),
    ("r.txt", "1 Q0 a 1_0 2.5 t\n", r"r\.txt:1: rank '1_0' is not an integer"),
    ("r.jsonl", '{"query_id": 1, "video_id": "a", "score": true}\n', r"r\.jsonl:1: score true is not a number"),
    ("r.jsonl", '{"query_id": 1, "video_id": "a", "score": NaN}\n', r"r\.jsonl:1: score nan is not finite"),
    ("r.csv", "query_id,video_id,score\n1,a,2.5\n1,b,1_000\n", r"r\.csv:3: score '1_000' is not a number"),
    ("r.csv", "query_id,video_id,score\n1,b\n", r"r\.csv:2: score is missing"),
])
def test_run_scores_are_read_strictly(tmp_path, name, text, where):
    (tmp_path / name).write_text(text)
    with pytest.raises(DatasetError, match=where):
        read_run(tmp_path / name)


def test_mapping_span_and_kinetics_times_are_read_strictly(tmp_path):
    (tmp_path / "m.csv").write_text("shot1,a.mp4,0,2_5\n")
    with pytest.raises(DatasetError, match=r"m\.csv:1: end \(seconds\) '2_5' is not a number"):
        read_mapping(tmp_path / "m.csv")
    (tmp_path / "m.csv").write_text("shot1,a.mp4,nan,2\n")
    with pytest.raises(DatasetError, match=r"m\.csv:1: start \(seconds\) 'nan' is not a number"):
        read_mapping(tmp_path / "m.csv")
    from vidclip.recognition.datasets import read_kinetics

    (tmp_path / "k.csv").write_text("label,youtube_id,time_start,time_end,split\ndog,abc,1_0,20,test\n")
    with pytest.raises(DatasetError, match=r"k\.csv:2: time_start '1_0' is not a number"):
        read_kinetics(tmp_path / "k.csv", "test")


# ----------------------------------------------------------------------------- hostile text in the other readers

DEEP = "[" * 100_000 + "]" * 100_000
BIG = "x" * (129 * 1024)


@pytest.mark.parametrize("name,text,read,where", [
    ("t.jsonl", '{"topic": 1, "text": "a"}\n' + DEEP + "\n", read_topics, "t.jsonl:2: invalid JSON: nested too deeply"),
    ("m.csv", "docid,path\nshot1,a.mp4\nshot2," + BIG + "\n", read_mapping, "m.csv:3: not valid CSV: field larger"),
    ("d.jsonl", '{"video": "a.mp4", "caption": "a"}\n' + DEEP + "\n",
     lambda p: load_dataset("jsonl", p, "test", check_files=False), "d.jsonl:2: invalid JSON: nested too deeply"),
    ("lib.csv", "path\na.mp4\n" + BIG + "\n", scan_library, "lib.csv:3: not valid CSV: field larger"),
    ("set.csv", "path,label\n" + BIG + ",dog\n", read_path_label_csv, "set.csv:2: not valid CSV: field larger"),
    ("tpl.json", DEEP, read_templates, "tpl.json: invalid JSON: nested too deeply"),
    ("lib.txt", "a.mp4\nb\xff.mp4\n", scan_library, "lib.txt:2: not UTF-8 text"),
], ids=lambda v: v if isinstance(v, str) and len(v) < 20 and "." in v else "")
def test_hostile_text_in_readers_is_one_error_line(tmp_path, name, text, read, where):
    f = tmp_path / name
    f.write_bytes(text.encode("latin-1"))  # ASCII, and one byte 0xff
    with pytest.raises((DatasetError, ConfigError)) as e:
        read(f)
    assert where in str(e.value) and "\n" not in str(e.value), str(e.value)[:300]
