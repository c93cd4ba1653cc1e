"""A sweep's results: the paired table (Markdown, JSON, CSV) and validation curves (curves.png).

Columns: variant, runs, mean validation ppl, std, mean validation bits per byte and the paired
difference in bits per byte with its 95% CI, Δ% vs baseline (of the means over the seeds both
finished), seed wins vs
baseline (paired by seed), failures (runs aborted for non-finite loss, and skipped non-finite
steps), the paired 95% CI of Δ%, the paired t-test p-value and its Holm–Bonferroni adjustment
over the variants, the sign-test p-value, the seeds a paired t-test would need to detect the
observed Δ% at 80% power (from the seed-to-seed spread), and the cost:
tokens/s (the median over seeds of each run's median logging window: a speed is never one
measurement, and a run slowed by another job on the machine moves it little), peak memory and
parameter count (means over seeds). Above the table, a note for each caveat of the comparison
(caveats.py lists them; a variant with another tokenizer gets "–" in the perplexity columns, and
the figures are then drawn in bits per byte). A sweep with `[lm_eval] tasks`
adds, per task metric, its mean and the paired difference from the baseline with its 95% CI.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from pathlib import Path

from ..errors import RunFileError
from ..files import atomic_write_text, json_text, read_json
from ..plotting import loss_axis, pyplot, save_png
from ..runs.run_dir import RunDir, phase_runs, with_token_offsets
from ..tables import counted, format_number, human, markdown_table
from .budget import BUDGET_TIMINGS, flops_per_token, timing_machines
from .caveats import caveats, other_units, speed_caveat
from .stats import holm_adjusted, mean_std, paired_comparison, paired_difference, seeds_needed
from .sweep_config import Job, SweepConfig, first_seed_jobs
from .tuning import plot_tuning, tuned_names, tuning_table

HEADERS = (
    "variant",
    "runs",
    "val ppl",
    "std",
    "val bpb",
    "Δ bpb [95% CI]",
    "Δ% vs base",
    "wins",
    "failures",
    "95% CI of Δ%",
    "t-test p",
    "Holm p",
    "sign p",
    "seeds for 80%",
    "steps",
    "tokens",
    "train FLOPs",
    "tokens/s",
    "peak mem",
    "params",
)


def finished_runs(results: dict[tuple[str, int], dict], variant: str) -> list[dict]:
    """The summaries of the variant's runs that finished (a failed run is {"failed": why})."""
    return [r for (v, _), r in results.items() if v == variant and "failed" not in r]


def trained_parts(summary: dict) -> list[dict]:
    """What a run trained, part by part: a curriculum's phases (its summary is the last phase's,
    with every phase's under "phases"), else the run itself."""
    return summary.get("phases") or [summary]


def training_rate(summary: dict) -> float:
    """A run's tokens/s: a curriculum's over all its phases, each at its own median rate (its
    summary's tokens/s is the last phase's alone)."""
    parts = trained_parts(summary)
    if len(parts) == 1:
        return summary["tokens_per_s"]
    try:
        return sum(p["tokens"] for p in parts) / sum(p["tokens"] / p["tokens_per_s"] for p in parts)
    except (KeyError, TypeError, ZeroDivisionError):
        return math.nan


def train_flops(config, summaries: list[dict]) -> float:
    """The mean over `summaries` (finished runs of `config`) of the tokens trained times the
    model's counted FLOPs per token, phase by phase for a curriculum (each at its own seq_len)."""
    per_token = [flops_per_token(phase) for phase in config.phase_configs()]
    totals = [sum(part.get("tokens", math.nan) * f for part, f in zip(trained_parts(s), per_token)) for s in summaries]
    return mean_std(totals)[0]


