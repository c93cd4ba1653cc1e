"""Tuned baselines: a grid of learning rates (and, optionally, warmups and weight decays) per
variant, run before the seeds.

    [tune]
    lr = [1e-3, 3e-3, 1e-2]      # the grid: every combination of the lists given
    warmup_steps = [10, 50]       # optional
    weight_decay = [0.0, 0.1]     # optional
    steps = 150                   # each tuning run's length (0: the sweep's own train.steps)
    seed = 1000                   # the tuning runs' seed (default), none of the sweep's seeds

For every variant and grid point a short run trains at `seed` in
<out_dir>/<sweep>/tune/<variant>_lr<value>[_wu<value>][_wd<value>]/: an ordinary run directory,
so finished tuning runs are skipped and interrupted ones resume, like the rest of the sweep. Each
variant's seeded runs then use the point with the lowest final validation loss. The grid, every
tuning loss and the choice go into results.md and results.json, and tuning.png plots final
validation loss against the first tuned setting, one line per variant (and value of the others).
A variant whose tuning run diverged at a point simply does not choose it.

The tuning seed is none of the compared seeds: the chosen point is the best of several noisy runs,
and tuned at a compared seed (with `steps = 0` the chosen tuning run *is* that seed's run), that
luck would sit in the comparison, in favour of whichever variant drew more of it.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..config import ConfigError, apply_overrides, config_from_dict
from ..config.checks import check_seed
from ..plotting import loss_axis, pyplot, save_png
from ..tables import format_number, markdown_table

TUNABLE = {  # [tune] list -> (the train setting it sets, its short name in run folders and tables)
    "lr": ("train.lr", "lr"),
    "warmup_steps": ("train.warmup_steps", "wu"),
    "weight_decay": ("train.weight_decay", "wd"),
}

Point = dict[str, float]  # one grid point: {"train.lr": 0.003, "train.weight_decay": 0.1}


@dataclass
class Tune:
    """`[tune]` in a sweep: a grid of training settings run per variant before the seeds, each
    variant's runs then taking the point of lowest validation loss."""

    lr: list[float] = field(default_factory=list)  # learning rates to try per variant (the grid: every combination of the lists)
    warmup_steps: list[int] = field(default_factory=list)  # warm-up lengths to try
    weight_decay: list[float] = field(default_factory=list)  # weight decays to try
    steps: int = 0  # each tuning run's length (0: the sweep's train.steps)
    seed: int = 1000  # the tuning runs' train.seed: held out from the comparison (the sweep refuses one of its seeds)

    def check(self) -> None:
        if any(not (math.isfinite(v) and v > 0) for v in self.lr):
            raise ConfigError(f"tune.lr must hold learning rates > 0, got {self.lr}")
        if any(v < 0 for v in self.warmup_steps):
            raise ConfigError(f"tune.warmup_steps must hold step counts >= 0, got {self.warmup_steps}")
        if any(not (math.isfinite(v) and v >= 0) for v in self.weight_decay):
            raise ConfigError(f"tune.weight_decay must hold weight decays >= 0, got {self.weight_decay}")
        for name in TUNABLE:
            values = getattr(self, name)
            if len(set(values)) != len(values):
                raise ConfigError(f"tune.{name} lists a value twice ({values}): each grid point is one run, list it once")
        if self.steps < 0:
            raise ConfigError(f"tune.steps must be >= 0, got {self.steps}")
        check_seed("tune.seed", self.seed)

    def axes(self) -> dict[str, list]:
        """The train settings tuned (in TUNABLE's order) -> their values; {} without a grid."""
        return {TUNABLE[name][0]: getattr(self, name) for name in TUNABLE if getattr(self, name)}

    def grid(self) -> list[Point]:
        """Every combination of the values listed (the first list varies slowest); [] without one."""
        return grid_points(self.axes())


def grid_points(axes: dict[str, list]) -> list[Point]:
    return [dict(zip(axes, values)) for values in itertools.product(*axes.values())] if axes else []


SHORT = {setting: short for setting, short in TUNABLE.values()}


def point_label(point: Point) -> str:
    """'lr0.003_wd0.1': a grid point as run folders and results.json name it."""
    return "_".join(f"{SHORT[setting]}{value:g}" for setting, value in point.items())


def tuning_jobs(sweep, jobs: list) -> list:
    """One short run per (variant, grid point), from each variant's first-seed config at
    tune.seed; Job.seed holds the point's index in the grid (results are keyed by (variant, seed))."""
    from .sweep_config import Job, first_seed_jobs

    sweep.tune.check()
    folder = Path(sweep.out_dir) / sweep.name / "tune"
    tuned = []
    for job in first_seed_jobs(jobs):
        for index, point in enumerate(sweep.tune.grid()):
            overrides = {
                **point,
                "name": f"{job.variant}_{point_label(point)}",
                "out_dir": str(folder),
                "train.seed": sweep.tune.seed,
            }
            if sweep.tune.steps:
                overrides["train.steps"] = sweep.tune.steps
            try:
                config = config_from_dict(apply_overrides(job.config.to_dict(), overrides))
            except ConfigError as err:  # it named train.lr or train.steps, which the user set only through [tune]
                raise ConfigError(f"[tune] grid point {point_label(point)} of variant '{job.variant}': {err}") from None
            tuned.append(Job(job.variant, index, config))
    return tuned


