"""Token files: built once and reused through the manifest, split by document, sampled deterministically."""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from slmlab.config import DataConfig
from slmlab.data import tokens as data_module
from slmlab.data.corpora import CorpusError
from slmlab.data.sampling import WindowSampler, validation_batches
from slmlab.data.tokens import prepare_tokens, token_dtype


def _data(source, tmp_path, **fields):
    return DataConfig(source=str(source), tokenizer="char", seq_len=16, cache_dir=str(tmp_path / "cache"), **fields)


def test_token_files_are_reused_through_the_manifest(text_corpus, tmp_path, monkeypatch):
    cfg = _data(text_corpus, tmp_path)
    tokenizer, first = prepare_tokens(cfg)
    manifest = first.manifest
    assert manifest["documents"] == {"train": 10, "val": 2} and manifest["tokenizer_digest"] == tokenizer.digest()
    assert manifest["tokens"]["train"] == len(first.train) and first.train.tokens.dtype == np.uint16
    monkeypatch.setattr(data_module, "_build_token_files", lambda *a: pytest.fail("token files were rebuilt"))
    _, second = prepare_tokens(cfg)
    assert second.directory == first.directory and np.array_equal(second.train.tokens, first.train.tokens)


@pytest.mark.parametrize("tokenizer, passes", [("char", 3), ("byte", 2)])
def test_preparing_tokens_reads_the_corpus_no_more_often_than_it_must(text_corpus, tmp_path, monkeypatch, tokenizer, passes):
    """A trained tokenizer's documents are counted (its progress total) and read; tokenizing then
    read them twice more, once for the split's ids and digests, once to encode. The ids are
    remembered from the count and the digests taken while encoding. A tokenizer that is not
    trained (byte) still reads once for the ids, which decide the split before the first write."""
    from slmlab.data.corpora.local import LocalSource

    reads = []
    documents = LocalSource.documents
    monkeypatch.setattr(LocalSource, "documents", lambda self: reads.append(1) or documents(self))
    cfg = _data(text_corpus, tmp_path)
    cfg.tokenizer = tokenizer
    _, tokens = prepare_tokens(cfg)
    assert len(reads) == passes
    assert tokens.manifest["documents"] == {"train": 10, "val": 2}


def test_a_second_build_never_replaces_files_another_process_is_reading(text_corpus, tmp_path):
    """Parallel sweep jobs may build the same token files at once: the first complete directory
    stays in place (its open memory maps keep working), the later build is discarded."""
    cfg = _data(text_corpus, tmp_path)
    tokenizer, first = prepare_tokens(cfg)
    before = {path.name: path.stat().st_ino for path in first.directory.iterdir()}
    data_module._build_token_files(data_module.DocumentSelection(cfg), tokenizer, cfg.val_fraction, first.directory)
    assert {path.name: path.stat().st_ino for path in first.directory.iterdir()} == before
    left = [p for p in first.directory.parent.iterdir() if p.name != f".{first.directory.name}.lock"]  # the builders' lock
    assert left == [first.directory]  # no temporary build left behind
    _, again = prepare_tokens(cfg)
    assert np.array_equal(again.train.tokens, first.train.tokens)


def test_concurrent_preparations_of_one_corpus_all_succeed(text_corpus, tmp_path):
    cfg = _data(text_corpus, tmp_path)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: prepare_tokens(cfg)[1], range(4)))
    assert all(np.array_equal(r.train.tokens, results[0].train.tokens) for r in results)


def test_changing_the_corpus_or_tokenizer_builds_new_files(text_corpus, tmp_path):
    cfg = _data(text_corpus, tmp_path)
    _, first = prepare_tokens(cfg)
    bytes_cfg = _data(text_corpus, tmp_path)
    bytes_cfg.tokenizer = "byte"
    _, as_bytes = prepare_tokens(bytes_cfg)
    assert as_bytes.directory != first.directory
    (text_corpus / "prose" / "doc00.txt").write_text("changed text " * 200)
    _, changed = prepare_tokens(cfg)
    assert changed.directory != first.directory


