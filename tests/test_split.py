"""A document's split depends on its own id alone, so no slice or filter of a run's corpus leaks
training documents into validation (reliability issue, class 7); metadata is read as users write
it, and seed 002's separator-delimited stream files are documents too (class 8)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slmlab.cli import main
from slmlab.config import DataConfig
from slmlab.data.corpora import CorpusError, DocumentSelection
from slmlab.data.split import describe_documents, is_validation, validation_ids
from slmlab.data.tokens import prepare_tokens

IDS = st.lists(st.text(min_size=1, max_size=12), min_size=2, max_size=60, unique=True)


def _naive_fraction(doc_id: str) -> float:
    return int(hashlib.sha1(doc_id.encode()).hexdigest(), 16) / 16**40


@given(IDS, st.floats(0.05, 0.5), st.data())
@settings(max_examples=200, deadline=None)
def test_a_documents_split_does_not_depend_on_what_else_was_selected(ids, fraction, data):
    subset = data.draw(st.lists(st.sampled_from(ids), min_size=2, unique=True))
    by_rule = {i for i in ids if _naive_fraction(i) < fraction}
    assert {i for i in ids if is_validation(i, fraction)} == by_rule  # the rule, against a naive one
    whole, part = validation_ids(ids, fraction), validation_ids(subset, fraction)
    assert whole and len(whole) < len(ids) and part and len(part) < len(subset)  # both sides never empty
    rule_in_part = by_rule & set(subset)
    if rule_in_part and len(rule_in_part) < len(subset):  # the rule alone decided: the same documents
        assert part == rule_in_part
    if by_rule and len(by_rule) < len(ids):
        assert whole == by_rule


@pytest.fixture
def genre_corpus(tmp_path):
    """40 documents in two genre folders, each with distinct text."""
    for i in range(40):
        folder = tmp_path / "corpus" / ("prose" if i % 2 else "verse")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"d{i:02d}.txt").write_text(f"Document number {i}. " + "abcdefghij klmnop " * 20)
    return tmp_path / "corpus"


def test_eval_on_a_slice_scores_no_training_document_and_says_so(genre_corpus, micro_toml, tmp_path, capsys):
    argv = ["train", str(micro_toml), "--no-progress", "--name", "r", "--data.source", str(genre_corpus)]
    assert main([*argv, "--data.val_fraction", "0.25"]) == 0
    run = tmp_path / "runs" / "r"
    capsys.readouterr()
    assert main(["eval", str(run), "--batches", "1", "--json", "--data.genres", '["prose"]']) == 0
    result = json.loads(capsys.readouterr().out)
    # naive reference: the run trained on every document of its corpus that the rule did not hold out
    trained = {
        p.read_text() for p in genre_corpus.rglob("*.txt") if _naive_fraction(p.relative_to(genre_corpus).as_posix()) >= 0.25
    }
    scored = [p for p in (genre_corpus / "prose").glob("*.txt") if _naive_fraction(p.relative_to(genre_corpus).as_posix()) < 0.25]
    assert result["train_overlap"] == 0 == sum(p.read_text() in trained for p in scored)
    assert result["documents"] == len(scored) > 0
    assert result["slice"] == f"{genre_corpus} (genres prose)"
    assert main(["eval", str(run), "--batches", "1", "--data.genres", '["prose"]']) == 0
    assert "0 in the run's training split" in capsys.readouterr().out


def test_a_document_duplicated_across_the_split_is_counted(genre_corpus, micro_toml, tmp_path, capsys):
    argv = ["train", str(micro_toml), "--no-progress", "--name", "r", "--data.source", str(genre_corpus)]
    assert main([*argv, "--data.val_fraction", "0.25"]) == 0
    copy = tmp_path / "copy"
    copy.mkdir()
    trained = next(p for p in genre_corpus.rglob("*.txt") if _naive_fraction(p.relative_to(genre_corpus).as_posix()) >= 0.25)
    for i in range(30):  # the same training text under new names: some land in validation
        (copy / f"x{i}.txt").write_text(trained.read_text())
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "runs" / "r"), "--batches", "1", "--json", "--data.source", str(copy)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["train_overlap"] == result["documents"] > 0


def _eval_json(run, capsys, *overrides) -> dict:
    capsys.readouterr()
    assert main(["eval", str(run), "--batches", "1", "--json", *overrides]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_single_document_is_on_both_sides_of_its_split_by_position(micro_toml, tmp_path, capsys):
    single = tmp_path / "one.txt"
    single.write_text("One play, one document: its end is held out. " * 60)
    assert main(["train", str(micro_toml), "--no-progress", "--name", "r", "--data.source", str(single)]) == 0
    run = tmp_path / "runs" / "r"
    result = _eval_json(run, capsys)
    assert (result["documents"], result["coverage"], result["train_overlap"]) == (1, "the last 10% of 1 document", 0)
    assert main(["eval", str(run), "--batches", "1"]) == 0
    assert "val, the last 10% of 1 document (" in capsys.readouterr().out
    assert main(["data", "prepare", str(micro_toml), "--data.source", str(single)]) == 0
    assert "train the first 90% of 1 document, val the last 10% of 1 document;" in capsys.readouterr().out


def test_overlap_counts_only_scored_documents_whatever_the_split_kind(genre_corpus, micro_toml, tmp_path, capsys):
    single = next(iter(sorted(genre_corpus.rglob("*.txt"))))
    argv = ["train", str(micro_toml), "--no-progress", "--data.source"]
    assert main([*argv, str(single), "--name", "one"]) == 0
    # the run's one document, copied into a corpus where the copy is a training document: not scored
    corpus = tmp_path / "mixed"
    corpus.mkdir()
    for i in range(12):
        (corpus / f"m{i}.txt").write_text(single.read_text() if i == 2 else f"{'abcdefghij'[i % 10]}klm nop " * (30 + i))
    assert _naive_fraction("m2.txt") >= 0.1  # the copy is on the training side of the new corpus
    result = _eval_json(tmp_path / "runs" / "one", capsys, "--data.source", str(corpus))
    assert result["documents"] >= 1 and result["train_overlap"] == 0
    # a run on many documents, scored on one of its training documents alone: split by position,
    # and the scored end was trained on
    assert main([*argv, str(genre_corpus), "--name", "many", "--data.val_fraction", "0.25"]) == 0
    trained = next(
        p for p in sorted(genre_corpus.rglob("*.txt")) if _naive_fraction(p.relative_to(genre_corpus).as_posix()) >= 0.25
    )
    result = _eval_json(tmp_path / "runs" / "many", capsys, "--data.source", str(trained))
    assert (result["documents"], result["train_overlap"]) == (1, 1)


def test_documents_that_share_an_id_are_counted_one_by_one_and_kept_together(tmp_path, caplog):
    rows = [{"id": "shared" if i % 3 == 0 else f"d{i}", "text": f"document {i} " * 20} for i in range(30)]
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("\n".join(json.dumps(r) for r in rows))
    with caplog.at_level("WARNING", logger="slmlab"):
        _, data = prepare_tokens(DataConfig(source=str(corpus), tokenizer="byte", cache_dir=str(tmp_path / "cache")))
    assert "ids shared by several documents: 1 (e.g. 'shared')" in caplog.text
    val_ids = set(data.manifest["val_ids"])
    assert data.manifest["documents"] == {
        "train": sum(r["id"] not in val_ids for r in rows),
        "val": sum(r["id"] in val_ids for r in rows),
    }
    one_id = tmp_path / "one_id.jsonl"  # every document under one id: split by position, all five on both sides
    one_id.write_text("\n".join(json.dumps({"id": "x", "text": f"document {i} " * 20}) for i in range(5)))
    _, data = prepare_tokens(DataConfig(source=str(one_id), tokenizer="byte", cache_dir=str(tmp_path / "cache")))
    assert data.manifest["split_by_position"] and data.manifest["documents"] == {"train": 5, "val": 5}
    assert describe_documents(data.manifest, "val") == "the last 10% of 5 documents"


def test_small_corpora_keep_a_document_on_each_side(tmp_path):
    for n in (2, 3):
        folder = tmp_path / f"c{n}"
        folder.mkdir()
        for i in range(n):
            (folder / f"{i}.txt").write_text(f"text {i} " * 50)
        _, data = prepare_tokens(DataConfig(source=str(folder), tokenizer="byte", cache_dir=str(tmp_path / "cache")))
        assert data.manifest["documents"]["val"] >= 1 and data.manifest["documents"]["train"] >= 1
    single = tmp_path / "one.txt"
    single.write_text("x" * 1000)
    _, data = prepare_tokens(DataConfig(source=str(single), tokenizer="byte", cache_dir=str(tmp_path / "cache")))
    total = data.manifest["tokens"]["val"] + data.manifest["tokens"]["train"]
    assert total >= 1000 and data.manifest["tokens"]["train"] == int(total * 0.9)  # by position
    assert data.manifest["documents"] == {"train": 1, "val": 1} and data.manifest["split_by_position"]


def _jsonl(tmp_path, years) -> str:
    path = tmp_path / "docs.jsonl"
    lines = [json.dumps({"id": f"d{i}", "text": f"document {i} " * 20, "year": y}) for i, y in enumerate(years)]
    path.write_text("\n".join(lines).replace('"year": NaN', '"year": NaN') + "\n")
    return str(path)


def test_years_are_read_as_users_write_them(tmp_path):
    years = [1906, 1906.0, "1906", " 1950.0 ", None, "", float("nan"), 1800]
    source = _jsonl(tmp_path, years)
    selection = DocumentSelection(DataConfig(source=source, max_year=1910))
    kept = [doc.year for doc in selection]
    assert kept == [1906, 1906, 1906, None, None, None, 1800]
    assert selection.dropped_by_year == 1 and selection.unknown_year == 3
    _, data = prepare_tokens(DataConfig(source=source, tokenizer="byte", max_year=1910, cache_dir=str(tmp_path / "cache")))
    assert data.manifest["unknown_year"] == 3 and data.manifest["dropped_by_year"] == 1


@pytest.mark.parametrize("year", ["19o6", 1906.5, True, [1906], "MCMVI"])
def test_a_year_that_is_not_a_whole_number_is_one_line_naming_file_and_line(tmp_path, year):
    source = _jsonl(tmp_path, [1900, year])
    with pytest.raises(CorpusError, match=r"docs.jsonl:2: year .* is not a whole number"):
        list(DocumentSelection(DataConfig(source=source)))


def test_stream_files_with_a_document_separator(tmp_path):
    streams = tmp_path / "streams"
    streams.mkdir()
    (streams / "code.txt").write_text("<EOS>".join(f"def f{i}(): return {i}\n" * 5 for i in range(12)))
    (streams / "prose.txt").write_text("<EOS>".join(f"Once upon a time {i}.\n" * 5 for i in range(12)) + "<EOS>")
    data = DataConfig(source=str(streams), tokenizer="byte", doc_separator="<EOS>", cache_dir=str(tmp_path / "cache"))
    docs = list(DocumentSelection(data))
    assert len(docs) == 24 and {d.genre for d in docs} == {"code", "prose"}  # the empty tail is no document
    assert all("<EOS>" not in d.text for d in docs)
    _, tokens = prepare_tokens(data)
    assert set(tokens.train.streams) == {"code", "prose"}
    assert tokens.manifest["documents"]["val"] >= 2 and tokens.manifest["unknown_year"] == 24
    plain = DataConfig(source=str(streams), tokenizer="byte", cache_dir=str(tmp_path / "cache"))
    assert len(list(DocumentSelection(plain))) == 2  # without the separator: one document per file


@pytest.mark.parametrize("override", [("--data.tokenizer", "byte"), ("--data.vocab_size", "512"), ("--data.tiktoken_file", "x")])
def test_eval_refuses_to_change_the_runs_tokenizer_rather_than_ignore_it(micro_toml, tmp_path, capsys, override):
    """The run's tokenizer.json is what its model reads: an override of it was silently ignored."""
    assert main(["train", str(micro_toml), "--no-progress", "--name", "r"]) == 0
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "runs" / "r"), "--batches", "1", *override]) == 2
    assert f"{override[0][2:]} cannot change" in capsys.readouterr().err


