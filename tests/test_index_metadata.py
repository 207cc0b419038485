"""User metadata (vidclip/index/metadata.py): a flat ``clip.json`` sidecar or a ``--metadata`` CSV,
refused with one line naming the file, line and key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vidclip.core.errors import DatasetError
from vidclip.index.metadata import (
    MAX_JSON_BYTES,
    check_metadata,
    metadata_sidecar,
    read_metadata_csv,
    read_metadata_json,
    read_metadata_sidecar,
)


def _json(tmp_path, text, name="clip.json"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_flat_object_with_text_numbers_and_lists(tmp_path):
    path = _json(tmp_path, '{"title": "Budget meeting", "year": 2023, "score": 0.5, "tags": ["news", 7]}')
    assert read_metadata_json(path) == {"title": "Budget meeting", "year": 2023, "score": 0.5, "tags": ["news", 7]}


def test_sidecar_is_found_by_stem(tmp_path):
    video = tmp_path / "show.part1.mp4"
    assert metadata_sidecar(video) == tmp_path / "show.part1.json"
    assert read_metadata_sidecar(video) is None
    _json(tmp_path, '{"k": "v"}', "show.part1.json")
    assert read_metadata_sidecar(video) == {"k": "v"}


@pytest.mark.parametrize("text, expect", [
    ('{"live": true}', "key 'live': true (a boolean) is not allowed"),
    ('{"live": false}', "key 'live': false (a boolean) is not allowed"),
    ('{"gone": null}', "key 'gone': null is not allowed"),
    ('{"crew": {"director": "x"}}', "key 'crew': a nested object is not allowed"),
    ('{"tags": ["a", ["b"]]}', "key 'tags': item 1: a nested list is not allowed"),
    ('{"tags": ["a", {"b": 1}]}', "key 'tags': item 1: a nested object is not allowed"),
    ('{"tags": ["a", true]}', "key 'tags': item 1: true (a boolean) is not allowed"),
    ('{"x": NaN}', "key 'x': nan is not allowed"),
    ('{"x": -Infinity}', "key 'x': -inf is not allowed"),
    ('{"x": 1e999}', "key 'x': inf is not allowed"),
    ('{"x": 1' + "0" * 5000 + "}", "key 'x': a number of 5001 digits is not allowed"),
    ('{"a=b": 1}', "key 'a=b': '=' is not allowed in a key"),
    ('{"": 1}', "key '': an empty key is not allowed"),
    ('{"k": 1, "k": 2}', "key 'k': given twice"),
    ('["a", "b"]', "metadata must be one JSON object of keys and values, not a list"),
    ('"text"', "metadata must be one JSON object of keys and values, not text"),
    ('{"a": 1,\n "b": }', "line 2 column 7: not valid JSON"),
])
def test_refused_values_name_the_file_and_key(tmp_path, text, expect):
    path = _json(tmp_path, text)
    with pytest.raises(DatasetError) as err:
        read_metadata_json(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and expect in message, message
    assert "\n" not in message


def test_deep_nesting_is_one_clear_line_not_a_recursion_error(tmp_path):
    # json.loads alone raises RecursionError here (a crash with a traceback, no file named).
    path = _json(tmp_path, '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(DatasetError) as err:
        read_metadata_json(path)
    assert str(err.value) == (f"{path}: JSON nested 100001 levels deep; metadata is one flat object of text "
                              "or numbers (a list of them at most)")


def test_brackets_inside_strings_do_not_count_as_nesting(tmp_path):
    path = _json(tmp_path, '{"title": "' + "[{" * 50 + '\\" ]]"}')
    assert read_metadata_json(path)["title"].startswith("[{[{")


def test_size_limit_and_encoding_and_fifo(tmp_path):
    big = _json(tmp_path, '{"x": "' + "y" * MAX_JSON_BYTES + '"}', "big.json")
    with pytest.raises(DatasetError, match=r"big\.json: .* at most 1024 KiB"):
        read_metadata_json(big)
    bad = tmp_path / "bad.json"
    bad.write_bytes(b'{"a": "ok",\n "b": "caf\xe9"}')
    with pytest.raises(DatasetError, match=r"bad\.json: line 2: not UTF-8 text"):
        read_metadata_json(bad)
    bom = tmp_path / "bom.json"
    bom.write_bytes(b'\xef\xbb\xbf{"a": "b"}')
    assert read_metadata_json(bom) == {"a": "b"}
    fifo = tmp_path / "clip.json"
    os.mkfifo(fifo)  # reading it would block
    with pytest.raises(DatasetError, match="not a regular file"):
        read_metadata_sidecar(tmp_path / "clip.mp4")


def test_check_metadata_names_where():
    assert check_metadata({"a": "b"}, "lib.csv: line 3") == {"a": "b"}
    with pytest.raises(DatasetError, match=r"^lib\.csv: line 3: key 'a': true \(a boolean\)"):
        check_metadata({"a": True}, "lib.csv: line 3")


def _csv(tmp_path, data: bytes, name="meta.csv"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_csv_paths_resolve_against_its_folder(tmp_path):
    path = _csv(tmp_path, b'\xef\xbb\xbfpath, title ,year\nnews/a.mp4,Budget,2023\n"./b.mp4","two\nlines",\n'
                          b"/abs/c.mp4,,\n\n")
    assert read_metadata_csv(path) == {
        tmp_path / "news/a.mp4": {"title": "Budget", "year": "2023"},
        tmp_path / "b.mp4": {"title": "two\nlines"},   # empty cells: key absent
        Path("/abs/c.mp4"): {},
    }


@pytest.mark.parametrize("data, expect", [
    (b"title\na.mp4\n", "line 1: header ['title'] has no 'path' column"),
    (b"", "empty file"),
    (b"path,t,t\n", "line 1: column 't' appears twice"),
    (b"path,a=b\n", "line 1: column 2 ('a=b'): '=' is not allowed"),
    (b"path,\n", "line 1: column 2 (''): an empty key is not allowed"),
    (b"path,t\na.mp4,x\n./a.mp4,y\n", "line 3: key 'path': './a.mp4' already given on line 2"),
    (b"path,t\na.mp4,x\n,y\n", "line 3: key 'path': empty"),
    (b"path,t\na.mp4,x,z\n", "line 2: 3 cells but the header has 2 columns"),
    (b"path,t\na.mp4,x\nb.mp4,\"multi\nline\"\nc.mp4,caf\xe9\n", "line 5: not UTF-8 text"),
])
def test_csv_errors_name_file_and_line(tmp_path, data, expect):
    path = _csv(tmp_path, data)
    with pytest.raises(DatasetError) as err:
        read_metadata_csv(path)
    assert str(err.value).startswith(f"{path}: ") and expect in str(err.value), str(err.value)


def test_csv_missing_file(tmp_path):
    with pytest.raises(DatasetError, match="no such file"):
        read_metadata_csv(tmp_path / "none.csv")


def test_metadata_module_does_not_import_torch():
    code = "import sys, vidclip.index.metadata, vidclip.index.textsearch; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "False"