def summarize(
    sweep: SweepConfig, results: dict[tuple[str, int], dict], other_tokenizers: frozenset[str] = frozenset()
) -> list[dict]:
    """One record per variant with every column of the results table; the variants in
    `other_tokenizers` (a tokenizer other than the baseline's: caveats.other_units) get no statistics
    on perplexity, which counts other units for them (NaN, wins None)."""
    ppl = {
        v: {s: r["val_ppl"] for (v2, s), r in results.items() if v2 == v and _measured(r.get("val_ppl"))} for v in sweep.variants
    }
    bpb = {
        v: {s: r["val_bpb"] for (v2, s), r in results.items() if v2 == v and _finite(r.get("val_bpb"))} for v in sweep.variants
    }
    records = []
    for variant in sweep.variants:
        runs = [r for (v, _), r in results.items() if v == variant]
        done = finished_runs(results, variant)
        mean, std = mean_std(list(ppl[variant].values()))
        comparison = paired_comparison(ppl[variant], ppl[sweep.baseline]).to_dict()
        if variant in other_tokenizers:
            comparison |= {key: math.nan for key in ("delta_pct", "ci_low", "ci_high", "t_p", "sign_p", "sd")} | {"wins": None}
        records.append(
            {
                "variant": variant,
                "runs": len(done),
                "val_ppl_mean": mean,
                "val_ppl_std": std,
                "val_bpb_mean": mean_std(list(bpb[variant].values()))[0],
                **dict(
                    zip(("delta_bpb", "delta_bpb_low", "delta_bpb_high"), paired_difference(bpb[variant], bpb[sweep.baseline]))
                ),
                "failed_runs": len(runs) - len(done),
                "nan_skips": sum(part.get("nan_skips", 0) for r in done for part in trained_parts(r)),
                "is_baseline": variant == sweep.baseline,
                **comparison,
                "steps": mean_std([sum(part["step"] for part in trained_parts(r)) for r in done])[0],
                "tokens": mean_std([sum(part.get("tokens", math.nan) for part in trained_parts(r)) for r in done])[0],
                "tokens_per_s": statistics.median([training_rate(r) for r in done]) if done else math.nan,
                "peak_memory_bytes": mean_std([max(part["peak_memory_bytes"] for part in trained_parts(r)) for r in done])[0],
                "params": done[0]["params"] if done else None,  # unknown: no run finished
                "val_ppl_by_seed": ppl[variant],
            }
        )
    for record in records:
        record["lm_eval"] = harness_columns(sweep, results, record["variant"])
    adjusted = holm_adjusted({r["variant"]: r["t_p"] for r in records if not r["is_baseline"]})
    for record in records:
        record["holm_p"] = adjusted.get(record["variant"], math.nan)
        record["seeds_for_80pct_power"] = seeds_needed(
            (record["ci_low"] + record["ci_high"]) / 2, record["sd"]
        )  # effect: the mean paired Δ%
    return records


def harness_scores(results: dict, variant: str) -> dict[str, dict[int, float]]:
    """{"task metric": {seed: value}} of a variant's lm-eval scores (sweep [lm_eval])."""
    scores: dict[str, dict[int, float]] = {}
    for (v, seed), result in results.items():
        if v != variant:
            continue
        for task, metrics in (result.get("lm_eval") or {}).items():
            for metric, value in metrics.items():
                scores.setdefault(f"{task} {metric}", {})[seed] = value
    return scores


def harness_columns(sweep: SweepConfig, results: dict, variant: str) -> dict[str, dict]:
    """{"task metric": {mean, delta, low, high}}: the variant's mean score and its paired
    difference from the baseline (by seed) with the 95% CI."""
    own, base = harness_scores(results, variant), harness_scores(results, sweep.baseline)
    columns = {}
    for name, by_seed in own.items():
        delta, low, high = paired_difference(by_seed, base.get(name, {}))
        columns[name] = {"mean": mean_std(list(by_seed.values()))[0], "delta": delta, "low": low, "high": high}
    return columns


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _measured(value) -> bool:
    """A finished run's perplexity: a number, inf included (it overflowed: the run diverged, and
    leaving its seed out would flatter its variant); a failed run has none."""
    return isinstance(value, (int, float)) and not math.isnan(value)