def test_a_run_whose_corpus_moved_is_scored_where_the_corpus_is_now(genre_corpus, micro_toml, tmp_path, capsys, caplog):
    """eval --data.source NEW read the run's own corpus again to count overlap, so a run whose corpus
    had moved (or was named relative to another folder) could not be scored anywhere: it failed with
    'neither a built-in corpus nor an existing file'. The count is now left out, with a warning."""
    argv = ["train", str(micro_toml), "--no-progress", "--name", "r", "--data.source", str(genre_corpus)]
    assert main([*argv, "--data.val_fraction", "0.25"]) == 0
    run = tmp_path / "runs" / "r"
    before = _eval_json(run, capsys)
    moved = genre_corpus.rename(tmp_path / "moved")
    assert main(["eval", str(run), "--batches", "1"]) == 2
    assert f"data.source: '{genre_corpus}' is neither" in capsys.readouterr().err
    after = _eval_json(run, capsys, "--data.source", str(moved))
    assert after["train_overlap"] is None and (after["loss"], after["documents"]) == (before["loss"], before["documents"])
    assert "not counted how many scored documents the run trained on: its own corpus cannot be read" in caplog.text


def test_a_relative_source_not_found_says_where_it_was_looked_for(micro_toml, tmp_path, monkeypatch, capsys):
    """A run's recorded data.source is as given: relative to the folder it was trained from."""
    (tmp_path / "c.txt").write_text("Some text to train on. " * 200)
    monkeypatch.chdir(tmp_path)
    assert main(["train", str(micro_toml), "--no-progress", "--name", "r", "--data.source", "c.txt"]) == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "runs" / "r"), "--batches", "1"]) == 2
    err = capsys.readouterr().err
    assert (
        f"'c.txt' is neither a built-in corpus (shakespeare, brown) nor an existing file, directory or glob (a relative "
        f"path, read from the working directory {elsewhere}: run from the folder it is relative to)"
        in err
        and err.count("\n") == 1
    )
    assert main(["eval", str(tmp_path / "runs" / "r"), "--batches", "1", "--data.source", "../c.txt"]) == 0


