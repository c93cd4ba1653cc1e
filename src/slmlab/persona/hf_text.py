"""Text through a Hugging Face model's own tokenizer (model surgery), its failures in one line.

A tokenizer that cannot encode a text raises the tokenizers library's bare `Exception` ("WordLevel
error: Missing [UNK] token from the vocabulary": a character-level vocabulary that never saw a
character of the persona text); it becomes a ConfigError naming what was being encoded. Whole
documents are encoded at once and cut into windows later, so the library's warning that a text
is longer than the model's context is not shown.
"""

from __future__ import annotations

from ..errors import ConfigError


def hf_encode(tokenizer, texts, what: str, **kwargs):
    """`tokenizer(texts, **kwargs)` (a BatchEncoding), or a ConfigError saying `what` it could not encode."""
    try:
        return tokenizer(texts, verbose=False, **kwargs)
    except Exception as err:  # the tokenizers library raises plain Exception
        first = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise ConfigError(
            f"{what}: the model's tokenizer cannot encode it ({first[:200]}); give text it can read, "
            "e.g. only the characters of the corpus a character-level model was trained on"
        ) from None
