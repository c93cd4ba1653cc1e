"""Next-token sampling: temperature, top-k and top-p (nucleus) on a (B, V) logit row."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import torch

from ..config.checks import is_whole_number
from ..errors import ConfigError

NOT_FINITE = (
    "the model's next-token probabilities are not finite (NaN or inf logits): its weights are damaged "
    "or its training diverged; use an earlier checkpoint"
)


def unusable_rows(logits: torch.Tensor) -> torch.Tensor:
    """(B, V) logits -> (B,) bool: rows no distribution can be read from (a NaN or +inf logit, or
    every logit -inf), read off the row's maximum, which NaN propagates to. -inf alone is a token
    ruled out, not damage."""
    return ~torch.isfinite(logits.amax(dim=-1))


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_sampling(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Sampling options sample_next can honour (checked once per generation, not per token); a
    filter of None is off, as nanoGPT's generate and Hugging Face's spell it."""
    if not (_is_number(temperature) and math.isfinite(temperature) and temperature >= 0):
        raise ConfigError(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature!r}")
    if top_k is not None and not is_whole_number(top_k, 0):
        raise ConfigError(f"top_k must be a whole number >= 0 (0 or None = off), got {top_k!r}")
    if top_p is not None and not (_is_number(top_p) and 0 < top_p <= 1):
        raise ConfigError(f"top_p must be in (0, 1] (1 or None = off), got {top_p!r}")


def greedy_ignores(
    temperature: float, top_k: int | None, top_p: float | None, seed: int = 0, spell: Callable[[str], str] = str
) -> str:
    """ "" or one line naming what temperature 0 ignores: the filters set (top_k, top_p) and a
    `seed` set (0, the default, counts as none), with each name as `spell` writes it ("--top-k").
    Greedy decoding takes the most likely token, which every filter keeps, and draws no random
    number; a user who sets one of them believes it samples."""
    if temperature != 0:
        return ""
    filters = [spell(name) for name, on in (("top_k", top_k not in (0, None)), ("top_p", top_p not in (1.0, None))) if on]
    said = [f"{' and '.join(filters)} {'filter' if len(filters) > 1 else 'filters'} what is sampled"] if filters else []
    said += [f"{spell('seed')} {seed} seeds the sampling"] if seed else []
    if not said:
        return ""
    them = "them" if len(filters) + bool(seed) > 1 else "it"
    return f"{'; '.join(said)}, and {spell('temperature')} 0 samples nothing (greedy decoding): remove {them}, or give a temperature > 0"


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = 0,
    top_p: float | None = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """(B, V) logits -> (B, 1) token ids. temperature 0 is greedy (argmax); top_k 0 or None and
    top_p 1 or None are off.

    p = softmax((z - max z) / temperature): shifting by the row's maximum first (softmax is
    shift-invariant) keeps a tiny temperature from overflowing z / temperature to inf, which
    would turn the row into NaN; the most likely token keeps logit 0 and the rest go to -inf.
    A temperature below float32's smallest normal number (which float32 would round to 0) acts as
    that number: the draw is already the argmax, ties shared. Logits that give no distribution (a
    NaN or +inf, every one -inf: unusable_rows) draw an arbitrary id; the caller checks them.
    """
    if temperature <= 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float()
    logits = (logits - logits.amax(dim=-1, keepdim=True)) / max(temperature, torch.finfo(torch.float32).tiny)
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop_sorted = cumulative - sorted_logits.softmax(dim=-1) >= top_p  # keep the smallest set reaching top_p
        drop_sorted[:, 0] = False  # and always the most likely token (a top_p float32 rounds to 0 dropped it too)
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    probs = logits.softmax(dim=-1)
    # torch.multinomial(probs, 1)'s own draw, the exponential race (argmax of p / q, q ~ Exp(1)
    # per token): the same ids from the same generator, without its checks of the row, which read
    # three scalars (on CUDA, three host syncs per token; on CPU ~60% of sampling's time). A row
    # that is no distribution (NaN or +inf logits) draws some id: `generate` checks every step's
    # logits (unusable_rows) and refuses them at its end.
    race = torch.empty_like(probs).exponential_(generator=generator)
    return probs.div_(race).argmax(dim=-1, keepdim=True)