def results_table(records: list[dict]) -> str:
    rows = []
    for r in records:
        base = r["is_baseline"]
        rows.append(
            (
                r["variant"] + (" (baseline)" if base else ""),
                r["runs"],
                format_number(r["val_ppl_mean"], ".3f"),
                format_number(r["val_ppl_std"], ".3f"),
                format_number(r["val_bpb_mean"], ".4f"),
                "–" if base else delta_cell(r["delta_bpb"], r["delta_bpb_low"], r["delta_bpb_high"]),
                "–" if base else format_number(r["delta_pct"], "+.2f", "%"),
                "–" if base or r["wins"] is None else f"{r['wins']}/{r['n_pairs']}",
                f"{counted(r['failed_runs'], 'runs')}, {counted(r['nan_skips'], 'steps')}",
                "–"
                if base or r["wins"] is None
                else f"[{format_number(r['ci_low'], '+.2f')}, {format_number(r['ci_high'], '+.2f')}]",
                "–" if base else format_number(r["t_p"], ".3g"),
                "–" if base else format_number(r["holm_p"], ".3g"),
                "–" if base else format_number(r["sign_p"], ".3g"),
                "–" if base else format_number(r["seeds_for_80pct_power"], ".0f"),
                format_number(r["steps"], ".0f"),
                human(r["tokens"]) if _finite(r["tokens"]) else "–",
                human(r["train_flops"]) if _finite(r["train_flops"]) else "–",
                f"{r['tokens_per_s']:,.0f}" if math.isfinite(r["tokens_per_s"]) else "–",
                human(r["peak_memory_bytes"], "B") if math.isfinite(r["peak_memory_bytes"]) else "–",
                human(r["params"]) if r["params"] is not None else "–",
            )
        )
    names = list(dict.fromkeys(name for r in records for name in r.get("lm_eval", {})))
    if names:  # lm-eval scores: each metric's mean and its paired Δ vs the baseline
        headers = [*HEADERS, *(h for name in names for h in (name, f"Δ {name} [95% CI]"))]
        rows = [(*row, *harness_cells(r, names)) for row, r in zip(rows, records)]
        return markdown_table(headers, rows)
    return markdown_table(HEADERS, rows)


def delta_cell(delta: float, low: float, high: float) -> str:
    """A paired difference and its 95% CI as a table shows it: "-0.0264 [-0.0504, -0.0023]"."""
    return f"{format_number(delta, '+.4f')} [{format_number(low, '+.4f')}, {format_number(high, '+.4f')}]"


def harness_cells(record: dict, names: list[str]) -> list[str]:
    cells = []
    for name in names:
        column = record.get("lm_eval", {}).get(name)
        if column is None:
            cells += ["–", "–"]
            continue
        cells.append(format_number(column["mean"], ".4f"))
        cells.append("–" if record["is_baseline"] else delta_cell(column["delta"], column["low"], column["high"]))
    return cells


