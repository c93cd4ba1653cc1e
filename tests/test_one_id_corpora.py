"""A corpus whose documents all share one id (JSON lines whose `id` names a speaker or a
conversation) is split by position, as a single document is: the token files hold its tail out.
Every other reader of the split decided "by position" from the number of documents, so with many
documents of one id the rule put all of them on one side: lm-eval's cloze task found no held-out
passage, the persona classifier held none out, and persona-eval had no adversarial opening.
`data/split.py`'s `splits_by_position` is now the one test every reader uses."""

from __future__ import annotations

import dataclasses
import json

import pytest

from slmlab.config import DataConfig
from slmlab.data.corpora import DocumentSelection
from slmlab.data.split import TrainingSide, splits_by_position
from slmlab.data.tokens import prepare_tokens

WORDS = ["the", "king", "rode", "out", "at", "dawn", "and", "queen", "kept", "hall", "in", "rain"]


def _one_id_corpus(tmp_path, name: str = "speaker.jsonl", records: int = 60) -> DataConfig:
    """`records` JSON-lines documents, every one with the id "ann"; blank-line separated passages
    of 12 words each, so that each document ends in a word."""
    lines = []
    for i in range(records):
        words = [WORDS[(i * 7 + j) % len(WORDS)] for j in range(36)]
        text = "\n\n".join(" ".join(words[k : k + 12]) + "." for k in (0, 12, 24))
        lines.append(json.dumps({"id": "ann", "text": f"{text} {i}"}))
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return DataConfig(source=str(path), tokenizer="byte", cache_dir=str(tmp_path / "cache"), val_fraction=0.1)


@pytest.mark.parametrize(("ids", "expected"), [([], True), (["a"], True), (["a"] * 5, True), (["a", "b"], False)])
def test_one_id_is_split_by_position(ids, expected):
    assert splits_by_position(ids) is expected


def test_the_cloze_task_holds_out_the_tail_the_token_files_hold_out(tmp_path):
    from slmlab.evals.cloze import held_out_texts

    data = _one_id_corpus(tmp_path)
    tokenizer, tokens = prepare_tokens(data, None)
    assert tokens.manifest["split_by_position"] and len(tokens.val.tokens) > 0
    held = held_out_texts(data, tokenizer)
    assert held == [tokenizer.decode(tokens.val.tokens.tolist())] and held[0].strip()
    assert TrainingSide(DocumentSelection(data), data.val_fraction).by_position


def test_the_persona_classifier_and_persona_eval_hold_out_part_of_a_one_id_side(tmp_path):
    from slmlab.persona.classifier import held_out_passages, persona_data
    from slmlab.persona.evaluate import INSTRUCTIONS, adversarial_prompts

    persona = _one_id_corpus(tmp_path, "persona.jsonl")
    docs = list(DocumentSelection(persona))
    sides = held_out_passages(docs)
    held = [chunk for is_held, chunks in sides if is_held for chunk in chunks]
    kept = [chunk for is_held, chunks in sides if not is_held for chunk in chunks]
    assert held and kept and len(held) == max(1, int((len(held) + len(kept)) * 0.2))
    other = tmp_path / "other.txt"
    other.write_text("\n\n".join(f"A plain line of other text, number {i}, set down here." for i in range(200)))
    data = persona_data(persona.source, str(other))
    openings = adversarial_prompts(dataclasses.replace(data, other_documents=docs), n_openings=4, seed=0)
    assert len(openings) == len(INSTRUCTIONS) + 1  # one opening from a one-id other side, where there was none
