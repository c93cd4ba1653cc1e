"""`slmlab ablate SWEEP`: every finished run of a sweep ablated (ablate.py: each run's own table,
with its CI over that run's validation batches), then each variant's interventions over its
seeds: the mean Δ% with its 95% CI over the seeds (t, n − 1 degrees of freedom), the seeds the
intervention hurt, the t-test's p over the seeds (Holm-adjusted over the variant's
interventions), and what each variant's registered ablation summary reads from those means and
from each seed's own ablation (SMAT: the share of S's effect through the bias vs the gate). One
run's CI says how sure that run's figure is; the seeds' says whether the component matters to the
models the variant trains, the unit the sweep's own verdict uses.

Saved as SWEEP/ablations.md and ablations.json, which records each run's weights (the report
card flags the table once a run has other weights)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..experiments.stats import holm_adjusted, percent_interval, t_interval, t_test_p
from ..experiments.sweep_dir import read_sweep_dir
from ..files import atomic_write_text, json_text
from ..registry import ABLATION_SUMMARIES
from ..tables import counted, format_number, markdown_table
from .ablate import NothingToAblate, ablate, figures

log = logging.getLogger("slmlab")
HEADERS = (
    "intervention",
    "what it changes",
    "seeds",
    "Δ% vs unmodified (mean)",
    "95% CI over seeds",
    "seeds it hurt",
    "t-test p",
    "Holm p",
)


def ablate_sweep(path: Path, n_batches: int, device: str, layers: bool, heads: bool) -> tuple[str, dict]:
    """(the Markdown tables, one per variant with interventions; the figures, as saved)."""
    sweep = read_sweep_dir(path)
    variants, weights, sections, summaries, summaries_by_seed = {}, {}, [], {}, {}
    for variant, members in sweep.by_variant.items():
        by_seed: dict[str, dict] = {}  # intervention -> {"description", "delta_pct": {seed: Δ%}}
        for seed, run in members.items():
            if not run.summary.is_file():
                log.warning("%s has not finished (no summary.json): left out", run.path)
                continue
            try:
                _, result = ablate(run.path, n_batches, device, layers, heads)
            except NothingToAblate:
                break  # its seeds share its architecture: none of them has any
            weights[run.path.name] = result["weights_sha256"]  # read before they were loaded
            for name, row in result["interventions"].items():
                if name != "unmodified":
                    entry = by_seed.setdefault(name, {"description": row["description"], "delta_pct": {}})
                    entry["delta_pct"][seed] = row["delta_pct"]
        if by_seed:
            variants[variant] = {name: _over_seeds(entry) for name, entry in by_seed.items()}
            for name, p in holm_adjusted({name: row["p"] for name, row in variants[variant].items()}).items():
                variants[variant][name]["holm_p"] = p  # the variant's interventions as one family
            table = markdown_table(HEADERS, [_row(n, r) for n, r in variants[variant].items()])
            texts = _summaries(variants[variant], summaries, summaries_by_seed, variant)
            sections.append(f"**{variant}**\n\n{table}" + "".join(f"\n\n{text}" for text in texts))
    if not variants:
        raise ConfigError(f"{path}: no finished run of this sweep declares interventions; add --layers or --heads")
    result = {
        "sweep": sweep.name,
        "n_batches": n_batches,
        "layers": layers,
        "heads": heads,
        "variants": variants,
        "summaries": summaries,
        "summaries_by_seed": summaries_by_seed,
        "weights": weights,
    }
    tables = "\n\n".join(sections)
    atomic_write_text(path / "ablations.json", json_text(result, indent=2))
    atomic_write_text(path / "ablations.md", f"# Surgical ablations of {sweep.name}, over seeds\n\n{tables}\n")
    return tables, result


def _summaries(rows: dict, summaries: dict, by_seed: dict, variant: str) -> list[str]:
    """What each registered ablation summary reads from a variant's mean Δ% over seeds (SMAT: the
    share of S's effect through the bias vs the gate), its figures kept in `summaries`, and what it
    reads from each seed's own Δ% (`by_seed`, {seed: figures}): how far the seeds agree."""
    texts = []
    means = {name: {**row, "delta_pct": row["mean"]} for name, row in rows.items()}
    seeds = list(dict.fromkeys(seed for row in rows.values() for seed in row["delta_pct"]))
    for summarize in ABLATION_SUMMARIES.values():
        summary = summarize(means)
        if summary is None:
            continue
        summaries.setdefault(variant, {}).update(summary[1])
        per_seed = {}
        for seed in seeds:
            own = summarize(
                {name: {**row, "delta_pct": row["delta_pct"][seed]} for name, row in rows.items() if seed in row["delta_pct"]}
            )
            if own is not None:
                per_seed[seed] = figures(own[1])
                by_seed.setdefault(variant, {}).setdefault(seed, {}).update(per_seed[seed])
        names = list(dict.fromkeys(name for values in per_seed.values() for name in values))
        spread = "; ".join(
            f"{name} {', '.join(f'{values.get(name, math.nan):.3g}' for values in per_seed.values())}" for name in names
        )
        texts.append(
            f"From the means over seeds: {summary[0]}"
            + (f"\n\nEach seed's own ({', '.join(map(str, per_seed))}): {spread}" if spread else "")
        )
    return texts


def _over_seeds(entry: dict) -> dict:
    """An intervention's Δ% by seed -> with their mean, its 95% CI over the seeds and the t-test's
    p (NaN where a Δ is not finite: a diverged run) and how many seeds it hurt (Δ > 0)."""
    values = np.array(list(entry["delta_pct"].values()), dtype=np.float64)
    low, high = t_interval(values) if np.isfinite(values).all() else (float("nan"), float("nan"))
    hurt = int((values > 0).sum())
    return {
        **entry,
        "mean": float(values.mean()),
        "delta_pct_low": low,
        "delta_pct_high": high,
        "hurt": hurt,
        "p": t_test_p(values),
    }


def _row(name: str, r: dict) -> tuple:
    seeds = len(r["delta_pct"])
    hurt = f"{r['hurt']}/{counted(seeds, 'seeds')}"
    p_values = (format_number(r["p"], ".3g"), format_number(r["holm_p"], ".3g"))
    return name, r["description"], seeds, format_number(r["mean"], "+.2f", "%"), percent_interval(r), hurt, *p_values
