"""slmlab_cloze: a held-out cloze task for lm-evaluation-harness, built from a run's own corpus.

Each example is a passage of the run's *validation* documents (the split rule keeps them out of
training): a speech or paragraph (text between blank lines) of at least MIN_WORDS words, ending
in a word. The model sees the passage without its last word and chooses among that word and
CHOICES - 1 distractors, the last words of other passages, by log-likelihood (lm-eval's
multiple_choice: acc, and acc_norm which divides by the choice's length in bytes). Examples are
spread evenly over the held-out passages and the choices shuffled with a fixed seed, so two runs
on the same corpus get the same task, and a sweep's runs are scored on identical items.

The task folder holds the harness's YAML and a JSON-lines file; nothing is downloaded.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from ..config import DataConfig
from ..data.corpora import DocumentSelection
from ..data.split import TrainingSide
from ..data.tokenizers import Tokenizer
from ..data.tokens import prepare_tokens
from ..errors import ConfigError, TokenizerError
from ..files import atomic_write_text

TASK = "slmlab_cloze"
MIN_WORDS = 8
CHOICES = 4
LAST_WORD = re.compile(r"(?<![\w'])([A-Za-z][A-Za-z']*)([^\w\s]*)\s*$")


def held_out_texts(data: DataConfig, tokenizer: Tokenizer) -> list[str]:
    """The texts of the selection's validation documents; for a selection split by position (a
    single document, or documents that share one id), its validation tokens decoded (the tail the
    token split held out, data/tokens.py)."""
    selection = DocumentSelection(data)
    side = TrainingSide(selection, data.val_fraction)
    if side.by_position:
        _, tokens = prepare_tokens(data, tokenizer)
        return [tokenizer.decode(tokens.val.tokens.tolist())]
    return [d.text for d in selection if d.id in side.held_out]


def passages(text: str) -> list[tuple[str, str]]:
    """(context, last word) of each blank-line-separated passage that ends in a word."""
    found = []
    for passage in re.split(r"\n\s*\n", text):
        passage = passage.strip("\n")
        match = LAST_WORD.search(passage)
        if match and len(passage.split()) >= MIN_WORDS:
            found.append((passage[: match.start(1)], match.group(1)))
    return found


def cloze_examples(data: DataConfig, tokenizer: Tokenizer, limit: int = 500, seed: int = 0) -> list[dict]:
    """Up to `limit` examples: {"context", "choices" (words), "gold" (index of the true word)}."""
    candidates = [p for text in held_out_texts(data, tokenizer) for p in passages(text)]
    pool = sorted({word for _, word in candidates})
    if len(pool) < CHOICES:
        raise ConfigError(f"{TASK}: the held-out text has fewer than {CHOICES} distinct passage-final words; use a larger corpus")
    rng = random.Random(seed)
    examples = []
    for context, word in candidates[:: max(1, len(candidates) // limit)]:
        if len(examples) >= limit:
            break
        distractors = rng.sample([w for w in pool if w != word], CHOICES - 1)
        choices = [word, *distractors]
        rng.shuffle(choices)
        try:  # a char tokenizer knows only its training characters
            tokenizer.encode(context + " ".join(choices))
        except TokenizerError:
            continue
        examples.append({"context": context, "choices": choices, "gold": choices.index(word)})
    if not examples:
        raise ConfigError(f"{TASK}: no passage of the held-out text could be encoded by the run's tokenizer")
    return examples


def write_cloze_task(folder: Path, examples: list[dict]) -> Path:
    """Write the task (YAML + JSON lines) into `folder` -> the folder, for TaskManager(include_path=...)."""
    import yaml

    data = atomic_write_text(folder / f"{TASK}.jsonl", "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in examples))
    spec = {
        "task": TASK,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data.resolve())}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "{{context}}",
        "doc_to_choice": "choices",
        "doc_to_target": "gold",
        "target_delimiter": "",
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
        ],
        "metadata": {"version": 1.0, "description": "held-out cloze: a passage's last word among 4 (slmlab)"},
    }
    atomic_write_text(folder / f"{TASK}.yaml", yaml.safe_dump(spec, sort_keys=False, allow_unicode=True))
    return folder
