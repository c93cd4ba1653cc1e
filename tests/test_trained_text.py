"""`eval RUN --text FILE` and `eval SWEEP --text FILE` score a text meant to be held out; a file
copied from the training corpus scored optimistically without a word (and in a sweep, favoured the
variant that memorised more). Passages of the text are now looked for in the run's training split,
counted in the result line, and a text found there is named in a warning."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from slmlab.cli import main
from slmlab.data.split import validation_ids
from slmlab.evals.trained_text import MIN_TEXT, PASSAGE, TrainedPassages, passages_of, trained_passages

WORDS = [
    "the",
    "of",
    "a",
    "fair",
    "lord",
    "night",
    "sword",
    "crown",
    "heart",
    "love",
    "death",
    "wind",
    "sea",
    "king",
    "queen",
    "ghost",
    "blood",
    "rose",
]


def write_documents(folder, count: int, seed: int = 0) -> list[str]:
    """`count` documents of distinct random words (no 200-character passage shared between them)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    names = []
    for i in range(count):
        names.append(f"doc{i:02d}.txt")
        (folder / names[-1]).write_text(" ".join(rng.choice(WORDS, 400)) + ".\n")
    return names


def test_passages_are_evenly_spaced_distinct_and_the_whole_of_a_short_text():
    text = "".join(chr(65 + i % 26) for i in range(10_000))
    chosen = passages_of(text)
    assert len(chosen) == 8 and all(len(p) == PASSAGE for p in chosen)
    assert chosen[0] == text[:PASSAGE] and chosen[-1] == text[-PASSAGE:]
    assert passages_of("short text") == ["short text"] and passages_of("ab" * 150) == ["ab" * 100, "ba" * 100]


def test_a_text_is_found_in_the_training_split_and_not_in_the_validation_split(tmp_path, micro_toml, capsys, caplog):
    names = write_documents(tmp_path / "docs", 10)
    held = validation_ids(names, 0.1)
    trained_doc = next(n for n in names if n not in held)
    held_doc = next(iter(held))
    argv = ["train", str(micro_toml), "--name", "r", "--data.source", str(tmp_path / "docs"), "--data.val_fraction", "0.1"]
    assert main([*argv, "--no-progress"]) == 0
    run = tmp_path / "runs" / "r"
    capsys.readouterr()
    caplog.set_level("WARNING")
    assert main(["eval", str(run), "--text", str(tmp_path / "docs" / trained_doc)]) == 0
    assert "(2,4" not in capsys.readouterr().out  # the line below carries the count
    assert "8 of its 8 passages found in the run's training split: the score is optimistic" in caplog.text
    caplog.clear()
    assert main(["eval", str(run), "--text", str(tmp_path / "docs" / held_doc), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["trained_passages"] == {"found": 0, "looked": 8}
    assert "optimistic" not in caplog.text
    half = (tmp_path / "docs" / trained_doc).read_text()[:1000] + (tmp_path / "docs" / held_doc).read_text()[-1000:]
    (tmp_path / "half.txt").write_text(half)
    assert main(["eval", str(run), "--text", str(tmp_path / "half.txt")]) == 0
    assert "4 of its 8 passages found in the run's training split" in capsys.readouterr().out
    (tmp_path / "tiny.txt").write_text((tmp_path / "docs" / trained_doc).read_text()[: MIN_TEXT - 1])
    assert main(["eval", str(run), "--text", str(tmp_path / "tiny.txt"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["trained_passages"] is None  # too short to tell
    shutil.rmtree(tmp_path / "docs")  # the run's corpus gone: the text is still scored, and the check said undone
    caplog.clear()
    assert main(["eval", str(run), "--text", str(tmp_path / "half.txt"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["trained_passages"] is None
    assert "not looked for in the run's training text: its corpus cannot be read" in caplog.text


def test_a_one_document_corpus_is_trained_on_its_start_and_holds_out_its_end(tmp_path, make_config):
    write_documents(tmp_path / "one", 1)
    text = (tmp_path / "one" / "doc00.txt").read_text()
    data = make_config(tmp_path / "one").data
    assert trained_passages(data, text[:1500]) == TrainedPassages(8, 8)
    tail = trained_passages(data, text[-int(len(text) * data.val_fraction) + 5 :])
    assert tail.found == 0 and tail.looked >= 1


def test_a_sweep_scored_on_its_own_training_text_says_which_runs_trained_on_it(tmp_path, micro_sweep, capsys, caplog):
    names = write_documents(tmp_path / "docs", 10)
    base = micro_sweep.parent / "base.toml"
    base.write_text(base.read_text().replace(str(tmp_path / "corpus"), str(tmp_path / "docs")))
    assert main(["sweep", str(micro_sweep)]) == 0
    trained_doc = next(n for n in names if n not in validation_ids(names, 0.1))
    caplog.set_level("WARNING")
    assert main(["eval", str(tmp_path / "runs" / "micro"), "--text", str(tmp_path / "docs" / trained_doc)]) == 0
    assert "the text is not held out from 4 runs: baseline_s1 (8 of its 8 passages" in caplog.text
    assert "their scores are optimistic, and a variant that memorises more gains" in caplog.text


@pytest.mark.parametrize("size", [MIN_TEXT, 500, 5000])
def test_every_passage_of_a_training_document_is_found(tmp_path, make_config, size):
    names = write_documents(tmp_path / "docs", 6, seed=size)
    data = make_config(tmp_path / "docs").data
    trained = [n for n in names if n not in validation_ids(names, data.val_fraction)]
    for name in trained:
        text = (tmp_path / "docs" / name).read_text()
        start = len(text) // 3
        found = trained_passages(data, text[start : start + size])
        assert found is not None and found.found == found.looked >= 1


def test_one_passage_is_counted_as_one():
    from slmlab.evals.trained_text import TrainedPassages

    assert TrainedPassages(0, 1).describe() == "0 of its 1 passage found in the run's training split"  # "1 passages"
