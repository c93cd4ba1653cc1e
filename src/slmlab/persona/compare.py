"""`persona-eval --compare RUN_A RUN_B ...`: each run against the first, paired.

The per-run table gives each run's adherence with its own interval; whether run B holds the
persona better than run A, or what it costs on the other text, is a paired question, and two
overlapping intervals do not answer it. Here, for every run after the first:

- Δ adherence (neutral, adversarial): the mean over the prompts both runs' tokenizers encode of
  B's 1/0 minus A's on the same prompt, with a 95% bootstrap interval over those prompts;
- Δ% perplexity on the persona text and on the other text: 100 (exp(loss_B − loss_A) − 1) with its
  95% CI from the two runs' paired batch losses (experiments/stats.py's perplexity_change), where
  both scored the same token windows (the same tokenizer, seq_len and batch size); else "–", and
  the bits-per-byte columns of the per-run table are the comparison.
"""

from __future__ import annotations

import math

import numpy as np

from ..config import offset_seed
from ..experiments.stats import bootstrap_mean, percent_interval, perplexity_change
from ..tables import format_number, markdown_table


def adherence_change(base: list[float | None], other: list[float | None], seed: int) -> tuple[float, float, float]:
    """(mean, 2.5th, 97.5th percentile) of other − base over the prompts both scored; NaNs where none."""
    pairs = np.array([(b, a) for a, b in zip(base, other) if a is not None and b is not None], dtype=np.float64)
    if len(pairs) == 0:
        return math.nan, math.nan, math.nan
    return bootstrap_mean(pairs[:, 0] - pairs[:, 1], seed)


def text_change(base: dict, other: dict) -> dict[str, float]:
    """perplexity_change of `other`'s text score against `base`'s (text_scores' loss, batches,
    windows), paired by batch; {} where the two scored other windows or either could not score
    the text (no batches, no windows)."""
    if not base["batches"] or base["windows"] != other["windows"]:
        return {}
    return perplexity_change(other["loss"] - base["loss"], other["batches"], base["batches"])


def paired_rows(results: list[dict], seed: int = 0) -> list[dict]:
    """One row per run after the first: its Δ adherence and Δ% perplexities against the first run."""
    base, rows = results[0], []
    for index, result in enumerate(results[1:], 1):
        rows.append(
            {
                "run": result["run"],
                "against": base["run"],
                **{
                    f"{kind}_change": adherence_change(
                        base["scores"][kind], result["scores"][kind], offset_seed(seed, 10 * index + i)
                    )
                    for i, kind in enumerate(("neutral", "adversarial"))
                },
                **{
                    f"{text}_ppl_change": text_change(base["texts"][text], result["texts"][text]) for text in ("persona", "other")
                },
            }
        )
    return rows


def _adherence(triple) -> str:
    mean, low, high = triple
    return "–" if math.isnan(mean) else f"{mean:+.2f} [{low:+.2f}, {high:+.2f}]"


def _percent(change: dict) -> str:
    return f"{format_number(change.get('delta_pct'), '+.2f', '%')} {percent_interval(change)}" if change else "–"


def comparison_table(results: list[dict], seed: int = 0) -> str:
    """The paired rows as a Markdown table under a line naming the run they are compared with; ""
    for one run."""
    if len(results) < 2:
        return ""
    rows = paired_rows(results, seed)
    table = markdown_table(
        ("run", "Δ adherence, neutral", "Δ adherence, adversarial", "Δ% persona ppl [95% CI]", "Δ% other-text ppl [95% CI]"),
        [
            (
                r["run"],
                _adherence(r["neutral_change"]),
                _adherence(r["adversarial_change"]),
                _percent(r["persona_ppl_change"]),
                _percent(r["other_ppl_change"]),
            )
            for r in rows
        ],
    )
    unpaired = any(not r["persona_ppl_change"] or not r["other_ppl_change"] for r in rows)
    note = " ('–': other token windows, or a text not scored; compare bits per byte above)" if unpaired else ""
    return (
        f"Against {results[0]['run']}, paired: adherence by prompt (95% bootstrap CIs over the prompts both encode), "
        f"perplexity by validation batch{note}\n\n{table}"
    )
