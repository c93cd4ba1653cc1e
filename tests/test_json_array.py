"""A .json array of records is read an item at a time (data/corpora/json_array.py), with the
items and the errors of `json.loads` of the whole text: a 2 GB export was held whole, text and
records, before its first record was read."""

from __future__ import annotations

import io
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slmlab.config import DataConfig
from slmlab.data.corpora import CorpusError, DocumentSelection
from slmlab.data.corpora.json_array import array_items
from slmlab.files import lone_surrogate

TEXT = st.characters(exclude_categories=("Cs",))  # a lone surrogate is refused (the last test)
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(TEXT),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(TEXT, max_size=3), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(VALUES, max_size=6), st.integers(1, 9), st.sampled_from([None, 1, 2]), st.sampled_from(["", " ", "\n  "]))
def test_the_items_are_those_of_the_whole_text_wherever_the_reads_cut_it(items, read_chars, indent, pad):
    text = pad + json.dumps(items, indent=indent) + pad
    assert list(array_items(io.StringIO(text), "x.json", read_chars)) == items


@settings(max_examples=800, deadline=None)
@given(
    st.one_of(
        st.text(alphabet='[]{},:"0123.e- \nabtrul', max_size=24),
        st.lists(VALUES, max_size=8)
        .map(json.dumps)
        .flatmap(
            lambda text: st.tuples(st.integers(0, len(text)), st.sampled_from(["", ",", "}", '"', "x", "\\q", "1e"])).map(
                lambda cut: text[: cut[0]] + cut[1] + text[cut[0] :]
            )
        ),
    ),
    st.integers(1, 40),
)
def test_text_that_is_no_array_fails_where_json_loads_says(text, read_chars):
    """The same message, line and column as json.loads of the whole text (a number cut by a read
    is not taken for a shorter one)."""
    try:
        value = json.loads(text)
        expected = value if isinstance(value, list) else None
    except json.JSONDecodeError as err:
        expected = f"x.json: not JSON ({err.msg} at line {err.lineno}, column {err.colno})"
    if not text.lstrip(" \t\n\r").startswith("[") or (isinstance(expected, list) and lone_surrogate(expected)):
        return  # a .json file that is not an array is read as one record or JSON lines; a lone surrogate is refused
    try:
        got = list(array_items(io.StringIO(text), "x.json", read_chars))
    except CorpusError as err:
        got = str(err)
    assert got == expected


class CountedReads(io.StringIO):
    def read(self, size=-1):
        part = super().read(size)
        self.chars = getattr(self, "chars", 0) + len(part)
        return part


def test_an_item_is_read_before_the_rest_of_the_file():
    records = [{"text": f"document {i} " * 20} for i in range(2000)]
    handle = CountedReads(json.dumps(records))
    items = array_items(handle, "big.json", read_chars=1000)
    assert next(items) == records[0] and handle.chars < 2000
    assert list(items) == records[1:]
    damaged = CountedReads(json.dumps(records).replace('"document 2 ', '"document 2 \\q', 1))
    with pytest.raises(CorpusError, match=r"Invalid \\escape at line 1, column 491\)"):
        list(array_items(damaged, "big.json", read_chars=1000))
    assert damaged.chars < 3000  # not read to its end to say so


def test_a_json_array_file_is_a_corpus_of_its_records_and_its_damage_is_one_line(tmp_path):
    (tmp_path / "a.json").write_text('\n  [{"text": "one"},\n {"text": "two", "year": 1990}]\n')
    assert [(d.text, d.year) for d in DocumentSelection(DataConfig(source=str(tmp_path / "a.json")))] == [
        ("one", None),
        ("two", 1990),
    ]
    (tmp_path / "b.json").write_text('[{"text": "one"},\n {"text": "two"}\n {"text": "three"}]')
    with pytest.raises(CorpusError, match=r"b.json: not JSON \(Expecting ',' delimiter at line 3, column 2\)"):
        list(DocumentSelection(DataConfig(source=str(tmp_path / "b.json"))))
    (tmp_path / "c.json").write_text('[{"text": "one", "text": "two"}]')
    with pytest.raises(CorpusError, match="c.json: item 1"):
        list(DocumentSelection(DataConfig(source=str(tmp_path / "c.json"))))
    (tmp_path / "d.json").write_text('[{"text": "one"},\n {"text": "\\ud800 two"}]')
    with pytest.raises(CorpusError, match=r"d.json: the item at line 2, column 2 holds .*half of a UTF-16 pair"):
        list(DocumentSelection(DataConfig(source=str(tmp_path / "d.json"))))


def test_a_json_file_of_json_lines_is_not_read_whole_to_tell_it_from_one_spread_object(tmp_path, monkeypatch):
    from slmlab.data.corpora import local

    (tmp_path / "lines.json").write_text('\n{"text": "one"}\n{"text": "two"}\n')
    (tmp_path / "spread.json").write_text('{\n  "text": "one record",\n  "year": 1990\n}\n')
    read_whole = []
    monkeypatch.setattr(local, "read_utf8", lambda path: read_whole.append(path.name) or path.read_text())
    assert [d.text for d in DocumentSelection(DataConfig(source=str(tmp_path / "lines.json")))] == ["one", "two"]
    assert [d.text for d in DocumentSelection(DataConfig(source=str(tmp_path / "spread.json")))] == ["one record"]
    assert "lines.json" not in read_whole and "spread.json" in read_whole
