"""Tuned baselines: a learning-rate grid per variant, run before the seeds.

    [tune]
    lr = [1e-3, 3e-3, 1e-2]      # the grid
    steps = 150                   # each tuning run's length (0: the sweep's own train.steps)

For every variant and grid value a short run trains at the variant's first seed in
<out_dir>/<sweep>/tune/<variant>_lr<value>/: an ordinary run directory, so finished tuning runs are
skipped and interrupted ones resume, like the rest of the sweep. Each variant's seeded runs then
use the value with the lowest final validation loss. The grid, every tuning loss and the choice go
into results.md and results.json, and tuning.png plots final validation loss against learning
rate, one line per variant. A variant whose tuning run diverged at a value simply does not choose it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from ..config import ConfigError, apply_overrides, config_from_dict
from ..plotting import pyplot, save_png
from ..tables import format_number, markdown_table


@dataclass
class Tune:
    lr: list[float] = field(default_factory=list)
    steps: int = 0

    def check(self) -> None:
        if any(not (math.isfinite(v) and v > 0) for v in self.lr):
            raise ConfigError(f"tune.lr must hold learning rates > 0, got {self.lr}")
        if self.steps < 0:
            raise ConfigError(f"tune.steps must be >= 0, got {self.steps}")


def tuning_jobs(sweep, jobs: list) -> list:
    """One short run per (variant, grid value), at each variant's first seed; Job.seed holds the
    grid index (results are keyed by (variant, seed))."""
    from .sweep_config import Job, first_seed_jobs

    sweep.tune.check()
    folder = Path(sweep.out_dir) / sweep.name / "tune"
    tuned = []
    for job in first_seed_jobs(jobs):
        for index, lr in enumerate(sweep.tune.lr):
            overrides = {"train.lr": lr, "name": f"{job.variant}_lr{lr:g}", "out_dir": str(folder)}
            if sweep.tune.steps:
                overrides["train.steps"] = sweep.tune.steps
            tuned.append(Job(job.variant, index, config_from_dict(apply_overrides(job.config.to_dict(), overrides))))
    return tuned


def choose(sweep, results: dict) -> dict[str, float]:
    """variant -> the grid value with the lowest final validation loss."""
    chosen = {}
    for variant in sweep.variants:
        losses = {i: results.get((variant, i), {}).get("val_loss", math.nan) for i in range(len(sweep.tune.lr))}
        finite = {i: v for i, v in losses.items() if isinstance(v, (int, float)) and math.isfinite(v)}
        if not finite:
            raise ConfigError(f"tuning: every learning rate of variant '{variant}' failed; widen tune.lr toward smaller values")
        chosen[variant] = sweep.tune.lr[min(finite, key=finite.get)]
    return chosen


def with_learning_rates(jobs: list, chosen: dict[str, float]) -> list:
    from .sweep_config import Job

    return [
        Job(job.variant, job.seed, config_from_dict(apply_overrides(job.config.to_dict(), {"train.lr": chosen[job.variant]})))
        for job in jobs
    ]


def tuning_record(sweep, results: dict, chosen: dict[str, float]) -> dict:
    """What results.json keeps: the grid, each variant's final loss per value, the choice."""
    losses = {
        variant: {f"{lr:g}": results.get((variant, i), {}).get("val_loss") for i, lr in enumerate(sweep.tune.lr)}
        for variant in sweep.variants
    }
    return {"lr_grid": sweep.tune.lr, "steps": sweep.tune.steps, "final_val_loss": losses, "chosen_lr": chosen}


def tuning_table(record: dict) -> str:
    """Final validation loss per (variant, learning rate), the chosen one starred."""
    grid = [f"{lr:g}" for lr in record["lr_grid"]]
    rows = []
    for variant, losses in record["final_val_loss"].items():
        chosen = f"{record['chosen_lr'][variant]:g}"
        rows.append([variant, *(format_number(losses[g], ".4f") + (" *" if g == chosen else "") for g in grid)])
    return markdown_table(["variant", *(f"lr {g}" for g in grid)], rows)


def plot_tuning(path: Path, record: dict) -> None:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 4))
    for variant, losses in record["final_val_loss"].items():
        points = [(lr, losses[f"{lr:g}"]) for lr in record["lr_grid"] if losses[f"{lr:g}"] is not None]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=variant)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("final validation loss (tuning run)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_png(fig, path, dpi=120)