def test_a_new_way_of_reading_files_trains_a_new_tokenizer(tmp_path, monkeypatch):
    """A .json array was read as one document of JSON syntax, and its cached char tokenizer (braces,
    quotes, field names) would have been reused once records were read as records: the tokenizer
    cache is keyed by the token format too."""
    import json

    (tmp_path / "docs.json").write_text(json.dumps([{"text": "plain words here " * 20}] * 4))
    cfg = _data(tmp_path / "docs.json", tmp_path)
    with monkeypatch.context() as older:
        older.setattr(data_module, "FORMAT_VERSION", data_module.FORMAT_VERSION - 1)
        prepare_tokens(cfg)
    tokenizer, _ = prepare_tokens(cfg)
    assert len(list((tmp_path / "cache" / "tokenizers").glob("char-*.json"))) == 2
    assert set(tokenizer.chars) == set("plain words here\n")


def test_split_is_by_whole_documents_and_decodes_to_the_text(text_corpus, tmp_path):
    tokenizer, data = prepare_tokens(_data(text_corpus, tmp_path))
    val_text = tokenizer.decode(data.val.tokens.tolist())
    train_text = tokenizer.decode(data.train.tokens.tolist())
    endings = {f"End {i}." for i in range(12)}
    in_val = {e for e in endings if e in val_text}
    in_train = {e for e in endings if e in train_text}
    assert len(in_val) == 2 and in_val.isdisjoint(in_train) and in_val | in_train == endings
    assert set(data.train.streams) == {"prose", "verse"}


def test_the_split_does_not_depend_on_where_the_corpus_lies(text_corpus, tmp_path):
    moved = tmp_path / "elsewhere" / "deeper"
    shutil.copytree(text_corpus, moved)
    _, here = prepare_tokens(_data(text_corpus, tmp_path))
    _, there = prepare_tokens(_data(moved, tmp_path / "elsewhere"))  # built afresh in another cache
    assert there.directory != here.directory
    for split in ("train", "val"):
        assert np.array_equal(getattr(there, split).tokens, getattr(here, split).tokens)


def test_genres_of_any_spelling_are_streams_and_never_paths(tmp_path):
    """A stream's tokens gathered in a file named after its genre: "news/politics" failed with
    FileNotFoundError, "../../x" wrote beside the cache's build folder, 300 characters passed the
    file name limit. Every genre is a stream, and its tokens are its documents' in order."""
    import json

    genres = ["news/politics", "../../escape", "x" * 300, "a:b", " x ", "é漢"]  # a blank genre is no genre (test_corpora)
    records = [{"id": f"d{i}", "text": f"document {i} of {genres[i % 6]!r}. " * 3, "genre": genres[i % 6]} for i in range(60)]
    path = tmp_path / "genres.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    cache = tmp_path / "cache"
    tokenizer, data = prepare_tokens(_data(path, tmp_path))
    assert set(data.train.streams) == set(genres)
    assert sorted(p.name for p in cache.iterdir()) == ["tokenizers", "tokens"]  # nothing written beside them
    val_ids = set(data.manifest["val_ids"])
    for genre, (start, end) in data.train.streams.items():  # naive reference: each genre's documents joined
        texts = [r["text"] for r in records if r["genre"] == genre and r["id"] not in val_ids]
        expected = [i for text in texts for i in [*tokenizer.encode(text), *tokenizer.separator_ids()]]
        assert data.train.tokens[start:end].tolist() == expected


