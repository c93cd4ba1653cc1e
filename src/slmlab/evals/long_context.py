"""Long-context evaluation: does the model use its context, and does it extrapolate?

`loss_by_position`: validation loss averaged over position buckets (0-63, 64-127, ...) of windows
of one context length; a model that uses context has falling loss along the window.
`loss_by_context_length`: mean loss of windows of each evaluation length (the same validation
text, cut into longer windows); lengths beyond a learned-position model's block are reported as
not evaluable, a RoPE model is evaluated as it is (with its configured rope_scale).
Both sample the same evenly spaced windows as training's validation (data.validation_batches).
Each loss comes with the 95% CI of its mean over the windows (t over their per-window means), and
the buckets with the change from the first to the last, paired by window: whether the loss falls
along the window by more than the choice of windows moves it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.sampling import validation_batches
from ..data.tokens import TokenSplit
from ..experiments.results import delta_cell
from ..experiments.stats import paired_difference, t_interval
from ..files import atomic_write_text, json_text
from ..model.modes import eval_mode
from ..plotting import loss_axis, pyplot, save_png
from ..runs.metrics import perplexity
from ..tables import markdown_table


@torch.no_grad()
def token_losses(
    model: nn.Module, split: TokenSplit, seq_len: int, batch_size: int, n_batches: int, device: torch.device
) -> torch.Tensor:
    """Per-token cross-entropy of validation windows of length seq_len -> (windows, seq_len),
    windows that share no token (their CIs treat them as independent), their progress shown (a
    bar on a terminal, else a log line now and then)."""
    setting, label = "the evaluation context length", f"scoring {seq_len}-token windows"
    rows = []
    with eval_mode(model):
        for x, y in validation_batches(split, seq_len, batch_size, n_batches, setting, progress=label, disjoint=True):
            logits, _ = model(x.to(device))
            rows.append(F.cross_entropy(logits.float().transpose(1, 2), y.to(device), reduction="none").cpu())
    return torch.cat(rows)


def _over_windows(per_window: np.ndarray) -> dict:
    """{"loss": the mean of per-window losses, "low", "high": its 95% CI over the windows}."""
    low, high = t_interval(per_window)
    return {"loss": float(per_window.mean()), "low": low, "high": high}


def loss_by_position(
    model, split, seq_len: int, bucket: int, batch_size: int, n_batches: int, device, reference: nn.Module | None = None
) -> tuple[list[dict], dict]:
    """(per bucket: its start and end position, and the mean loss there with its CI over the
    windows; the last bucket's loss minus the first's, paired by window: {"delta", "low", "high"},
    None where one bucket covers the window). `reference`: as loss_by_context_length's, each
    bucket's change against it paired by window."""
    losses = token_losses(model, split, seq_len, batch_size, n_batches, device).double().numpy()  # (windows, seq_len)
    means = _bucket_means(losses, bucket)
    rows = [
        {"start": s, "end": min(s + bucket, seq_len) - 1, **_over_windows(m)} for s, m in zip(range(0, seq_len, bucket), means)
    ]
    if reference is not None:
        trained = _bucket_means(token_losses(reference, split, seq_len, batch_size, n_batches, device).double().numpy(), bucket)
        for row, mine, theirs in zip(rows, means, trained):
            row.update(trained_loss=float(theirs.mean()), vs_trained=_paired(mine, theirs))
    return rows, _paired(means[-1], means[0]) if len(means) > 1 else None


def _bucket_means(losses: np.ndarray, bucket: int) -> list[np.ndarray]:
    """(windows, T) token losses -> per bucket of `bucket` positions, each window's mean loss there."""
    return [losses[:, s : s + bucket].mean(1) for s in range(0, losses.shape[1], bucket)]


def _paired(a: np.ndarray, b: np.ndarray) -> dict:
    """{"delta", "low", "high"}: mean(a − b) over the windows, paired by window, with its 95% CI."""
    delta, low, high = paired_difference(dict(enumerate(a)), dict(enumerate(b)))
    return {"delta": delta, "low": low, "high": high}


def loss_by_context_length(
    model,
    split,
    lengths: list[int],
    batch_size: int,
    n_batches: int,
    device,
    reference: nn.Module | None = None,
    trained_length: int = 0,
) -> list[dict]:
    """Per length: the mean loss of its windows with its CI over them. `reference` (the model at
    the rope_scale it trained with, where `model` is evaluated at another): also scored on the same
    windows, and the change paired by window, {"vs_trained": {"delta", "low", "high"}}: whether
    the scale helps at that length by more than the choice of windows moves it. A length past the
    learned positions is not scored, and one past `trained_length` (the run's data.seq_len; 0: none)
    is noted: it reads positions the run never trained at."""
    limit = model.positions.max_positions
    results = []
    for length in lengths:
        if limit and length > limit:
            results.append({"context_length": length, "loss": None, "note": f"beyond the {limit} learned positions"})
            continue
        per_window = token_losses(model, split, length, batch_size, n_batches, device).double().mean(1).numpy()
        scored = _over_windows(per_window)
        results.append({"context_length": length, **scored, "ppl": perplexity(scored["loss"])})
        if trained_length and length > trained_length:  # RoPE: whether a scale helps there, or not
            results[-1]["note"] = f"past the {trained_length} positions trained at"
        if reference is not None:
            trained = token_losses(reference, split, length, batch_size, n_batches, device).double().mean(1).numpy()
            results[-1].update(trained_loss=float(trained.mean()), vs_trained=_paired(per_window, trained))
    return results