def write_results(sweep_dir: Path, sweep: SweepConfig, jobs: list[Job], results: dict, tuning: dict | None = None) -> str:
    """Write results.md/.json/.csv and curves.png (and with tuning, its table and tuning.png)
    into the sweep directory; return the table, under its notes (caveats.caveats) where it has any."""
    configs = {job.variant: job.config for job in first_seed_jobs(jobs)}
    apart = frozenset(other_units(configs, sweep.baseline))  # variants whose perplexity counts other units
    records = summarize(sweep, results, apart)
    for record in records:  # training FLOPs: tokens x the model's counted FLOPs per token
        done = finished_runs(results, record["variant"])
        record["train_flops"] = train_flops(configs[record["variant"]], done) if record["runs"] else math.nan
    table = results_table(records)
    held = sweep.budget.held()
    budget = (
        f"Equal compute: budget {held[0]} = {held[1]:g} held by every variant (steps = budget / cost per step)."
        if held
        else "Equal steps: no [budget]; a variant that costs more per step also spent more compute."
        if len({sum(phase.train.steps for phase in cfg.phase_configs()) for cfg in configs.values()}) == 1
        else "No [budget], and the variants train their own numbers of steps (the steps column)."
    )
    if held and held[0] == "seconds":
        budget += f" Step times measured on {timing_machines(sweep_dir / BUDGET_TIMINGS)} ({BUDGET_TIMINGS})."
    notes_given = caveats(configs, sweep.baseline, held is not None) + speed_caveat(measured_settings(jobs, results))
    notes = "".join(f"- Note: {note}.\n" for note in notes_given) + ("\n" if notes_given else "")
    atomic_write_text(
        sweep_dir / "results.md",
        f"# Sweep {sweep.name}\n\nseeds {sweep.seeds}; Δ = variant vs {sweep.baseline}, "
        f"paired by seed; CI and p-values from the per-seed Δ%. {budget}\n\n{notes}{table}\n"
        + (
            f"\n## {tuned_names(tuning)}, tuned per variant ({tuning_note(tuning)})\n\n{tuning_table(tuning)}\n" if tuning else ""
        ),
    )
    if tuning:
        plot_tuning(sweep_dir / "tuning.png", tuning, per_byte=bool(apart))
    atomic_write_text(
        sweep_dir / "results.json",
        json_text(
            {
                "sweep": sweep.name,
                "baseline": sweep.baseline,
                "seeds": sweep.seeds,
                "notes": notes_given,
                "variants": records,
                "tuning": tuning,
            },
            indent=2,
            default=str,
        ),
    )
    csv_text = io.StringIO(newline="")
    rows = [{**r, **{f"{name} {k}": v for name, column in r["lm_eval"].items() for k, v in column.items()}} for r in records]
    fields = list(dict.fromkeys(k for row in rows for k in row if k not in ("val_ppl_by_seed", "lm_eval")))
    writer = csv.DictWriter(csv_text, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(sweep_dir / "results.csv", csv_text.getvalue())
    plot_curves(sweep_dir / "curves.png", sweep, jobs, per_byte=bool(apart))
    return notes + table


def measured_settings(jobs: list[Job], results: dict) -> list[tuple[str, int]]:
    """(train.device, train.threads) each finished run recorded in its config.json: what its
    tokens/s was measured with (read as JSON: a plugin run's config needs no plugin to say it)."""
    settings = []
    for job in jobs:
        if "failed" in results.get((job.variant, job.seed), {"failed": ""}):
            continue
        train = read_json(job.run.config, "run config", RunFileError, "restore it from a copy of the run").get("train")
        train = train if isinstance(train, dict) else {}
        settings.append((str(train.get("device", "auto")), train.get("threads", 0)))
    return settings


def tuning_note(tuning: dict) -> str:
    length = f"{tuning['steps']}-step" if tuning["steps"] else "full-length"
    return f"final validation loss of one {length} run per grid point at seed {tuning['seed']}, none of the compared seeds; * = chosen, used by every seed"


def plot_curves(path: Path, sweep: SweepConfig, jobs: list[Job], per_byte: bool = False) -> None:
    """Validation loss vs tokens: mean ± std band over seeds, one line per variant; in bits per
    byte where `per_byte` (variants with other tokenizers, whose losses per token do not compare)."""
    plt = pyplot()
    import numpy as np

    metric, label = ("val_bpb", "validation bits per byte") if per_byte else ("val_loss", "validation loss")

    fig, ax = plt.subplots(figsize=(7, 4.5))
    drawn = []
    for variant in sweep.variants:
        curves = []
        for job in jobs:
            if job.variant == variant:
                runs = phase_runs(job.run.path, job.config, begun=True) or [RunDir(job.run.path)]  # a curriculum's phases
                points = [
                    (offset + r["tokens"], r[metric])
                    for _, offset, records in with_token_offsets(runs)
                    for r in records
                    if r.get(metric) is not None
                ]
                if points:
                    curves.append(points)
        if not curves:
            continue
        length = min(len(c) for c in curves)
        tokens = np.array([p[0] for p in curves[0][:length]])
        losses = np.array([[p[1] for p in c[:length]] for c in curves])
        mean, std = losses.mean(0), losses.std(0)
        ax.plot(tokens, mean, label=f"{variant} (n={len(curves)})")
        ax.fill_between(tokens, mean - std, mean + std, alpha=0.2)
        drawn += mean.tolist()
    loss_axis(ax, drawn)
    ax.set_xlabel("training tokens")
    ax.set_ylabel(label)
    ax.set_title(f"sweep {sweep.name}: mean ± std over seeds")
    if drawn:  # else no run has logged an evaluation (each failed before its first)
        ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_png(fig, path, dpi=120)