def _marked_corpus(tmp_path, name: str, marks: dict[str, str]) -> list[str]:
    """Twelve JSON-lines documents of common words, each with its own made-up word repeated (so
    that BPE, given the document, learns it as one token); `marks`: id -> that word."""
    path = tmp_path / f"{name}.jsonl"
    common = "the king and the queen of the land went to the sea " * 20
    path.write_text("\n".join(json.dumps({"id": i, "text": common + (word + " ") * 200}) for i, word in marks.items()))
    return str(path)


def test_a_bpe_tokenizer_learns_from_the_training_side_only(tmp_path):
    """The tokenizer was trained on every selected document, so validation text shaped its merges
    (a word only there became one token): bits per byte on that text came out optimistic. BPE now
    learns from the training side only (the training documents; for a corpus split by position,
    the first 1 - val_fraction), while char, whose ids are every character it must encode, still
    reads everything."""
    from slmlab.data.split import TrainingSide
    from slmlab.data.tokenizers import BPETokenizer

    ids = [f"d{i}" for i in range(12)]
    held = validation_ids(ids, 0.25)
    marks = {i: "".join(chr(97 + (7 * k + n) % 26) for n in range(9)) for k, i in enumerate(ids)}
    source = _marked_corpus(tmp_path, "marked", marks)
    data = DataConfig(source=source, tokenizer="bpe", vocab_size=400, val_fraction=0.25, cache_dir=str(tmp_path / "cache"))
    tokenizer, tokens = prepare_tokens(data)
    assert set(tokens.manifest["val_ids"]) == held and 0 < len(held) < len(ids)
    for i, word in marks.items():
        assert (len(tokenizer.encode(" " + word)) > 1) == (i in held), i  # learned as one token where trained on
    side = TrainingSide(DocumentSelection(data), 0.25)
    assert tokenizer.digest() == BPETokenizer.train(iter(list(side.texts())), 400).digest()
    char, _ = prepare_tokens(DataConfig(source=source, tokenizer="char", val_fraction=0.25, cache_dir=str(tmp_path / "cache")))
    assert all(char.encode(word) for word in marks.values())  # every character, validation's too

    one = tmp_path / "one.txt"  # split by position: a word only in the held-out end stays unlearned
    one.write_text("the king and the queen " * 400 + "zqxjvkwpb " * 300)
    data = DataConfig(source=str(one), tokenizer="bpe", vocab_size=300, val_fraction=0.25, cache_dir=str(tmp_path / "cache"))
    tokenizer, tokens = prepare_tokens(data)
    assert tokens.manifest["split_by_position"] and len(tokenizer.encode(" zqxjvkwpb")) > 1
    assert len(tokenizer.encode(" queen")) == 1
    text = one.read_text()
    assert list(TrainingSide(DocumentSelection(data), 0.25).texts()) == [text[: int(len(text) * 0.75)]]
    shared = _marked_corpus(tmp_path, "shared", {"x": "alpha", **{"x" + " " * k: "beta" for k in range(1, 3)}})
    rows = [json.loads(line) for line in Path(shared).read_text().splitlines()]
    for row in rows:
        row["id"] = "x"  # three documents of one id: the cut falls in their concatenation
    (tmp_path / "shared.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    texts = list(TrainingSide(DocumentSelection(DataConfig(source=shared, val_fraction=0.25)), 0.25).texts())
    whole = "".join(r["text"] for r in rows)
    assert "".join(texts) == whole[: int(len(whole) * 0.75)] and texts[:2] == [rows[0]["text"], rows[1]["text"]]


def test_eval_says_it_scored_a_sample_of_windows_not_every_token(micro_toml, tmp_path, capsys):
    """`eval RUN` printed the split's token count beside a loss computed on --batches batches of
    windows: it read as every token's. It now says how many windows of how many tokens it scored
    (the fixed validation sample training evaluates on), counted here from that sample itself."""
    from slmlab.data.sampling import validation_batches
    from slmlab.runs.run_dir import load_run

    assert main(["train", str(micro_toml), "--no-progress", "--name", "r"]) == 0
    run = tmp_path / "runs" / "r"
    result = _eval_json(run, capsys)
    cfg, _, tokenizer = load_run(run)
    _, data = prepare_tokens(cfg.data, tokenizer)
    rows = sum(len(x) for x, _ in validation_batches(data.val, cfg.data.seq_len, cfg.train.batch_size, 1))
    assert (result["windows"], result["window"]) == (rows, cfg.data.seq_len) == (4, 32)
    assert main(["eval", str(run), "--batches", "2"]) == 0
    assert "; scored in 8 windows of 32): loss" in capsys.readouterr().out


@pytest.mark.parametrize("batches", [3, 400])
def test_eval_gives_its_loss_an_interval_over_the_batches_where_the_windows_share_no_token(micro_toml, tmp_path, capsys, batches):
    """`eval RUN` printed a loss alone. Its 95% CI over the batches (t over their mean losses,
    checked against a naive one) is given where the windows share no token; where a short split
    makes them overlap, the line says why there is none."""
    import numpy as np
    import scipy.stats

    from slmlab.data.sampling import validation_batches, validation_offsets
    from slmlab.runs.run_dir import load_run

    assert main(["train", str(micro_toml), "--no-progress", "--name", "r"]) == 0
    run = tmp_path / "runs" / "r"
    cfg, model, tokenizer = load_run(run)
    _, data = prepare_tokens(cfg.data, tokenizer)
    capsys.readouterr()
    assert main(["eval", str(run), "--batches", str(batches), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    offsets = validation_offsets(len(data.val), cfg.data.seq_len, cfg.train.batch_size, batches)
    assert main(["eval", str(run), "--batches", str(batches)]) == 0
    line = capsys.readouterr().out
    if batches == 400:  # more windows than the split holds apart
        assert (np.diff(offsets) < cfg.data.seq_len).any() and result["loss_low"] is None
        assert "no interval: the windows overlap" in line
        return
    assert (np.diff(offsets) >= cfg.data.seq_len).all()
    losses = np.array([model(x, y)[1].item() for x, y in validation_batches(data.val, cfg.data.seq_len, cfg.train.batch_size, 3)])
    half = scipy.stats.t.ppf(0.975, 2) * losses.std(ddof=1) / np.sqrt(3)
    assert result["loss"] == pytest.approx(losses.mean())
    assert (result["loss_low"], result["loss_high"]) == pytest.approx((losses.mean() - half, losses.mean() + half))
    assert f"; 95% CI of the loss [{result['loss_low']:.4f}, {result['loss_high']:.4f}] over 3 batches" in line