def save_plot(path: Path, xs, rows: list[dict], xlabel: str, title: str) -> None:
    """Each row's loss against its x, with its 95% CI as an error bar where it has one; rows
    without a loss (a length not evaluable) are left out."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6.5, 4))
    points = [(x, r) for x, r in zip(xs, rows) if r["loss"] is not None]
    ys = [r["loss"] for _, r in points]
    spread = [[y - r.get("low", y), r.get("high", y) - y] for y, (_, r) in zip(ys, points)]
    bars = np.nan_to_num(np.array(spread, dtype=np.float64).reshape(-1, 2).T)  # no interval: no bar
    ax.errorbar([x for x, _ in points], ys, yerr=bars, marker="o", capsize=3)
    loss_axis(ax, ys)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("validation loss (95% CI over windows)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_png(fig, path, dpi=120)


def write_report(run: Path, name: str, payload: dict, xs, rows: list[dict], xlabel: str) -> list[Path]:
    """RUN/<name>.json and RUN/<name>.png; returns both paths."""
    out = run / f"{name}.json"
    atomic_write_text(out, json_text(payload, indent=2))
    save_plot(run / f"{name}.png", xs, rows, xlabel, f"{run.name}: {name.replace('_', ' ')}")
    return [out, out.with_suffix(".png")]


def long_context_report(
    run: Path,
    cfg,
    model,
    split,
    device,
    batches: int,
    by_position: bool = False,
    context_length: int = 0,
    bucket: int = 64,
    context_lengths: list[int] | None = None,
    rope_scale: float = 0.0,
    trained_model: nn.Module | None = None,
) -> tuple[str, list[Path]]:
    """Loss by position in the window and/or by evaluation context length, saved as JSON + PNG in
    the run directory (suffixed _rope<scale> when evaluated at another rope_scale); returns the
    tables and the paths as text, and the files written. `trained_model`: the model at the
    rope_scale it trained with, where `rope_scale` asks for another: each bucket's and each
    context length's loss is then paired by window with its (the `reference` of both)."""
    batch, suffix, parts, written = max(1, cfg.train.batch_size // 4), f"_rope{rope_scale:g}" if rope_scale else "", [], []
    if by_position:
        length = context_length or cfg.data.seq_len
        rows, change = loss_by_position(model, split, length, bucket, batch, batches, device, trained_model)
        written += write_report(
            run,
            f"eval_by_position{suffix}",
            {"context_length": length, "buckets": rows, "last_minus_first": change},
            [r["start"] for r in rows],
            rows,
            "position in window (bucket start)",
        )
        parts += [
            markdown_table(
                ("positions", "loss", "95% CI", *_paired_column(trained_model)), bucket_table(rows, trained_model is not None)
            ),
            f"last bucket minus first, paired by window: {delta_cell(change['delta'], change['low'], change['high'])}"
            if change
            else f"one bucket of {bucket} positions covers the {length}-token window: give --bucket below {length} to compare positions",
            f"saved: {written[-2]} and .png",
        ]
    if context_lengths:
        rows = loss_by_context_length(model, split, context_lengths, batch, batches, device, trained_model, cfg.data.seq_len)
        written += write_report(
            run,
            f"eval_context_lengths{suffix}",
            {"trained_seq_len": cfg.data.seq_len, "lengths": rows},
            [r["context_length"] for r in rows],
            rows,
            "evaluation context length",
        )
        columns = ("context length", "loss", "95% CI", "note", *_paired_column(trained_model))
        parts += [markdown_table(columns, context_table(rows, trained_model is not None)), f"saved: {written[-2]} and .png"]
    return "\n".join(parts), written


def _interval(row: dict) -> str:
    low, high = row.get("low"), row.get("high")
    return f"[{low:.4f}, {high:.4f}]" if low is not None and math.isfinite(low) and math.isfinite(high) else "–"


def _paired_column(trained_model: nn.Module | None) -> tuple[str, ...]:
    """The heading of the change against the trained rope_scale, where it is measured."""
    if trained_model is None:
        return ()
    return (f"Δ loss vs rope_scale {trained_model.cfg.rope_scale:g} (as trained), paired by window",)


def _with_change(table: list[tuple], rows: list[dict], paired: bool) -> list[tuple]:
    """`paired`: each row with its change against the trained rope_scale ("–" where none)."""
    if not paired:
        return table
    changes = [r.get("vs_trained") for r in rows]
    return [(*row, delta_cell(c["delta"], c["low"], c["high"]) if c else "–") for row, c in zip(table, changes)]


def bucket_table(rows: list[dict], paired: bool = False) -> list[tuple]:
    return _with_change([(f"{r['start']}-{r['end']}", f"{r['loss']:.4f}", _interval(r)) for r in rows], rows, paired)


def context_table(rows: list[dict], paired: bool = False) -> list[tuple]:
    table = [
        (r["context_length"], "–" if r["loss"] is None else f"{r['loss']:.4f}", _interval(r), r.get("note", "")) for r in rows
    ]
    return _with_change(table, rows, paired)
