"""What a sweep is: its config, read and checked into one run config per (variant, seed).

A sweep config (TOML):

    name = "smat_ablation"
    base = "quickstart.toml"          # a run config, relative to this file
    plugins = ["ideas/my_gate.py"]    # optional: plugins every run imports, added to the base's
    seeds = [0, 1, 2]
    baseline = "baseline"             # the variant others are compared with (default: the first)
    [tune]                            # optional: a grid per variant, run before the seeds: lr and
    lr = [1e-3, 3e-3, 1e-2]           #   optionally warmup_steps, weight_decay (experiments/tuning.py)
    [budget]                          # optional, equal compute: each variant's steps from one of
    flops = 2e13                      #   tokens, flops (training FLOPs) or seconds (experiments/budget.py)
    [overrides]                       # dotted overrides applied to every run
    "train.steps" = 300
    [variants.baseline]
    [variants.full]
    "model.smat.use_S" = true
    "model.smat.use_G" = true

Every run config is checked as `slmlab train` checks one, with two rules of the sweep's own: the
sweep sets each run's seed, name and folder (and with [tune] or [budget] its tuned settings or
steps), so overrides of those are refused; and an ignored setting (config/checks.py) is weighed
over the variants: a variant's own is refused, a shared one only when every variant ignores it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import plugins
from ..config import ConfigError, RunConfig, build_dataclass, check_name, dotted, load_config, read_toml, repeated_settings
from ..config.ignored import (
    check_no_ignored_setting,
    ignored_in_phases,
    ignored_settings,
    replaced_by_phases,
    set_by_first_phase,
)
from ..data.corpora import check_outside_source, check_source_settings
from ..runs.run_dir import RunDir
from ..tables import command_line
from .budget import BUDGET_TIMINGS, Budget, apply_budget, set_steps
from .caveats import caveats
from .tuning import Tune

log = logging.getLogger("slmlab")


@dataclass
class HarnessTasks:
    """`[lm_eval]` in a sweep: lm-evaluation-harness tasks scored on every finished run (slmlab
    lm-eval), their accuracy set in the results table with paired CIs against the baseline."""

    tasks: list[str] = field(default_factory=list)  # lm-evaluation-harness task names, e.g. ["slmlab_cloze"]
    limit: int = 0  # examples per task (0 = all)
    num_fewshot: int | None = None  # unset: each task's own (as `slmlab lm-eval` without --num-fewshot)
    batch_size: int = 16  # sequences scored together


@dataclass
class SweepConfig:
    """A sweep: every variant trained at every seed from one base run config, then compared with
    the baseline, paired by seed."""

    name: str = "sweep"  # the sweep's folder under out_dir (default: the file's stem)
    base: str = ""  # the run config every run starts from, relative to this file (required)
    out_dir: str = "runs"  # the folder the sweep's folder goes in
    plugins: list[str] = field(default_factory=list)  # added to the base config's, relative to this file
    seeds: list[int] = field(default_factory=lambda: [0])  # each variant trains once per seed (its train.seed), paired by seed
    baseline: str = ""  # the variant the others are compared with (default: the first)
    overrides: dict[str, Any] = field(default_factory=dict)  # settings for every run ({"train.steps" = 300})
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)  # [variants.NAME]: each variant's settings over the base's
    budget: Budget = field(default_factory=Budget)  # equal compute: tokens, flops or seconds (experiments/budget.py)
    tune: Tune = field(default_factory=Tune)  # grids run per variant before the seeds (experiments/tuning.py)
    lm_eval: HarnessTasks = field(default_factory=HarnessTasks)  # lm-evaluation-harness tasks scored on every run


@dataclass
class Job:
    variant: str
    seed: int
    config: RunConfig

    @property
    def run(self) -> RunDir:
        return RunDir.for_config(self.config)


def load_sweep(
    path: str | Path, extra_overrides: dict[str, Any] | None = None, step_times: str = "measure"
) -> tuple[SweepConfig, list[Job]]:
    """Read a sweep config and resolve (and validate) the run config of every (variant, seed).
    A seconds budget reads each variant's step time from the sweep folder's budget.json, timing
    those it lacks (`step_times`: "measure"; "record": and adding them to it, as the sweep verb
    does, so that every later command, and each SLURM task, gives a run the steps it was first
    given; "recorded": refusing them, as --slurm does: see budget.apply_budget)."""
    path = Path(path)
    values = read_toml(path)
    if "variants" not in values and {"model", "data", "train", "phases"} & set(values):
        raise ConfigError(
            f"{path} is a run config: train it with `{command_line('slmlab', 'train', path)}`, or name it in a sweep as base = ..."
        )
    values.setdefault("name", path.stem)
    sweep = build_dataclass(SweepConfig, values)
    sweep.out_dir = os.path.expanduser(sweep.out_dir)
    check_name("name", sweep.name)
    if not sweep.out_dir:  # its runs went to a folder named after the sweep in the working directory
        raise ConfigError(f"{path}: out_dir is empty: name the folder that holds the sweep's folder (default 'runs')")
    if not sweep.base:
        raise ConfigError(f"{path}: 'base' must name a run config (e.g. base = \"quickstart.toml\")")
    if not sweep.variants:
        raise ConfigError(f"{path}: no [variants.<name>] tables")
    if not sweep.seeds:
        raise ConfigError(f"{path}: 'seeds' is empty")
    repeated = sorted(seed for seed, n in Counter(sweep.seeds).items() if n > 1)
    if repeated:
        raise ConfigError(
            f"{path}: seeds {repeated} appear more than once; each (variant, seed) is one run, so list each seed once"
        )
    if any(not name.strip() for name in sweep.variants):
        raise ConfigError(f'{path}: a variant\'s name is empty ([variants.""]); name it: it heads its row in the results table')
    cases = Counter(name.lower() for name in sweep.variants)
    folded = [name for name in sweep.variants if cases[name.lower()] > 1]
    if folded:
        raise ConfigError(
            f"{path}: variants {folded} differ only in case; their run folders would be one folder "
            "on macOS and Windows: rename one"
        )
    check_tables(path, values, sweep)
    sweep.baseline = sweep.baseline or next(iter(sweep.variants))
    if sweep.baseline not in sweep.variants:
        raise ConfigError(f"{path}: baseline '{sweep.baseline}' is not one of the variants {list(sweep.variants)}")
    check_no_per_run_settings(path, sweep, extra_overrides or {})
    folder = Path(sweep.out_dir) / sweep.name
    if (folder / "config.json").is_file():
        raise ConfigError(
            f"{path}: {folder} is a run, not a sweep's folder: the sweep would put its runs and tables inside it; "
            "give the sweep another name"
        )
    base = path.parent / Path(sweep.base).expanduser()  # relative to the sweep file (an absolute base stays)
    if base.is_file() and "variants" in read_toml(base):
        raise ConfigError(f"{path}: base = '{sweep.base}' is a sweep config ([variants]); base names a run config")
    check_no_setting_twice(path, sweep, read_toml(base) if base.is_file() else {})
    shared = {}
    if sweep.plugins:  # the base config's plugins (relative to it), then the sweep's (relative to this file)
        named = plugins.resolve(read_toml(base).get("plugins", []), base.parent) + plugins.resolve(sweep.plugins, path.parent)
        shared["plugins"] = list(dict.fromkeys(named))
    jobs = []
    for variant, overrides in sweep.variants.items():
        for seed in sweep.seeds:
            run_overrides = {
                **shared,
                **sweep.overrides,
                **overrides,
                **(extra_overrides or {}),
                "train.seed": seed,
                "name": f"{variant}_s{seed}",
                "out_dir": str(Path(sweep.out_dir) / sweep.name),
            }
            try:
                config = load_config(base, run_overrides, refuse_ignored=False)
            except ConfigError as err:
                raise ConfigError(f"variant '{variant}': {err}") from None
            jobs.append(Job(variant, seed, tracked(config, sweep.name, variant, seed)))
    check_no_ignored_setting_in_sweep(path, sweep, first_seed_jobs(jobs))
    check_curriculum_tables(path, sweep, first_seed_jobs(jobs))
    for note in caveats({job.variant: job.config for job in first_seed_jobs(jobs)}, sweep.baseline, bool(sweep.budget.held())):
        log.warning(f"{path}: {note}")
    for job in first_seed_jobs(jobs):
        try:
            check_source_settings(job.config.data)
            check_outside_source(job.config.data, Path(sweep.out_dir) / sweep.name, "the sweep's folder")
        except ConfigError as err:
            raise ConfigError(f"variant '{job.variant}': {err}") from None
    timings = Path(sweep.out_dir) / sweep.name / BUDGET_TIMINGS
    first = {job.variant: job.config for job in first_seed_jobs(jobs)}  # each variant's first seed
    steps = apply_budget(first, sweep.budget, timings, step_times)
    if steps:
        jobs = [Job(job.variant, job.seed, set_steps(job.config, steps[job.variant])) for job in jobs]
    return sweep, jobs


def check_tables(path: Path, values: dict, sweep: SweepConfig) -> None:
    """A [budget], [tune] or [lm_eval] table that asks for nothing, and [lm_eval] counts below their
    range, are refused: the sweep ran as if the table were absent, in silence. So is a tune.seed
    that is one of the compared seeds (experiments/tuning.py says why)."""
    asks = {
        "budget": (sweep.budget.held() is not None, "one of tokens, flops or seconds"),
        "tune": (bool(sweep.tune.axes()), "values to try for lr, warmup_steps or weight_decay"),
        "lm_eval": (bool(sweep.lm_eval.tasks), 'its tasks (tasks = ["slmlab_cloze"])'),
    }
    for table, (asked, what) in asks.items():
        if table in values and not asked:
            raise ConfigError(f"{path}: [{table}] asks for nothing: give {what}, or remove the table")
    if sweep.tune.axes() and sweep.tune.seed in sweep.seeds:
        raise ConfigError(
            f"{path}: tune.seed = {sweep.tune.seed} is also one of the seeds: the best of the grid's runs at that seed "
            "would stand in the comparison with its luck; give [tune] seed another value"
        )
    spec = sweep.lm_eval
    for name, value, least in (
        ("limit", spec.limit, 0),
        ("num_fewshot", spec.num_fewshot, 0),
        ("batch_size", spec.batch_size, 1),
    ):
        if value is not None and value < least:
            raise ConfigError(f"{path}: lm_eval.{name} must be >= {least}, got {value}")


def check_no_ignored_setting_in_sweep(path: Path, sweep: SweepConfig, jobs: list[Job]) -> None:
    """A variant's own setting that its run ignores is refused; a shared one (the base config's,
    [overrides], the command line's) only if every variant ignores it. A sweep of learned
    against RoPE positions keeps model.rope_theta in its base, where the RoPE variants read it."""
    for job in jobs:
        try:
            check_no_ignored_setting(job.config, keys=set(dotted(sweep.variants[job.variant])))
        except ConfigError as err:
            raise ConfigError(f"variant '{job.variant}': {err}") from None
    ignored = ignored_settings([phase for job in jobs for phase in job.config.phase_configs()])
    for found in (replaced_by_phases, ignored_in_phases):  # a curriculum's: refused where every variant ignores it
        per_job = [dict(found(job.config)) for job in jobs]
        ignored += [(key, message) for key, message in per_job[0].items() if all(key in other for other in per_job)]
    if ignored:
        raise ConfigError(f"{path}: {ignored[0][1]} (every variant ignores it)")


def check_curriculum_tables(path: Path, sweep: SweepConfig, jobs: list[Job]) -> None:
    """A [budget] or [tune] sets train settings that a curriculum's phases may replace: a budget's
    train.steps (each phase trains its own steps), a grid's values where the first phase sets its
    own (phases[0].lr). Refused rather than run as if the table were absent."""
    phased = next((job for job in jobs if job.config.phases), None)
    if phased is None:
        return
    if sweep.budget.held() is not None:
        raise ConfigError(
            f"{path}: [budget] sets each run's train.steps, but variant '{phased.variant}' trains a curriculum whose "
            "phases each train their own steps; give the phases' steps yourself, or a base config without [[phases]]"
        )
    tuned = [*sweep.tune.axes(), *(["train.steps"] if sweep.tune.steps else [])]
    for job in jobs:  # every phase trains its own steps, whether the first sets them or not
        replaced = {*set_by_first_phase(job.config), "train.steps"} if job.config.phases else set()
        key = next((key for key in tuned if key in replaced), None)
        if key is not None:
            raise ConfigError(
                f"{path}: [tune] sets {key}, which variant '{job.variant}''s curriculum replaces in its phases; "
                "tune a base config without [[phases]], or remove it from [tune]"
            )


def per_run_settings(sweep: SweepConfig) -> dict[str, str]:
    """Config keys the sweep sets for every run -> which of its keys sets them."""
    owned = {"train.seed": "seeds", "name": "name (runs are <variant>_s<seed>)", "out_dir": "out_dir"}
    for setting in sweep.tune.axes():
        owned[setting] = f"[tune] (it picks each variant's {setting.removeprefix('train.')})"
    if sweep.budget.held():
        owned["train.steps"] = "[budget] (it sets each variant's steps)"
    return owned


def check_no_setting_twice(path: Path, sweep: SweepConfig, base_values: dict) -> None:
    """Refuse a setting an [overrides] or variant table gives twice, under two spellings (a dotted
    key and a table, a phase by its name and by its index): only the last would hold."""
    phases = base_values.get("phases")
    names = [str(p.get("name", "phase")) for p in phases if isinstance(p, dict)] if isinstance(phases, list) else []
    for where, table in [("[overrides]", sweep.overrides), *((f"variant '{v}'", t) for v, t in sweep.variants.items())]:
        if twice := repeated_settings(table, names):
            raise ConfigError(
                f"{path}: {where} sets {twice[0]} twice (under two spellings), and only the last would hold: give it once"
            )


def check_no_per_run_settings(path: Path, sweep: SweepConfig, extra_overrides: dict[str, Any]) -> None:
    """Refuse overrides of what the sweep sets for every run (they were replaced in silence)."""
    owned = per_run_settings(sweep)
    sources = [("[overrides]", sweep.overrides), *((f"variant '{v}'", o) for v, o in sweep.variants.items())]
    for where, overrides in [*sources, ("the command line", extra_overrides)]:
        for key in dotted(overrides):
            if key in owned:
                raise ConfigError(
                    f"{path}: {where} sets {key}, which the sweep sets for every run from its {owned[key]}; remove it"
                )


def tracked(config: RunConfig, sweep: str, variant: str, seed: int) -> RunConfig:
    """The run's config with its tracker group (the sweep's name, unless the config names one)
    and tags (its variant and seed added), so trackers show a sweep as one group. Without
    trackers the config stays as it is: nothing would read them."""
    train = config.train
    if not train.trackers:
        return config
    tags = list(dict.fromkeys([*train.tracker_tags, variant, f"seed{seed}"]))
    return dataclasses.replace(
        config, train=dataclasses.replace(train, tracker_group=train.tracker_group or sweep, tracker_tags=tags)
    )


def first_seed_jobs(jobs: list[Job]) -> list[Job]:
    """Each variant's job at its first seed (its cost and checks are measured on it; its tuning runs
    start from its config, at tune.seed)."""
    firsts: dict[str, Job] = {}
    for job in jobs:
        firsts.setdefault(job.variant, job)
    return list(firsts.values())
