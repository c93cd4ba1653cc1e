"""Surgical ablations of a trained run: every applicable intervention, one table.

For each intervention (model/interventions.py, registered by each variant) the validation perplexity on the same fixed
sample is compared with the unmodified model's, with the 95% CI of the change from the batches'
paired differences (experiments/stats.py's perplexity_change): a change inside it is within what
the choice of windows moves. The paired t-test's p of each change is Holm-adjusted over all the
interventions of the table as one family: of 144 head ablations, some unadjusted CIs miss zero by
chance alone. Each variant's registered ablation summary adds what it reads from
its rows (SMAT: the share of S's effect through the attention bias vs the gate).
Results are printed and saved as ablations.md and ablations.json in the run directory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import ConfigError
from ..data.tokens import prepare_tokens
from ..experiments.stats import bootstrap_intervals, holm_adjusted, percent_interval, perplexity_change
from ..files import atomic_write_text, json_text
from ..model.interventions import applicable, head_ablations, intervene, layer_ablations
from ..phase_progress import PhaseProgress
from ..registry import ABLATION_SUMMARIES
from ..runs.derived import record_derived, weights_identity
from ..runs.metrics import perplexity
from ..runs.run_dir import check_trained_streams, load_run
from ..tables import command_line, format_number, markdown_table
from ..training.runtime import resolve_device
from ..training.validation import evaluate_by_batch


class NothingToAblate(ConfigError):
    """A run whose model declares no interventions of the kinds asked for."""


def _hint(model) -> str:
    """What `ablate` could do instead, for a model that declares no interventions and has none of
    the kinds asked for: the generic kinds this architecture has (TapeTransformer: heads only)."""
    kinds = {
        "--layers": ("to zero each layer's attention and MLP output in turn", layer_ablations(model)),
        "--heads": ("to zero each attention head in turn", head_ablations(model)),
    }
    offered = [f"{flag} {what}" for flag, (what, found) in kinds.items() if found]
    return "add " + ", or ".join(offered) if offered else "this architecture has no attention, MLP or head hook points either"


def ablate(
    run_path: str | Path, n_batches: int = 20, device: str = "auto", layers: bool = False, heads: bool = False
) -> tuple[str, dict]:
    """`layers`: also zero each layer's attention and MLP output in turn (layer_ablations);
    `heads`: also zero each attention head's output in turn (head_ablations)."""
    device = resolve_device(device)
    weights = weights_identity(run_path)
    cfg, model, tokenizer = load_run(run_path, device)
    interventions = applicable(model) + (layer_ablations(model) if layers else []) + (head_ablations(model) if heads else [])
    if not interventions:
        raise NothingToAblate(
            f"{run_path}: this model declares no interventions (its variant has no hook points to ablate); {_hint(model)}"
        )
    _, data = prepare_tokens(cfg.data, tokenizer)
    check_trained_streams(run_path, cfg, data.manifest["sha256"])

    def scored() -> tuple[float, list[float]]:
        return evaluate_by_batch(model, data.val, cfg.data.seq_len, cfg.train.batch_size, n_batches, device, cfg.train.dtype)

    with PhaseProgress(f"ablating {run_path}", len(interventions) + 1, "evaluations") as progress:
        reference, reference_batches = scored()
        progress.update()
        rows = {"unmodified": {"description": "the trained model", "val_ppl": perplexity(reference), "delta_pct": 0.0}}
        losses = {"unmodified": reference_batches}  # each row's per-batch mean losses, paired by batch
        for intervention in interventions:
            with intervene(model, intervention):
                loss, batches = scored()
            progress.update()
            label = intervention.name if intervention.name not in rows else f"{intervention.name} ({intervention.owner.__name__})"
            rows[label] = {"description": intervention.description, "val_ppl": perplexity(loss),
                           **perplexity_change(loss - reference, batches, reference_batches)}  # fmt: skip
            losses[label] = batches
    for name, p in holm_adjusted({name: row["p"] for name, row in rows.items() if name != "unmodified"}).items():
        rows[name]["holm_p"] = p  # one family: with many interventions (--heads), some CIs miss 0 by chance alone
    result = {"run": str(run_path), "weights_sha256": weights, "n_batches": n_batches, "layers": layers, "heads": heads}
    result.update(interventions=rows, batch_losses=losses)
    table = markdown_table(
        ("intervention", "what it changes", "val ppl", "Δ% vs unmodified", "95% CI of Δ%", "t-test p", "Holm p"),
        [
            (
                n,
                r["description"],
                f"{r['val_ppl']:.3f}",
                format_number(r["delta_pct"], "+.2f", "%"),
                percent_interval(r),
                format_number(r.get("p"), ".3g"),
                format_number(r.get("holm_p"), ".3g"),
            )
            for n, r in rows.items()
        ],
    )
    for summarize in ABLATION_SUMMARIES.values():  # what a variant reads from its own rows (SMAT: the bias/gate split)
        summary = summarize(rows)
        if summary is not None:
            text, values = summary
            intervals = summary_intervals(summarize, rows, losses)
            table += f"\n\n{text}{_intervals_text(figures(values), intervals)}"
            result.update(values)
            result.setdefault("summary_intervals", {}).update(intervals)
    run = Path(run_path)
    atomic_write_text(run / "ablations.json", json_text(result, indent=2))
    atomic_write_text(run / "ablations.md", f"# Surgical ablations of {run.name}\n\n{table}\n")
    record_derived(
        run,
        [run / "ablations.json", run / "ablations.md"],
        command_line("slmlab", "ablate", run, *(["--layers"] if layers else []), *(["--heads"] if heads else [])),
        weights,
    )
    return table, result


def figures(values: dict, prefix: str = "") -> dict[str, float]:
    """A summary's numbers, nested dicts flattened to dotted names ({"s_effect_share.gate": 0.26})."""
    flat = {}
    for name, value in values.items():
        if isinstance(value, dict):
            flat.update(figures(value, f"{prefix}{name}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[f"{prefix}{name}"] = float(value)
    return flat


def summary_intervals(summarize, rows: dict, losses: dict[str, list[float]]) -> dict[str, tuple[float, float]]:
    """95% bootstrap intervals of an ablation summary's figures over the validation batches: each
    draw resamples the batches (the same ones for every row, so the comparison stays paired) and
    reads the summary again from the Δ% they give, 100 (exp(mean loss − the unmodified model's) − 1)."""
    reference = np.asarray(losses["unmodified"], dtype=np.float64)
    per_row = {name: np.asarray(batches, dtype=np.float64) for name, batches in losses.items()}

    def statistic(drawn: np.ndarray) -> dict[str, float]:
        base = reference[drawn].mean()
        resampled = {
            name: {**row, "delta_pct": float(100.0 * np.expm1(per_row[name][drawn].mean() - base))} for name, row in rows.items()
        }
        summary = summarize(resampled)
        return figures(summary[1]) if summary is not None else {}

    with np.errstate(over="ignore", invalid="ignore"):  # a change past float64's range is inf, as in perplexity_change
        return bootstrap_intervals(statistic, len(reference))


def _intervals_text(points: dict[str, float], intervals: dict[str, tuple[float, float]]) -> str:
    """The summary's figures with their intervals, as a line under its text ("" without any)."""
    shown = [f"{name} {points[name]:.3g} [{low:.3g}, {high:.3g}]" for name, (low, high) in intervals.items() if name in points]
    return f"\n\n95% intervals over the validation batches (bootstrap): {', '.join(shown)}" if shown else ""
