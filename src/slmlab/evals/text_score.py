"""Scoring a whole text: every token predicted once, each after as much of the text before it as
the model's window holds, as lm-evaluation-harness's rolling log-likelihood and Hugging Face's
strided perplexity score a document (`slmlab eval RUN --text FILE`; the lm-eval adapter's rolling
windows).

With full = [separator] + ids (the first token is predicted after the separator that joins
documents in training), n = len(ids), and window ends stop = min(window, n), then + stride up to n:

    inputs   full[max(0, stop - window) : stop]
    targets  full[max(0, stop - window) + 1 : stop + 1], of which those after the previous window's
             stop count

stride = window gives disjoint chunks (lm-eval's rolling windows: a token sees 0..window-1 tokens of
its own chunk); a smaller stride gives every token after the first window at least window - stride
tokens of context, for about window / stride times the compute.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..config import ConfigError
from ..experiments.stats import ratio_interval
from ..phase_progress import PhaseProgress
from ..runs.metrics import perplexity


def window_spans(n: int, window: int, stride: int) -> Iterator[tuple[int, int, int]]:
    """(start, counted, stop) per window above, as indices into full: inputs full[start:stop],
    targets full[start + 1 : stop + 1], of which those after full[counted] count."""
    counted, stop = 0, min(window, n)
    while counted < n:
        yield max(0, stop - window), counted, stop
        counted, stop = stop, min(stop + stride, n)


def rolling_pairs(ids: list[int], separator: list[int], window: int, stride: int) -> Iterator[tuple[list[int], list[int]]]:
    """(context, targets) per window above: the targets it counts, and the inputs before them."""
    full = separator[-1:] + list(ids)
    for start, counted, stop in window_spans(len(ids), window, stride):
        yield full[start : counted + 1], full[counted + 1 : stop + 1]


@torch.no_grad()
def score_text(
    model, tokenizer, text: str, stride: int | None = None, batch_size: int = 16, progress: str = "", window: int | None = None
) -> dict[str, Any]:
    """Every token of `text` scored once (module docstring), in windows of `window` tokens (default:
    model.cfg.block_size; the commands pass the context the run trained at, evals/score.py's
    scoring_window) moved by `stride` (default: the window) -> {tokens, bytes, loss (mean nats per
    token), loss_low, loss_high (its 95% CI over the windows, which score no token twice:
    experiments/stats.py's ratio_interval; NaN from one window), ppl, bpb (bits per UTF-8 byte of
    the text), window, stride, windows}. `text` is read as corpus text: "[EOS]" in it
    is text, not the special token. The ids stay one integer array and the windows are made a batch
    at a time, so a text of any length needs memory for itself and one batch."""
    window = window or model.cfg.block_size
    if not 1 <= window <= model.cfg.block_size:
        raise ConfigError(
            f"the window must be a whole number from 1 to the model's context of {model.cfg.block_size}, got {window}"
        )
    stride = window if stride is None else stride
    if isinstance(stride, bool) or not isinstance(stride, int) or not 1 <= stride <= window:
        raise ConfigError(f"the stride must be a whole number from 1 to the model's window of {window}, got {stride!r}")
    ids = np.asarray(tokenizer.encode_documents([text])[0], dtype=np.int64)
    if not len(ids):
        raise ConfigError("the text is empty (or holds nothing this tokenizer encodes): give some text to score")
    full = torch.from_numpy(np.concatenate([np.asarray(tokenizer.separator_ids()[-1:], dtype=np.int64), ids]))
    spans = window_spans(len(ids), window, stride)
    count = 1 + -(-(len(ids) - min(window, len(ids))) // stride)  # the first window, then one per stride
    device = next(model.parameters()).device
    nll, scored = [], []  # per window: the nats summed over the tokens it scores, and their count
    with PhaseProgress(progress, count, "windows") as shown:
        while batch := list(itertools.islice(spans, batch_size)):
            width = max(stop - start for start, _, stop in batch)
            inputs = torch.zeros(len(batch), width, dtype=torch.long)  # right-padded: the model is causal
            for row, (start, _, stop) in enumerate(batch):
                inputs[row, : stop - start] = full[start:stop]
            logits, _ = model(inputs.to(device))
            for row, (start, counted, stop) in enumerate(batch):
                predicted = logits[row, counted - start : stop - start].float()  # predicting full[counted + 1 : stop + 1]
                nll.append(F.cross_entropy(predicted, full[counted + 1 : stop + 1].to(device), reduction="sum").double())
                scored.append(stop - counted)
            shown.update(len(batch))
    by_window = torch.stack(nll).cpu().numpy()
    size, nats = len(text.encode("utf-8")), float(by_window.sum())
    loss = nats / len(ids)
    low, high = ratio_interval(by_window, scored)
    return {
        "tokens": len(ids),
        "bytes": size,
        "loss": loss,
        "loss_low": low,
        "loss_high": high,
        "ppl": perplexity(loss),
        "bpb": nats / math.log(2) / size,
        "window": window,
        "stride": stride,
        "windows": count,
    }
