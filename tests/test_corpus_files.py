"""Corpora from local files as users have them: records in JSON lines, JSON, CSV and TSV, compressed
files, folders with hidden files and forks, byte order marks, NUL bytes, and the metadata records
carry (ids, genres, titles)."""

from __future__ import annotations

import gzip
import io
import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from slmlab.config import DataConfig
from slmlab.data.corpora import CorpusError, DocumentSelection


def test_text_with_a_few_nul_bytes_is_read_as_it_is(tmp_path):
    """The refusal of UTF-16/32 without a byte-order mark goes by the share of NUL bytes: a text
    file with some NULs in it (a log, a dump) is still text, and keeps them."""
    text = "a line of text\x00 and more\n" * 50
    (tmp_path / "nul.txt").write_text(text)
    assert [d.text for d in DocumentSelection(DataConfig(source=str(tmp_path / "nul.txt")))] == [text]


def test_a_record_that_is_a_string_is_the_text_itself(tmp_path):
    """["doc one", "doc two"] in a .json file, or a .jsonl line per string: each string is a
    document (it was 'a record is a JSON object ..., not a string')."""
    import json

    (tmp_path / "docs.json").write_text(json.dumps(["doc one", "", "doc two"]))
    (tmp_path / "docs.jsonl").write_text('"doc one"\n{"text": "doc two", "year": 1900}\n')
    for name in ("docs.json", "docs.jsonl"):
        documents = list(DocumentSelection(DataConfig(source=str(tmp_path / name))))
        assert [d.text for d in documents] == ["doc one", "doc two"] and len({d.id for d in documents}) == 2


def test_a_leading_byte_order_mark_is_not_text(tmp_path):
    """Files saved by Windows editors start with U+FEFF: corpora (plain, split by a marker and
    JSON lines) read without it, and only a leading one is dropped (one inside the text stays)."""
    bom = "\ufeff"
    (tmp_path / "plain.txt").write_text(bom + "first words" + bom + " later", encoding="utf-8")
    (tmp_path / "streams.txt").write_text(bom + "doc one<EOS>doc two", encoding="utf-8")
    line = bom + '{"text": "a json line", "year": 1900}\n'
    (tmp_path / "lines.jsonl").write_text(line + line, encoding="utf-8")  # two files joined with cat
    plain = list(DocumentSelection(DataConfig(source=str(tmp_path / "plain.txt"))))
    assert [d.text for d in plain] == ["first words" + bom + " later"]
    split = list(DocumentSelection(DataConfig(source=str(tmp_path / "streams.txt"), doc_separator="<EOS>")))
    assert [d.text for d in split] == ["doc one", "doc two"]
    lines = list(DocumentSelection(DataConfig(source=str(tmp_path / "lines.jsonl"))))
    assert [(d.text, d.year) for d in lines] == [("a json line", 1900)] * 2


def test_records_read_alike_from_json_lines_json_arrays_csv_and_tsv_in_any_case(tmp_path):
    """A .json array was one document of JSON syntax, a CSV's text column was read with its
    commas and header, a .JSONL file was plain text: all silently. Each is now its records, the
    same documents in every format."""
    import csv
    import json

    records = [{"id": f"d{i}", "text": f"text, with commas\nand lines {i}", "year": 1900 + i, "genre": "g"} for i in range(5)]
    records[2]["year"] = ""  # unknown, as a CSV writes a missing value
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp_path / "B.JSONL").write_text((tmp_path / "a.jsonl").read_text())
    (tmp_path / "c.json").write_text(json.dumps(records, indent=1))
    (tmp_path / "d.json").write_text((tmp_path / "a.jsonl").read_text())
    # spreadsheets in many locales separate a .csv file's cells by ';' (read as one column 'id;text;...')
    for name, delimiter in (("e.csv", ","), ("f.tsv", "\t"), ("h.csv", ";"), ("i.csv", "|"), ("j.csv", "\t")):
        with open(tmp_path / name, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(records[0]), delimiter=delimiter)
            writer.writeheader()
            writer.writerows(records)
    read = {
        name: [(d.id, d.text, d.year, d.genre) for d in DocumentSelection(DataConfig(source=str(tmp_path / name)))]
        for name in ("a.jsonl", "B.JSONL", "c.json", "d.json", "e.csv", "f.tsv", "h.csv", "i.csv", "j.csv")
    }
    expected = [(r["id"], r["text"], r["year"] or None, "g") for r in records]
    assert all(documents == expected for documents in read.values()), read