def test_a_validation_document_copied_into_training_is_named(tmp_path, caplog):
    """The split goes by id, so a document under two names (a page scraped twice, a licence copied
    into two packages) could sit on both sides: its validation loss scored memorised text, in
    silence. (Two names of one file, GPL and its symlink GPL-3, are read once: test_corpora.)"""
    from slmlab.data.split import is_validation

    names = [f"doc{i}.txt" for i in range(40)]
    val_name = next(n for n in names if is_validation(n, 0.3))
    train_name = next(n for n in names if not is_validation(n, 0.3))
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, name in enumerate([n for n in names if n not in (val_name, train_name)][:10]):
        (corpus / name).write_text(f"document {i} and its own words. " * 10)
    (corpus / val_name).write_text("the same licence text, word for word. " * 10)
    (corpus / train_name).write_text((corpus / val_name).read_text())
    with caplog.at_level("WARNING", logger="slmlab"):
        _, data = prepare_tokens(_data(corpus, tmp_path, val_fraction=0.3))
    assert data.manifest["val_copies_in_train"] == [[val_name, train_name]]
    assert f"1 validation document has an exact copy among the training documents (e.g. '{val_name}' = " in caplog.text
    caplog.clear()
    (corpus / train_name).unlink()
    (corpus / train_name).write_text("another text altogether. " * 10)
    with caplog.at_level("WARNING", logger="slmlab"):
        _, data = prepare_tokens(_data(corpus, tmp_path, val_fraction=0.3))
    assert data.manifest["val_copies_in_train"] == [] and "exact copy" not in caplog.text


def test_single_document_corpus_is_split_by_position(tmp_path):
    path = tmp_path / "one.txt"
    path.write_text("abcdefghij" * 100)
    _, data = prepare_tokens(_data(path, tmp_path, val_fraction=0.2))
    assert len(data.val) == pytest.approx(0.2 * (len(data.train) + len(data.val)), abs=2)


def test_sampler_is_deterministic_and_resumable(text_corpus, tmp_path):
    _, data = prepare_tokens(_data(text_corpus, tmp_path))
    a, b = (WindowSampler(data.train, 16, 4, seed=7) for _ in range(2))
    for _ in range(3):
        xa, ya = a.next_batch()
        xb, yb = b.next_batch()
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert torch.equal(xa[:, 1:], ya[:, :-1]) and xa.dtype == torch.int64 and xa.shape == (4, 16)
    state = a.state_dict()
    expected = a.next_batch()
    c = WindowSampler(data.train, 16, 4, seed=99)
    c.load_state_dict(state)
    assert torch.equal(c.next_batch()[0], expected[0])
    assert not torch.equal(
        WindowSampler(data.train, 16, 4, seed=8).next_batch()[0], WindowSampler(data.train, 16, 4, seed=7).next_batch()[0]
    )


def test_windows_are_real_slices_of_the_token_file(text_corpus, tmp_path):
    _, data = prepare_tokens(_data(text_corpus, tmp_path))
    tokens = np.asarray(data.train.tokens)
    x, y = WindowSampler(data.train, 16, 8, seed=1).next_batch()
    for row_x, row_y in zip(x.numpy(), y.numpy()):
        starts = np.flatnonzero(
            np.all(np.lib.stride_tricks.sliding_window_view(tokens, 17) == np.append(row_x, row_y[-1]), axis=1)
        )
        assert len(starts) >= 1


@pytest.mark.parametrize("length", [17, 18, 40])
def test_every_window_start_is_drawn_up_to_the_last_one_that_fits(length):
    """Starts are uniform over 0 .. len - seq_len - 1 (the last window ends on the last token): a
    split of exactly seq_len + 1 tokens holds one window, and none is left out at the end."""
    from slmlab.data.tokens import TokenSplit

    split = TokenSplit(np.arange(length, dtype=np.uint16), {})
    offsets = WindowSampler(split, 16, 2000, seed=0).next_offsets()
    assert set(offsets.tolist()) == set(range(length - 16))
    x, y = WindowSampler(split, 16, 3, seed=0).next_batch()
    assert torch.equal(y[:, :-1], x[:, 1:]) and int(y.max()) <= length - 1