def choose(sweep, results: dict) -> dict[str, Point]:
    """variant -> the grid point with the lowest final validation loss."""
    grid, chosen = sweep.tune.grid(), {}
    for variant in sweep.variants:
        losses = {i: results.get((variant, i), {}).get("val_loss", math.nan) for i in range(len(grid))}
        finite = {i: v for i, v in losses.items() if isinstance(v, (int, float)) and math.isfinite(v)}
        if not finite:
            raise ConfigError(
                f"tuning: every grid point of variant '{variant}' failed; widen the [tune] grid toward smaller learning rates"
            )
        chosen[variant] = grid[min(finite, key=finite.get)]
    return chosen


def with_tuned_settings(jobs: list, chosen: dict[str, Point]) -> list:
    from .sweep_config import Job

    return [
        Job(job.variant, job.seed, config_from_dict(apply_overrides(job.config.to_dict(), chosen[job.variant]))) for job in jobs
    ]


def tuning_record(sweep, results: dict, chosen: dict[str, Point]) -> dict:
    """What results.json keeps: the grid, the tuning runs' steps and seed, each variant's final
    loss per point (keyed by point_label), the choice; with a learning-rate grid also `lr_grid` and `chosen_lr`."""
    grid = sweep.tune.grid()

    def final(key: str) -> dict:
        return {
            variant: {point_label(point): results.get((variant, i), {}).get(key) for i, point in enumerate(grid)}
            for variant in sweep.variants
        }

    record = {
        "grid": sweep.tune.axes(),
        "steps": sweep.tune.steps,
        "seed": sweep.tune.seed,
        "final_val_loss": final("val_loss"),
        "final_val_bpb": final("val_bpb"),
        "chosen": chosen,
    }
    if sweep.tune.lr:
        record.update(lr_grid=sweep.tune.lr, chosen_lr={variant: point["train.lr"] for variant, point in chosen.items()})
    return record


NAMES = {"train.lr": "learning rate", "train.warmup_steps": "warmup steps", "train.weight_decay": "weight decay"}


def tuned_names(record: dict) -> str:
    """'Learning rate and weight decay': what a tuning record's grid tuned, for headings."""
    names = [NAMES[setting] for setting in record["grid"]]
    text = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return text[0].upper() + text[1:]


def tuning_table(record: dict) -> str:
    """Final validation loss per variant (rows) and grid point (columns), the chosen one starred."""
    points = grid_points(record["grid"])
    rows = []
    for variant, losses in record["final_val_loss"].items():
        chosen = point_label(record["chosen"][variant])
        rows.append(
            [
                variant,
                *(format_number(losses[point_label(p)], ".4f") + (" *" if point_label(p) == chosen else "") for p in points),
            ]
        )
    headers = [", ".join(f"{SHORT[setting]} {value:g}" for setting, value in p.items()) for p in points]
    return markdown_table(["variant", *headers], rows)


def plot_tuning(path: Path, record: dict, per_byte: bool = False) -> None:
    """Final validation loss against the first tuned setting (log scale for lr and weight decay),
    one line per variant and combination of the other settings; in bits per byte where `per_byte`
    (variants with other tokenizers: a variant's choice is the same either way, as its two figures
    are proportional on its one validation sample)."""
    plt = pyplot()

    settings = list(record["grid"])
    x_setting, others = settings[0], settings[1:]
    key, y_label = (
        ("final_val_bpb", "final validation bits per byte") if per_byte else ("final_val_loss", "final validation loss")
    )
    fig, ax = plt.subplots(figsize=(6, 4))
    loss_axis(ax, [loss for losses in record[key].values() for loss in losses.values()])
    for variant, losses in record[key].items():
        for rest in itertools.product(*(record["grid"][s] for s in others)):
            fixed = dict(zip(others, rest))
            points = [(x, losses[point_label({x_setting: x, **fixed})]) for x in record["grid"][x_setting]]
            points = [(x, loss) for x, loss in points if loss is not None]
            varied = {s: v for s, v in fixed.items() if len(record["grid"][s]) > 1}  # one value: the same on every line
            label = ", ".join([variant, *(f"{SHORT[s]} {v:g}" for s, v in varied.items())])
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    if x_setting != "train.warmup_steps" and all(x > 0 for x in record["grid"][x_setting]):
        ax.set_xscale("log")
    ax.set_xlabel(NAMES[x_setting])
    ax.set_ylabel(f"{y_label} (tuning run)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_png(fig, path, dpi=120)
