"""Corpus loaders: the real Shakespeare and Brown corpora (fetched as users fetch them) and local files."""

from __future__ import annotations

import re

import pytest

from slmlab.config import DataConfig
from slmlab.data.corpora import CorpusError, DocumentSelection
from slmlab.data.corpora.brown import detokenize
from slmlab.data.corpora.shakespeare import clean_play


@pytest.fixture(scope="module")
def shakespeare():
    return list(DocumentSelection(DataConfig(source="shakespeare")))


@pytest.fixture(scope="module")
def brown():
    return list(DocumentSelection(DataConfig(source="brown")))


@pytest.mark.network
def test_shakespeare_has_38_plays_in_six_groups_with_metadata(shakespeare):
    assert len(shakespeare) == 38
    assert {d.genre for d in shakespeare} == {"comedies", "histories", "problems", "roman", "romances", "tragedies"}
    hamlet = next(d for d in shakespeare if d.id.endswith("/hamlet"))
    assert hamlet.genre == "tragedies" and hamlet.year == 1601 and "Hamlet" in hamlet.title
    assert sum(d.year is None for d in shakespeare) == 1  # Timon of Athens: no recorded performance
    assert 4_000_000 < sum(len(d.text) for d in shakespeare) < 5_300_000


@pytest.mark.network
def test_shakespeare_markup_is_stripped_and_speakers_kept(shakespeare):
    text = "".join(d.text for d in shakespeare)
    assert not re.search(r"[*_#\\\[\]]", text)
    assert "\nHAMLET:\nTo be, or not to be: that is the question:\n" in text
    assert "Enter" not in next(d for d in shakespeare if d.id.endswith("/macbeth")).text.splitlines()[0]


def test_clean_play_on_a_known_snippet():
    markdown = (
        "# Play\n\n## ACT I\n\n### SCENE I. A heath.\n\n_Thunder. Enter two\nWitches_\n\n"
        "**First Witch**  \n__\\[Aside]_  \nWhen shall we  \nmeet \\-- again?\n\n*Exeunt.*\n\n"
        "**ALL**  \nFair is _\\[foul]_ and foul is fair.\n"
    )
    assert clean_play(markdown) == "First Witch:\nWhen shall we\nmeet -- again?\n\nALL:\nFair is foul and foul is fair.\n"


@pytest.mark.network
def test_brown_has_500_documents_in_15_genres_without_tags(brown):
    assert len(brown) == 500
    assert len({d.genre for d in brown}) == 15 and all(d.year == 1961 for d in brown)
    text = "".join(d.text for d in brown[:50])
    assert not re.search(r"\w/(nn|at|vbd|in)\b", text) and "``" not in text and "''" not in text
    first = brown[0]
    assert first.id == "brown/ca01" and first.genre == "A" and "press: reportage" in first.title
    assert first.text.startswith("The Fulton County Grand Jury said Friday an investigation of Atlanta's")
    assert '"no evidence" that any irregularities took place.' in first.text
    assert "\n\n" in first.text  # paragraphs kept
    assert 1_000_000 < sum(len(d.text.split()) for d in brown) < 1_300_000


def test_detokenize_rebuilds_spacing_and_quotes():
    tagged = "He/pps said/vbd ``/`` yes/rb ''/'' ,/, (/( twice/rb )/) ;/. it's/pps+bez n't/* ./."
    assert detokenize(tagged) == "He said \"yes\", (twice); it'sn't."


def test_genre_filter_selects_streams_by_letter_or_name():
    learned = list(DocumentSelection(DataConfig(source="brown", genres=["J", "humor"])))
    assert {d.genre for d in learned} == {"J", "R"} and len(learned) == 80 + 9
    tragedies = list(DocumentSelection(DataConfig(source="shakespeare", genres=["tragedies"])))
    assert len(tragedies) == 6 and {d.genre for d in tragedies} == {"tragedies"}
    with pytest.raises(CorpusError, match="'Z' is not a genre of brown .*; or by name: news, editorial, "):
        DocumentSelection(DataConfig(source="brown", genres=["Z"]))
    with pytest.raises(
        CorpusError, match=r"'tragedy' is not a genre of shakespeare \(did you mean 'tragedies'\?\) \(choose from"
    ):
        DocumentSelection(DataConfig(source="shakespeare", genres=["tragedy"]))


def test_brown_genres_go_by_nltks_names_too():
    """NLTK's categories (brown.words(categories='news')) were refused: 'news' is not a genre."""
    from slmlab.data.corpora.brown import NLTK_CATEGORIES

    assert len(NLTK_CATEGORIES) == 15 and len(set(NLTK_CATEGORIES.values())) == 15
    news = list(DocumentSelection(DataConfig(source="brown", genres=["news", "science_fiction"])))
    assert {d.genre for d in news} == {"A", "M"} and len(news) == 44 + 6  # NLTK's fileids per category