def test_mixture_weights_are_respected(text_corpus, tmp_path):
    _, data = prepare_tokens(_data(text_corpus, tmp_path))
    sampler = WindowSampler(data.train, 16, 4000, seed=3, mixture={"prose": 3.0, "verse": 1.0})
    prose_start, prose_end = data.train.streams["prose"]
    offsets = sampler.next_offsets()
    in_prose = (offsets >= prose_start) & (offsets + 17 <= prose_end)
    in_verse = (offsets >= data.train.streams["verse"][0]) & (offsets + 17 <= data.train.streams["verse"][1])
    assert np.all(in_prose | in_verse)  # a window never crosses out of its stream
    assert abs(in_prose.mean() - 0.75) < 0.03
    with pytest.raises(CorpusError, match="unknown stream"):
        WindowSampler(data.train, 16, 4, seed=3, mixture={"poetry": 1.0})
    with pytest.raises(CorpusError, match=r"unknown stream \['Prose'\] \(did you mean 'prose'\?\); streams are"):
        WindowSampler(data.train, 16, 4, seed=3, mixture={"Prose": 1.0})


def test_validation_sample_is_fixed_and_too_short_split_is_an_error(text_corpus, tmp_path):
    _, data = prepare_tokens(_data(text_corpus, tmp_path))
    first = [x for x, _ in validation_batches(data.val, 16, 4, 3)]
    second = [x for x, _ in validation_batches(data.val, 16, 4, 3)]
    assert len(first) == 3 and all(torch.equal(a, b) for a, b in zip(first, second))
    with pytest.raises(CorpusError, match="validation split has"):
        list(validation_batches(data.val, len(data.val) + 5, 4, 3))


@pytest.mark.parametrize(
    "length, n_batches, starts",
    [(17, 3, [0]), (40, 5, [0, 23]), (116, 5, [0, 16, 33, 49, 66, 82, 99]), (116, 2, [0, 33, 66, 99])],
)
def test_a_disjoint_sample_holds_only_windows_that_share_no_token(length, n_batches, starts, caplog):
    """Intervals over windows or batches treat them as independent: a short split's evenly spaced
    windows overlapped (116 tokens gave 10 windows of 16 one token apart where 7 fit apart). The
    disjoint sample keeps as many as fit apart, still spread from the first to the last, and the
    same windows where the asked ones fit (the last case)."""
    from slmlab.data.sampling import validation_offsets
    from slmlab.data.tokens import TokenSplit

    split = TokenSplit(np.arange(length, dtype=np.uint16), {})
    with caplog.at_level("INFO", logger="slmlab"):
        x = torch.cat([x for x, _ in validation_batches(split, 16, 2, n_batches, disjoint=True)])
    assert x[:, 0].tolist() == starts and (np.diff(starts) >= 16).all()
    covered = x.flatten().tolist()
    assert len(covered) == len(set(covered))  # no token in two windows
    capped = len(starts) < 2 * n_batches
    assert ("hold" in caplog.text and "apart, fewer than the" in caplog.text) == capped
    plain = validation_offsets(length, 16, 2, n_batches)
    assert (list(plain) == starts) == (len(plain) == len(starts))