def _compress(path, text: str, suffix: str) -> None:
    """`text` written to `path` compressed as `suffix` says; zstd as two frames (as `zstd -T` and
    joined files write them), each to be read."""
    import bz2
    import gzip
    import lzma

    data = text.encode()
    if suffix == ".zst":
        import zstandard

        compressor = zstandard.ZstdCompressor()
        path.write_bytes(b"".join(compressor.compress(part) for part in (data[: len(data) // 2], data[len(data) // 2 :])))
        return
    with {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}[suffix](path, "wb") as handle:
        handle.write(data)


@pytest.mark.parametrize("suffix", [".gz", ".bz2", ".xz", ".zst"])
def test_compressed_files_read_as_the_files_they_hold(tmp_path, suffix):
    """Corpora ship compressed (shard-00000.jsonl.gz, the Pile's .jsonl.zst): such a file was
    refused, to be decompressed by hand. A gzip, bzip2, xz or zstd file now reads as the file its
    name has without that suffix, alone, in a folder or with a separator; a truncated or damaged
    file is one line naming it (zstandard's own reader returns a truncated file's text in
    silence); an archive is still refused."""
    import shutil

    plain, packed = tmp_path / "plain" / "corpus", tmp_path / "packed" / "corpus"  # one folder name: the files' genre
    records = "".join(f'{{"id": "r{i}", "text": "record {i}, with a comma", "year": 1900}}\n' for i in range(4))
    files = {
        "shard.JSONL": records,
        "table.csv": 'id;text\nc1;"a cell; with a semicolon"\nc2;another\n',
        "prose/notes.txt": "\ufeffsome prose\n\nin paragraphs ü",
        "code.txt": "def f(): pass<EOS>def g(): pass",
    }
    for name, text in files.items():
        for root in (plain, packed):
            (root / name).parent.mkdir(parents=True, exist_ok=True)
        (plain / name).write_text(text, encoding="utf-8")
        _compress(packed / (name + suffix), text, suffix)

    def read(source, **fields):
        documents = DocumentSelection(DataConfig(source=str(source), **fields))
        return [(d.id.replace(suffix, ""), d.text, d.year, d.genre, d.title) for d in documents]

    for name in ("shard.JSONL", "table.csv", "prose/notes.txt"):
        assert read(packed / (name + suffix)) == read(plain / name)
    assert (
        len(read(packed / ("shard.JSONL" + suffix))) == 4
        and read(packed / ("table.csv" + suffix))[0][1] == "a cell; with a semicolon"
    )
    separated = read(packed / ("code.txt" + suffix), doc_separator="<EOS>")
    assert separated == read(plain / "code.txt", doc_separator="<EOS>") and separated[1][3:] == ("code", "code")
    in_folder = read(packed)
    assert in_folder == read(plain) and len(in_folder) == 4 + 1 + 1  # a folder's .jsonl and .txt, compressed or not
    shard = packed / ("shard.JSONL" + suffix)
    whole = shard.read_bytes()
    for damaged in (whole[:-3], b"no compressed stream at all"):
        shard.write_bytes(damaged)
        with pytest.raises(CorpusError, match=f"^{shard} is not a whole \\{suffix} file \\(.*\\); fetch or compress it again$"):
            read(shard)
    shutil.make_archive(str(tmp_path / "corpus"), "zip", plain)
    with pytest.raises(CorpusError, match="corpus.zip is an archive \\(.zip\\); unpack it first"):
        read(tmp_path / "corpus.zip")


def test_a_folder_says_which_files_it_leaves_out(tmp_path, caplog):
    """A folder contributes its .txt, .md and .jsonl files; its CSV shards, and every other file
    (.rst, Gutenberg's extensionless texts, .html), were left out in silence."""
    (tmp_path / "notes.txt").write_text("some text " * 20)
    (tmp_path / "shard.csv").write_text("text\nrows of text\n")
    documents = list(DocumentSelection(DataConfig(source=str(tmp_path))))
    assert [d.id for d in documents] == ["notes.txt"]
    assert "1 file left out (e.g. shard.csv)" in caplog.text and f"'{tmp_path}/*.csv'" in caplog.text
    texts = tmp_path / "texts"
    (texts / ".git").mkdir(parents=True)
    (texts / ".git" / "HEAD").write_text("ref: main")  # hidden: neither read nor named
    for name in ("a.txt", "b.rst", "pg1342", "c/d.html"):
        (texts / name).parent.mkdir(exist_ok=True)
        (texts / name).write_text("more text " * 20)
    caplog.clear()
    assert [d.id for d in DocumentSelection(DataConfig(source=str(texts)))] == ["a.txt"]
    assert f"{texts}: 3 files left out (e.g. b.rst, c/d.html, pg1342)" in caplog.text and f"'{texts}/*.rst'" in caplog.text
    caplog.clear()
    (texts / "b.rst").unlink(), (texts / "c" / "d.html").unlink(), (texts / "pg1342").unlink()
    list(DocumentSelection(DataConfig(source=str(texts))))
    assert "left out" not in caplog.text
    other = tmp_path / "other"  # the glob offered matches the file left out, compressed too
    other.mkdir()
    (other / "notes.txt").write_text("some text " * 20)
    (other / "shard.json.gz").write_bytes(b"")
    list(DocumentSelection(DataConfig(source=str(other))))
    assert f"'{other}/*.json.gz'" in caplog.text
    debian = tmp_path / "doc"  # /usr/share/doc: its files one folder down, their suffixes capitalised
    (debian / "adduser").mkdir(parents=True)
    (debian / "adduser" / "NEWS.Debian.gz").write_bytes(gzip.compress(b"adduser (3.1) unstable; news " * 20))
    (debian / "adduser" / "README.md").write_text("read me " * 20)
    caplog.clear()
    list(DocumentSelection(DataConfig(source=str(debian))))
    offered = f"{debian}/**/*.Debian.gz"  # it offered '*.debian.gz', which matches nothing here
    assert f"'{offered}'" in caplog.text
    assert [d.id for d in DocumentSelection(DataConfig(source=offered))] == ["NEWS.Debian.gz"]


def test_a_json_line_with_half_a_surrogate_pair_is_one_line_naming_it(tmp_path):
    """JSON allows "\\ud800" alone; no UTF-8 text holds it, so tokenizer training failed with a
    UnicodeEncodeError traceback. A whole escaped pair (an emoji) is one character and reads."""
    (tmp_path / "ok.jsonl").write_text('{"text": "smile \\ud83d\\ude00"}\n')
    assert [d.text for d in DocumentSelection(DataConfig(source=str(tmp_path / "ok.jsonl")))] == ["smile \U0001f600"]
    for field in ("text", "id", "title"):
        record = {"text": "fine", field: "half \\udc80 of a pair"}
        (tmp_path / "bad.jsonl").write_text(
            '{"text": "fine"}\n' + ", ".join(f'"{k}": "{v}"' for k, v in record.items()).join("{}") + "\n"
        )
        with pytest.raises(CorpusError, match=r"bad.jsonl:2: holds \\udc80, half of a UTF-16 pair"):
            list(DocumentSelection(DataConfig(source=str(tmp_path / "bad.jsonl"))))


def test_hidden_files_and_macos_forks_are_not_documents(tmp_path):
    """A corpus folder as users have them: a .ipynb_checkpoints copy would put one text on both
    sides of the split, .git files are not text, and __MACOSX/._* forks are not UTF-8."""
    corpus = tmp_path / "corpus"
    for name in ("prose/a.txt", "prose/b.txt", "verse/c.md"):
        (corpus / name).parent.mkdir(parents=True, exist_ok=True)
        (corpus / name).write_text(f"The text of {name}. " * 20)
    hidden = {
        ".ipynb_checkpoints/a-checkpoint.txt": "The text of prose/a.txt. " * 20,
        ".git/description.txt": "Unnamed repository",
        "prose/.notes.md": "draft",
        "__MACOSX/prose/._a.txt": "\x00\x05\x16\x07 Mac OS X resource fork",
    }
    for name, text in hidden.items():
        (corpus / name).parent.mkdir(parents=True, exist_ok=True)
        (corpus / name).write_text(text)
    (corpus / "__MACOSX" / "prose" / "._b.txt").write_bytes(b"\x00\x05\x16\x07\xff\xfe")
    assert sorted(d.id for d in DocumentSelection(DataConfig(source=str(corpus)))) == ["prose/a.txt", "prose/b.txt", "verse/c.md"]


def test_a_null_text_is_an_empty_document_in_json_lines_as_in_parquet(tmp_path):
    """A record whose text is null stopped the whole corpus ("no string field"); a Parquet null was
    left out. Both are now empty documents, left out; a missing field is still named."""
    (tmp_path / "d.jsonl").write_text('{"text": "kept"}\n{"text": null, "id": "gone"}\n{"text": "also kept"}\n')
    docs = list(DocumentSelection(DataConfig(source=str(tmp_path / "d.jsonl"))))
    assert [d.text for d in docs] == ["kept", "also kept"]


REPEATED = {  # file: (content, what the error names)
    "d.jsonl": ('{"text": "the text meant", "text": "x"}\n', "field 'text'"),
    "d.json": ('[{"text": "a text", "id": "a", "id": "b"}]', "item 1: names the field 'id'"),
    "one.json": ('{\n "text": "one record",\n "year": 1900,\n "year": 2000\n}', "field 'year'"),
    "d.csv": ('text,genre,text\n"the text meant",g,x\n', "column 'text'"),
    "d.tsv": ("title\ttext\ttitle\na\tthe text\tb\n", "column 'title'"),
}


@pytest.mark.parametrize("name", list(REPEATED))
def test_a_record_naming_a_field_it_reads_twice_is_refused(tmp_path, name):
    """json and csv keep the last of a repeated key or column in silence: a JSON line
    {"text": "the text meant", "text": "x"} trained on "x", without a word."""
    content, named = REPEATED[name]
    (tmp_path / name).write_text(content)
    with pytest.raises(CorpusError, match=f"{name}.*{named} more than once"):
        list(DocumentSelection(DataConfig(source=str(tmp_path / name))))


@pytest.mark.parametrize(
    "rows, says",
    [
        ("text,id\nHello, world,1\n", "d.csv:2: 3 cells under a header of 2 columns; quote a text that holds ','"),
        ("id,text\n1\n2,fine\n", "d.csv:2: 1 cell under a header of 2 columns"),  # a text's unquoted line break
    ],
)
def test_a_csv_row_that_does_not_fit_its_header_is_refused(tmp_path, rows, says):
    """csv cut a text at an unquoted comma in silence: `Hello, world,1` trained on "Hello", with the
    id " world"; a row without a cell for the text was left out as an empty document."""
    (tmp_path / "d.csv").write_text(rows)
    with pytest.raises(CorpusError, match=re.escape(says)):
        list(DocumentSelection(DataConfig(source=str(tmp_path / "d.csv"))))


def test_a_quote_that_never_closes_is_refused_in_csv_and_text_in_tsv(tmp_path):
    """A text starting with a quote ("Tis ...) opened a quoted field that ran on through every
    later row: the rest of the file became one document, ids and delimiters included, in silence.
    A CSV file says where; a TSV file, whose quotes are often plain text (GLUE's), reads them as
    text, while one written with CSV's quoting (a tab inside quotes, quotes doubled) reads as such."""

    def texts(name: str, content: str) -> list[str]:
        (tmp_path / name).write_text(content)
        return [d.text for d in DocumentSelection(DataConfig(source=str(tmp_path / name)))]

    with pytest.raises(CorpusError, match=r"d.csv:3: unexpected end of data: a quote that opens a field must close it"):
        texts("d.csv", 'text,id\nfine,0\n"Tis the season,1\nNext line,2\n')
    with pytest.raises(CorpusError, match=r"e.csv:2: ',' expected after '\"'"):
        texts("e.csv", 'text,id\n"Hi" she said,1\n')
    assert texts("f.csv", 'text,id\n"say ""hi"", now",1\n') == ['say "hi", now']
    assert texts("a.tsv", 'text\tid\n"Tis the season\t1\n"Hi" she said\t2\n') == ['"Tis the season', '"Hi" she said']
    assert texts("b.tsv", 'text\tid\n"a\ttab, ""quoted"""\t1\n') == ['a\ttab, "quoted"']


def test_a_csv_row_may_pad_or_leave_out_trailing_cells(tmp_path):
    (tmp_path / "d.csv").write_text("text,id,year\nHello world,1,,,\nfine,2\n")
    assert [(d.text, d.id) for d in DocumentSelection(DataConfig(source=str(tmp_path / "d.csv")))] == [
        ("Hello world", "1"),
        ("fine", "2"),
    ]


def test_fields_a_corpus_does_not_read_may_repeat(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"text": "kept", "tag": 1, "tag": 2, "meta": {"a": 1, "a": 2}}\n')
    (tmp_path / "d.csv").write_text("text,,\nkept,1,2\n")  # a spreadsheet's unnamed columns
    for name in ("d.jsonl", "d.csv"):
        assert [d.text for d in DocumentSelection(DataConfig(source=str(tmp_path / name)))] == ["kept"]


def test_a_json_file_holding_one_pretty_printed_object_is_one_record(tmp_path):
    """It was read as JSON lines: "one.json:1: not a JSON object" (line 1 being "{")."""
    import json

    (tmp_path / "one.json").write_text(json.dumps({"text": "the whole record", "id": "r1", "year": 1901}, indent=2))
    (tmp_path / "lines.json").write_text('{"text": "a"}\n{"text": "b"}\n')
    (docs,) = list(DocumentSelection(DataConfig(source=str(tmp_path / "one.json"))))
    assert (docs.text, docs.id, docs.year) == ("the whole record", "r1", 1901)
    assert [d.text for d in DocumentSelection(DataConfig(source=str(tmp_path / "lines.json")))] == ["a", "b"]
    (tmp_path / "bad.json").write_text('{\n  "text": "unfinished"\n')
    with pytest.raises(CorpusError, match="bad.json:1: not a JSON object"):
        list(DocumentSelection(DataConfig(source=str(tmp_path / "bad.json"))))


def test_genres_that_match_nothing_name_the_genres_there_are(text_corpus):
    """A local corpus's genres are its folder names (or records' genre): a miss said only 'no
    documents left after the genre/year filters'."""
    with pytest.raises(CorpusError, match=r"data.genres \['poetry'\] matches no document of .* \(its genres: 'prose', 'verse'\)"):
        list(DocumentSelection(DataConfig(source=str(text_corpus), genres=["poetry"])))
    assert len(list(DocumentSelection(DataConfig(source=str(text_corpus), genres=["verse"])))) == 6


def test_a_json_file_that_does_not_parse_says_where(tmp_path):
    """A 6,000-line .json array with one trailing comma (line 4503) said only "not JSON"."""
    import json

    text = json.dumps([{"text": f"doc {i}"} for i in range(2000)], indent=1).replace('"doc 1500"', '"doc 1500",')
    (tmp_path / "big.json").write_text(text)
    with pytest.raises(CorpusError, match=r"big.json: not JSON \(Expecting property name .* at line 4504, column 2\)"):
        list(DocumentSelection(DataConfig(source=str(tmp_path / "big.json"))))


def test_a_run_folder_given_or_found_as_corpus_is_named(text_corpus, caplog):
    """data.source = a run (or a folder holding one) failed on its metrics.jsonl with "no string
    field 'text' (set data.text_field)", which pointed at the wrong fix; the refusal came after a
    warning that its .json files were left out, as if it were a corpus."""
    run = text_corpus / "old_runs" / "r"
    run.mkdir(parents=True)
    (run / "config.json").write_text("{}")
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n')
    with pytest.raises(CorpusError, match=r"'.*old_runs/r' is a slmlab run folder"):
        list(DocumentSelection(DataConfig(source=str(run))))
    assert "left out" not in caplog.text
    with pytest.raises(CorpusError, match=r"holds a slmlab run folder \(.*old_runs/r\), not a corpus"):
        list(DocumentSelection(DataConfig(source=str(text_corpus))))


def test_the_corpus_fingerprint_follows_what_documents_take_from_their_paths(tmp_path):
    """Ids (paths below the common folder) and genres (folder names) come from the paths, but the
    fingerprint that keys the token cache hashed file names and contents only: a file moved to
    another genre's folder reused token files with the old genres and split. A copy of the whole
    corpus elsewhere keeps its fingerprint (and so its cache and split)."""
    import shutil

    def fingerprint(root):
        return DocumentSelection(DataConfig(source=str(root))).fingerprint()

    corpus = tmp_path / "corpus"
    for genre, name in (("poems", "a.txt"), ("plays", "b.txt")):
        (corpus / genre).mkdir(parents=True, exist_ok=True)
        (corpus / genre / name).write_text(f"the text of {name} " * 20)
    before = fingerprint(corpus)
    shutil.copytree(corpus, tmp_path / "elsewhere" / "corpus")
    assert fingerprint(tmp_path / "elsewhere" / "corpus") == before
    (corpus / "poems" / "a.txt").rename(corpus / "plays" / "a.txt")  # same name, same text, another genre
    moved = fingerprint(corpus)
    assert moved != before
    (corpus / "plays").rename(corpus / "dramas")  # every id and genre renamed
    assert fingerprint(corpus) not in (before, moved)


@given(st.text("ab<>", max_size=40), st.sampled_from(["ab", "aab", "<a>", "abab", "a"]), st.integers(1, 9))
@example("<EOS<EOS>>", "<EOS>", 3)
@example("<EO<EOS>S>", "<EOS>", 4)
@example("<EOS><EOS>x<EOS>", "<EOS>", 5)
def test_separated_documents_are_split_as_str_split_splits(text, separator, chunk):
    """Read a few characters at a time, so that markers fall across every boundary between reads."""
    from slmlab.data.corpora.local import split_stream

    assert list(split_stream(io.StringIO(text), separator, chunk)) == text.split(separator)


@pytest.mark.parametrize(
    ("value", "read"),
    [("poems", "poems"), (5, "5"), (1.5, "1.5"), (None, ""), ("  ", ""), (["a", "b"], None), ({"x": 1}, None), (True, None)],
)
def test_a_records_id_genre_and_title_are_text_or_numbers_never_a_written_out_list(tmp_path, value, read):
    """A genre ["a", "b"] became the stream "['a', 'b']" and a blank genre a stream named "  "."""
    import json

    for field in ("id", "genre", "title"):
        records = [{"text": "first words", "id": "one"}, {"text": "more words", "id": "two", field: value}]
        (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
        selection = DocumentSelection(DataConfig(source=str(tmp_path / "d.jsonl")))
        if read is None:
            with pytest.raises(CorpusError, match=rf"d.jsonl:2: field '{field}' holds .*, not text; write it as a string"):
                list(selection)
            continue
        second = list(selection)[1]
        assert getattr(second, field) == (read or "d.jsonl:2" if field == "id" else read)