@pytest.mark.slow
def test_year_cut_off_drops_later_documents_and_counts_them():
    selection = DocumentSelection(DataConfig(source="shakespeare", max_year=1600))
    kept = list(selection)
    assert all(d.year is None or d.year <= 1600 for d in kept)
    later = sum(1 for d in DocumentSelection(DataConfig(source="shakespeare")) if d.year and d.year > 1600)
    assert selection.dropped_by_year == later > 0
    strict = DocumentSelection(DataConfig(source="shakespeare", max_year=1600, allow_unknown_year=False))
    assert all(d.year is not None for d in strict) and strict.dropped_unknown_year == 1
    with pytest.raises(CorpusError, match="no documents left"):
        list(DocumentSelection(DataConfig(source="brown", max_year=1950)))


def test_local_text_directory_and_jsonl(text_corpus, jsonl_corpus):
    docs = list(DocumentSelection(DataConfig(source=str(text_corpus))))
    assert len(docs) == 12 and {d.genre for d in docs} == {"prose", "verse"} and all(d.year is None for d in docs)
    glob_docs = list(DocumentSelection(DataConfig(source=str(text_corpus / "verse" / "*.txt"))))
    assert len(glob_docs) == 6
    selection = DocumentSelection(DataConfig(source=str(jsonl_corpus), max_year=1950))
    years = [d.year for d in selection]
    assert years == [1900, 1910, 1920, 1930, 1940, 1950] and selection.dropped_by_year == 4


def test_a_year_cut_off_on_documents_without_years_is_warned_of_once(text_corpus, jsonl_corpus, caplog):
    """Plain text files carry no year, so data.max_year kept every document in silence."""
    with caplog.at_level("INFO", logger="slmlab"):
        for _ in range(2):  # read twice, as tokenizer training and tokenizing do
            assert len(list(DocumentSelection(DataConfig(source=str(text_corpus), max_year=1900)))) == 12
        list(DocumentSelection(DataConfig(source=str(jsonl_corpus), max_year=1950)))
    assert caplog.text.count("data.max_year = 1900 changed nothing: no document of") == 1
    assert caplog.text.count(f"year cut-off 1900 on '{text_corpus}': dropped 0 documents") == 1
    assert "max_year = 1950 changed nothing" not in caplog.text  # these records have years


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda p: str(p / "nothing-here.txt"), "neither a built-in corpus"),
        (  # --persona-data's form, a built-in corpus and its genres, given as a data.source
            lambda p: "brown:R,D",
            "'brown:GENRES' is --persona-data's form: here give data.source = 'brown' and data.genres = \\['R', 'D'\\]\\)$",
        ),
        (lambda p: "shakespeare:", "here give data.source = 'shakespeare'\\)$"),
        (
            lambda p: "https://example.org/corpus.txt",
            "\\(an address: slmlab downloads no corpus; fetch the text and give the path",
        ),
        (lambda p: (p / "empty.txt").write_text("   \n") and str(p / "empty.txt"), "contains no text"),
        (lambda p: (p / "latin1.txt").write_bytes("caf\xe9".encode("latin-1")) and str(p / "latin1.txt"), "is not UTF-8 text"),
        (  # Windows Notepad's "Unicode": the message named a bad byte at offset 0
            lambda p: (p / "u16.txt").write_text("hello there", encoding="utf-16") and str(p / "u16.txt"),
            "u16.txt is UTF-16 text \\(it starts with a UTF-16 byte-order mark\\); re-encode it as UTF-8",
        ),
        (  # UTF-16 without a byte-order mark decodes as UTF-8 ('\x00h\x00e...'): it was trained on
            lambda p: (p / "u16be.txt").write_bytes("hello there\n".encode("utf-16-be")) and str(p / "u16be.txt"),
            "u16be.txt is not text: 50% of its first 24 bytes are NUL, as in UTF-16 or UTF-32 text saved without a "
            "byte-order mark; re-encode it as UTF-8$",
        ),
        (
            lambda p: (p / "u16.jsonl").write_bytes('{"text": "hi"}\n'.encode("utf-16-le")) and str(p / "u16.jsonl"),
            "u16.jsonl is not text: 50% of its first 30 bytes are NUL",
        ),
        (
            lambda p: (p / "u32.txt").write_bytes("hello there".encode("utf-32-le")) and str(p / "u32.txt"),
            "u32.txt is not text: 75% of its first 44 bytes are NUL",
        ),
        (  # read line by line: the decoder's error counted from its own chunk, not from the file's start
            lambda p: (
                (p / "late.jsonl").write_bytes(b'{"text": "ok"}\n' * 2000 + b'{"text": "caf\xe9"}\n') and str(p / "late.jsonl")
            ),
            "late.jsonl is not UTF-8 text \\(bad byte 0xe9 on line 2001, byte offset 30013\\)",
        ),
        (
            lambda p: (p / "d").mkdir() or str(p / "d"),
            "holds no .txt, .md or .jsonl files \\(plain, .gz, .bz2, .xz or .zst\\) and no .parquet files \\(nor any other file",
        ),
        (  # extension-less files (LICENSE, README) were refused without saying how to read them
            lambda p: (p / "d").mkdir() or ((p / "d" / "GPL").write_text("x") and str(p / "d")),
            "and no .parquet files \\(it holds 1 other, e.g. 'GPL'; .* a glob reads every file it matches as text: '.*/d/\\*'\\)",
        ),
        (lambda p: str(p / "nothing-*.txt"), "the glob '.*nothing-\\*.txt' matches no file"),
        (  # a CSV file without its header row: the first row's text was quoted whole as a field name
            lambda p: (p / "rows.csv").write_text(f"1,{'words ' * 50}\n2,more words\n") and str(p / "rows.csv"),
            "rows.csv:2: no field 'text' \\(its fields: '1', 'words words words words words words w\\.\\.\\.'\\); "
            "set data.text_field to the field that holds the text \\(a CSV file's first row names its columns\\)$",
        ),
        (
            lambda p: (p / "x.jsonl").write_text('{"body": "hi", "id": 1}\n') and str(p / "x.jsonl"),
            "no field 'text' \\(its fields: 'body', 'id'\\); set data.text_field",
        ),
        (
            lambda p: (p / "d.json").write_text('{"version": 1, "data": [{"text": "a"}, {"text": "b"}]}') and str(p / "d.json"),
            "no field 'text' \\(its fields: 'version', 'data'\\); field 'data' holds a list of 2: save those as JSON lines",
        ),
        (
            lambda p: (p / "a.jsonl").write_text("[1, 2]\n") and str(p / "a.jsonl"),
            "a.jsonl:1: a record is a JSON object with a 'text' field, not an array",
        ),
        (
            lambda p: (p / "n.jsonl").write_text('{"text": 12}\n') and str(p / "n.jsonl"),
            "n.jsonl:1: field 'text' holds a number, not text",
        ),
        (lambda p: (p / "z.jsonl").write_text('{"text": null}\n') and str(p / "z.jsonl"), "contains no text"),
    ],
)
def test_bad_sources_are_clear_errors(tmp_path, setup, message):
    with pytest.raises(CorpusError, match=message):
        list(DocumentSelection(DataConfig(source=setup(tmp_path))))