@pytest.mark.parametrize("fit, batch_size, rows", [(15, 12, 5), (13, 12, 1), (7, 2, 1), (8, 3, 2), (11, 12, 11), (9, 4, 3)])
def test_a_short_disjoint_sample_has_batches_of_one_size(fit, batch_size, rows):
    """Paired intervals and t-tests over the batches weigh each alike: 15 windows in batches of 12
    made a last batch of 3 count as much as one of 12. The batch size up to batch_size that keeps
    the most windows, the largest of those."""
    from slmlab.data.tokens import TokenSplit

    seq_len = 16
    split = TokenSplit(np.arange(fit * seq_len + 1, dtype=np.uint16), {})  # exactly `fit` windows apart
    sizes = [len(x) for x, _ in validation_batches(split, seq_len, batch_size, 20, disjoint=True)]
    kept = max(fit // r * r for r in range(1, batch_size + 1))
    assert set(sizes) == {rows} and sum(sizes) == kept


@pytest.mark.parametrize("length, n_batches, starts", [(17, 3, [0]), (20, 5, [0, 1, 2, 3]), (116, 2, [0, 33, 66, 99])])
def test_the_validation_sample_is_evenly_spaced_from_the_first_window_to_the_last(length, n_batches, starts):
    """n_batches x batch_size windows (here 2 a batch) from start 0 to the last one that fits, as
    many as there are starts when fewer: each start once, the last window ending on the last token."""
    from slmlab.data.tokens import TokenSplit

    split = TokenSplit(np.arange(length, dtype=np.uint16), {})
    batches = list(validation_batches(split, 16, 2, n_batches))
    x = torch.cat([x for x, _ in batches])
    assert x[:, 0].tolist() == starts and len(batches) == -(-len(starts) // 2)
    assert all(torch.equal(y, x + 1) for (x, y) in batches)


def test_token_dtype_fits_the_vocabulary():
    assert token_dtype(65536) == np.uint16 and token_dtype(65537) == np.uint32


@pytest.mark.parametrize(
    "seq_len, batch_size, n_batches, says",
    [
        (8, 4, 0, "n_batches"),
        (8, 0, 2, "batch_size"),
        (0, 4, 2, "seq_len"),
        (8, 2.5, 2, "batch_size"),
        (8, True, 2, "batch_size"),
    ],
)
def test_window_counts_below_one_are_refused_by_name(seq_len, batch_size, n_batches, says):
    """evaluate(..., n_batches=0) returned NaN and batch_size=0 a ValueError from range()."""
    from slmlab.config import ConfigError
    from slmlab.data.tokens import TokenSplit

    split = TokenSplit(np.arange(100, dtype=np.uint16), {})
    with pytest.raises(ConfigError, match=f"{says} must be a whole number >= 1"):
        next(validation_batches(split, seq_len, batch_size, n_batches))
    if n_batches:
        with pytest.raises(ConfigError, match=f"{says} must be a whole number >= 1"):
            WindowSampler(split, seq_len, batch_size, seed=0)


def test_token_writes_join_small_arrays_and_write_large_ones_as_they_are(tmp_path):
    from slmlab.data.tokens import _append

    parts = [np.arange(n, dtype=np.uint16) for n in (3, 40, 2, 50, 1)]
    with open(tmp_path / "t.bin", "wb") as handle:
        _append(handle, parts, large=10)  # small, large, small, large, small
    assert np.fromfile(tmp_path / "t.bin", dtype=np.uint16).tolist() == np.concatenate(parts).tolist()


def test_file_and_folder_names_that_are_not_utf8_still_name_documents(tmp_path):
    """An archive unpacked with Latin-1 names ('caf\\xe9.txt'): Python reads such bytes as lone
    surrogates, and hashing the fingerprint failed with UnicodeEncodeError. Ids, genres and
    titles now write each such byte as \\xNN; the token files and the manifest are built."""
    corpus = os.fsencode(tmp_path / "corpus")
    os.makedirs(corpus + b"/chansons_\xe9t\xe9")
    for i in range(6):
        with open(corpus + b"/chansons_\xe9t\xe9/caf\xe9 %d.txt" % i, "w") as handle:
            handle.write(f"the song number {i} is sung here once more. " * 20)
    cfg = _data(os.fsdecode(corpus), tmp_path)
    documents = list(data_module.DocumentSelection(cfg))
    assert sorted(d.id for d in documents)[0] == "caf\\xe9 0.txt"  # ids are paths below the files' common folder
    assert {d.genre for d in documents} == {"chansons_\\xe9t\\xe9"} and documents[0].title == "caf\\xe9 0"
    _, tokens = prepare_tokens(cfg)
    assert tokens.manifest["documents"]["train"] + tokens.manifest["documents"]["val"] == 6
    assert set(tokens.manifest["streams"]["train"]) == {"chansons_\\xe9t\\xe9"}


def test_a_corpus_of_more_genres_than_open_files_allowed_is_tokenized(tmp_path):
    """A stream file stayed open per genre: a JSON lines corpus with an author or site per document
    ("genre") failed with "Too many open files" under the common limit of 1,024."""
    import json
    import resource

    records = [{"id": f"d{i}", "genre": f"author {i}", "text": f"words of author {i}. " * 5} for i in range(300)]
    path = tmp_path / "authors.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(128, hard), hard))
    try:
        _, data = prepare_tokens(_data(path, tmp_path))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert len(data.train.streams) + len(data.val.streams) == 300
