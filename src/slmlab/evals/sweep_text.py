"""`slmlab eval SWEEP --text FILE`: every finished run of a sweep scores the same text (text_score.py),
and each variant's bits per byte are compared with the baseline's seed by seed: the verdict of the
sweep's table, on text none of the runs trained on (another corpus, a held-out book; a text found in
a run's training split is named in a warning, trained_text.py). Bits per byte, not loss: the
variants may use different tokenizers."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..errors import TokenizerError
from ..experiments.results import delta_cell
from ..experiments.stats import mean_std, paired_difference
from ..experiments.sweep_dir import read_sweep_dir
from ..tables import counted, format_number, markdown_table
from .score import load_for_inference, scoring_window
from .text_score import score_text
from .trained_text import TrainedPassages, trained_passages

log = logging.getLogger("slmlab")
HEADERS = ("variant", "runs", "text bpb", "std", "Δ bpb [95% CI]", "wins")


def score_sweep_text(
    path: Path, text: str, stride: int | None, device: str, context_length: int | None = None
) -> tuple[str, dict[str, Any]]:
    """(a Markdown table of each variant's bits per byte on `text` and its paired Δ vs the
    baseline, the figures as a dict). Each run scores it in windows of `context_length`, else of
    the context it trained at (score.scoring_window). Runs without a summary.json (failed or
    unfinished) are left out, and said so; variants that trained at other contexts, which score
    the text in windows of other lengths, are named in a warning."""
    sweep = read_sweep_dir(path)
    scores: dict[str, dict[int, float]] = {}
    windows: dict[str, int] = {}  # variant -> the context its runs score the text in
    trained_on: dict[str, TrainedPassages | None] = {}  # a training corpus (its config) -> the text's passages in it
    trained_runs: list[str] = []
    for variant, members in sweep.by_variant.items():
        scores[variant] = {}
        for seed, run in members.items():
            if not run.summary.is_file():
                log.warning("%s has not finished (no summary.json): left out", run.path)
                continue
            cfg, model, tokenizer, _ = load_for_inference(run.path, device)
            windows[variant] = scoring_window(cfg, context_length)
            corpus = repr(cfg.data)
            if corpus not in trained_on:  # a sweep's runs mostly share one corpus: looked for once
                trained_on[corpus] = trained_passages(cfg.data, text)
            if trained_on[corpus] and trained_on[corpus].found:
                trained_runs.append(f"{run.path.name} ({trained_on[corpus].describe()})")
            try:
                scored = score_text(model, tokenizer, text, stride, progress=run.path.name, window=windows[variant])
                scores[variant][seed] = scored["bpb"]
            except TokenizerError as err:  # which of the sweep's tokenizers cannot read the text
                raise TokenizerError(f"{run.path} (variant '{variant}'): {err}") from None
    if len(set(windows.values())) > 1:
        contexts = ", ".join(f"{variant} {size}" for variant, size in windows.items())
        log.warning(
            f"the variants score the text in windows of the context they trained at (data.seq_len: {contexts}): a token's "
            "loss falls with the context before it, so a Δ counts the windows' length as well as the model"
        )
    if trained_runs:
        log.warning(
            f"the text is not held out from {counted(len(trained_runs), 'runs')}: {', '.join(trained_runs)}: their scores are "
            "optimistic, and a variant that memorises more gains"
        )
    baseline = scores.get(sweep.baseline, {})
    rows, variants = [], []
    for variant, by_seed in scores.items():
        is_baseline = variant == sweep.baseline
        mean, std = mean_std(list(by_seed.values()))
        delta, low, high = (None, None, None) if is_baseline else paired_difference(by_seed, baseline)
        pairs = sorted(set(by_seed) & set(baseline))
        wins = sum(by_seed[s] < baseline[s] for s in pairs)
        rows.append(
            (
                variant + (" (baseline)" if is_baseline else ""),
                len(by_seed),
                format_number(mean, ".4f"),
                format_number(std, ".4f"),
                "–" if is_baseline else delta_cell(delta, low, high),
                "–" if is_baseline else f"{wins}/{len(pairs)}",
            )
        )
        variants.append({"variant": variant, "bpb_by_seed": by_seed, "bpb_mean": mean, "bpb_std": std, "delta_bpb": delta,
                         "delta_bpb_low": low, "delta_bpb_high": high, "wins": None if is_baseline else wins})  # fmt: skip
    return markdown_table(HEADERS, rows), {"sweep": sweep.name, "baseline": sweep.baseline, "variants": variants}