def test_a_glob_reads_each_file_once_through_links_and_skips_hidden_names(tmp_path, monkeypatch):
    """glob.glob's '**' follows links to folders: one link to the folder above gave every file 41
    times (the run trained on copies and validated on copies of its training text), two such links
    never finished. Now '**' does as bash's globstar: it does not follow them."""
    from slmlab.data.corpora.listing import glob_files

    (tmp_path / "c" / "sub").mkdir(parents=True)
    (tmp_path / "c" / ".hidden").mkdir()
    for name in ("c/a.txt", "c/sub/b.txt", "c/.hidden/h.txt", "c/.h.txt"):
        (tmp_path / name).write_text("text")
    (tmp_path / "c" / "sub" / "up").symlink_to("..")
    (tmp_path / "c" / "sub" / "up_again").symlink_to("..")
    (tmp_path / "c" / "same.txt").symlink_to(tmp_path / "c" / "a.txt")  # one file, two names: read once
    monkeypatch.chdir(tmp_path)
    names = lambda pattern: [str(p) for p in glob_files(pattern)]
    assert names("c/**/*.txt") == names("c/**") == ["c/a.txt", "c/sub/b.txt"]
    assert names("c/sub/up/*.txt") == ["c/sub/up/a.txt"]  # a link named in the pattern is followed
    assert names("c/.*.txt") == ["c/.h.txt"] and names("c/.hidden/*") == ["c/.hidden/h.txt"]
    with pytest.raises(CorpusError, match=r"'\*\*' inside a name"):
        glob_files("c/a**/b.txt")


def test_a_folder_corpus_follows_links_to_folders_and_reads_each_file_once(tmp_path):
    """Links to folders were skipped without a word (data linked into the corpus folder was not
    read); followed, a link to a folder above, or a second name of one file, reads nothing twice."""
    from slmlab.data.corpora.listing import corpus_files

    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "linked.txt").write_text("text")
    (tmp_path / "c" / "sub").mkdir(parents=True)
    (tmp_path / "c" / "a.txt").write_text("text")
    (tmp_path / "c" / "data").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "c" / "sub" / "up").symlink_to("..")
    (tmp_path / "c" / "sub" / "same.txt").symlink_to(tmp_path / "c" / "a.txt")
    found = [p.relative_to(tmp_path / "c").as_posix() for p in corpus_files(tmp_path / "c", None)]
    assert found == ["a.txt", "data/linked.txt"]


def test_the_built_in_corpora_are_named_in_one_place():
    """Their names were spelled in four places (the sources, persona's SOURCE form, two messages)."""
    from slmlab.config import BUILTIN_CORPORA
    from slmlab.data.corpora import BUILTINS

    assert tuple(BUILTINS) == BUILTIN_CORPORA
