"""The two texts persona-eval tells apart, and the classifier that tells them apart.

`persona_data` reads the persona's text and the other text (for a named corpus, its other
genres), the other side without the documents it shares with the persona. `PersonaClassifier`:
TF-IDF character n-grams + logistic regression (scikit-learn), trained on ~400-character passages
of persona text (label 1) against other text (label 0), split by document (a side of one document
by position); its held-out balanced accuracy (`HeldOutScore`) is reported with each side's recall,
and said where it is not clearly above chance.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np

from ..config import ConfigError, DataConfig
from ..data.corpora import Document, DocumentSelection, open_source
from ..data.split import splits_by_position, text_digest, validation_ids
from ..tables import counted
from .stage2 import source_data_config

log = logging.getLogger("slmlab")

PASSAGE = 400


@dataclasses.dataclass
class PersonaData:
    """The persona's text and the text it is told apart from, as selections (`persona`, `other`:
    their perplexities are scored on what they name) and as documents (`persona_documents`,
    `other_documents`: the classifier's two sides and the adversarial openings), where the other
    side leaves out every document whose text is a persona document's: one passage under both
    labels teaches the classifier nothing, and an adversarial prompt that opens persona text pulls
    nowhere."""

    persona: DataConfig
    other: DataConfig
    persona_documents: list[Document]
    other_documents: list[Document]


def _told_apart(persona: DataConfig, other: DataConfig, persona_spec: str, other_spec: str) -> PersonaData:
    """Both sides read once; persona documents left out of the other side, with a warning that
    counts them, or a ConfigError if no other document is left."""
    named = f"--other-data {other_spec}" if other_spec else "the other genres"
    persona_docs = list(DocumentSelection(persona))
    persona_texts = {text_digest(doc.text) for doc in persona_docs}
    other_docs, shared = [], 0
    for doc in DocumentSelection(other):
        if text_digest(doc.text) in persona_texts:
            shared += 1
        else:
            other_docs.append(doc)
    if not other_docs:
        raise ConfigError(
            f"every document of {named} is persona text (--persona-data {persona_spec}): "
            "nothing would tell the persona apart; give other text"
        )
    if shared:
        log.warning(
            f"{shared} of the {counted(shared + len(other_docs), 'documents')} of {named} are also persona "
            "documents: the classifier's other side and the adversarial prompts leave them out (its perplexity columns "
            "score the text as named)"
        )
    return PersonaData(persona, other, persona_docs, other_docs)


def persona_data(persona_spec: str, other_spec: str = "", cache_dir: str = "", **reading) -> PersonaData:
    """The two texts SOURCEs name; `reading`: DataConfig fields on how their files are read
    (text_field, doc_separator), the same for both."""
    persona = source_data_config(persona_spec, cache_dir=cache_dir, **reading)
    if other_spec:
        other = source_data_config(other_spec, "--other-data", cache_dir=cache_dir, **reading)
    elif persona.genres:  # the same named corpus, every other genre
        source = open_source(persona)
        chosen = {source.resolve_genre(g) for g in persona.genres}
        other = dataclasses.replace(persona, genres=[g for g in source.genres if g not in chosen])
    else:
        raise ConfigError("give --other-data SOURCE: the text the persona is told apart from")
    if DocumentSelection(persona).fingerprint() == DocumentSelection(other).fingerprint():
        raise ConfigError(
            f"--persona-data {persona_spec} and --other-data {other_spec or '(its other genres)'} select the same text: "
            "nothing would tell the persona apart; give another --other-data"
        )
    return _told_apart(persona, other, persona_spec, other_spec)


# ---- the classifier ---------------------------------------------------------------------------


def passages(text: str, size: int = PASSAGE) -> list[str]:
    return [text[i : i + size] for i in range(0, max(1, len(text) - size // 2), size)]


class PersonaClassifier:
    """P(persona | text) from character n-gram TF-IDF and logistic regression."""

    def __init__(self, data: PersonaData, seed: int = 0):
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        train_texts, train_labels, test_texts, test_labels = [], [], [], []
        for label, docs in ((1, data.persona_documents), (0, data.other_documents)):
            for held, chunks in held_out_passages(docs):
                texts, labels = (test_texts, test_labels) if held else (train_texts, train_labels)
                texts += chunks
                labels += [label] * len(chunks)
        self.pipeline = make_pipeline(
            TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True, max_features=50000),
            LogisticRegression(max_iter=2000, class_weight="balanced", random_state=seed % 2**32),  # sklearn's range
        )
        self.pipeline.fit(train_texts, train_labels)
        self.held_out = len(test_texts)
        both = set(test_labels) == {0, 1}  # a balanced accuracy needs held-out passages of each side
        held = HeldOutScore(np.asarray(test_labels), self.pipeline.predict(test_texts)) if both else None
        self.recalls = held.recalls if held else (math.nan, math.nan)
        self.accuracy = held.balanced_accuracy if held else math.nan
        self.above_chance = bool(held and held.above_chance())

    def persona_probability(self, texts: list[str]) -> np.ndarray:
        return self.pipeline.predict_proba(texts)[:, 1]

    def describe(self) -> str:
        """The held-out accuracy in words, or why it was not measured."""
        if math.isnan(self.accuracy):
            return "held-out balanced accuracy not measured (each side needs text of two passages or more)"
        told = "" if self.above_chance else "; not clearly above chance: adherence may not tell the persona apart"
        return (
            f"held-out balanced accuracy {self.accuracy:.3f} on {counted(self.held_out, 'passages')} (recall of persona "
            f"{self.recalls[1]:.2f}, of other text {self.recalls[0]:.2f}{told})"
        )


class HeldOutScore:
    """The classifier on its held-out passages: rᵢ the recall of class i (0 other, 1 persona) over
    its nᵢ passages, the balanced accuracy BA = (r₀ + r₁)/2 (a classifier that calls everything
    one class scores 0.5, however rare the other)."""

    def __init__(self, labels: np.ndarray, predicted: np.ndarray):
        self.counts = [int((labels == c).sum()) for c in (0, 1)]
        self.correct = [int(((labels == c) & (predicted == c)).sum()) for c in (0, 1)]
        self.recalls = tuple(k / n for k, n in zip(self.correct, self.counts))
        self.balanced_accuracy = sum(self.recalls) / 2

    def above_chance(self) -> bool:
        """Whether BA is above 0.5 beyond sampling noise: with each recall smoothed to
        r̃ᵢ = (kᵢ + 2)/(nᵢ + 4) (so that a recall of 0 or 1 still has a spread), the lower 95% bound
        (r̃₀ + r̃₁)/2 − 1.96·½·√(Σ r̃ᵢ(1 − r̃ᵢ)/nᵢ) is above 0.5."""
        smoothed = [(k + 2) / (n + 4) for k, n in zip(self.correct, self.counts)]
        spread = math.sqrt(sum(r * (1 - r) / n for r, n in zip(smoothed, self.counts)))
        return sum(smoothed) / 2 - 1.96 * 0.5 * spread > 0.5


def held_out_passages(docs: list, fraction: float = 0.2) -> list[tuple[bool, list[str]]]:
    """(held out?, passages) of each document of one side: split by document (data/split.py),
    or for a single document (or documents sharing one id) by position, its last `fraction` of
    passages held out (at least one, when it has two or more), as token files split such a corpus."""
    ids = [d.id for d in docs]
    if not splits_by_position(ids):
        test_ids = validation_ids(ids, fraction)
        return [(doc.id in test_ids, passages(doc.text)) for doc in docs]
    chunks = [chunk for doc in docs for chunk in passages(doc.text)]
    cut = len(chunks) - max(1, int(len(chunks) * fraction)) if len(chunks) > 1 else len(chunks)
    return [(False, chunks[:cut]), (True, chunks[cut:])]
