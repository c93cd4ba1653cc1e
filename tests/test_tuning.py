"""Tuned baselines: a learning-rate grid per variant runs before the seeds, each variant's seeded
runs use its best value, the choice is recorded and plotted, and the tuning resumes like a sweep."""

from __future__ import annotations

import json
import logging
import math

import pytest

from slmlab.cli import main
from slmlab.runs import RunDir


@pytest.fixture
def tuned_sweep(tmp_path, micro_toml):
    path = tmp_path / "tuned.toml"
    path.write_text(
        f'name = "tuned"\nbase = "{micro_toml.name}"\nout_dir = "{tmp_path / "runs"}"\nseeds = [1, 2]\n'
        '[overrides]\n"train.steps" = 8\n"train.eval_every" = 8\n"train.checkpoint_every" = 8\n'
        "[tune]\nlr = [1e-5, 3e-2]\nsteps = 6\n"
        '[variants.baseline]\n[variants.full]\n"model.smat.use_S" = true\n"model.smat.use_G" = true\n'
    )
    return path


@pytest.mark.slow
def test_each_variant_trains_its_seeds_at_its_best_learning_rate(tmp_path, tuned_sweep, capsys, caplog):
    assert main(["sweep", str(tuned_sweep), "--dry-run"]) == 0
    assert capsys.readouterr().out.count("tune ") == 4  # 2 variants x 2 values
    assert main(["sweep", str(tuned_sweep), "--only", "0"]) == 2  # before tuning: refused, one line
    assert "tuning runs not finished: " in capsys.readouterr().err

    assert main(["sweep", str(tuned_sweep), "--jobs", "1"]) == 0
    capsys.readouterr()
    sweep_dir = tmp_path / "runs" / "tuned"
    record = json.loads((sweep_dir / "results.json").read_text())["tuning"]
    for variant in ("baseline", "full"):
        losses = {lr: RunDir(sweep_dir / "tune" / f"{variant}_lr{lr}").read_summary()["val_loss"] for lr in ("1e-05", "0.03")}
        best = float(min(losses, key=losses.get))
        assert math.isclose(record["chosen_lr"][variant], best)
        for seed in (1, 2):
            assert RunDir(sweep_dir / f"{variant}_s{seed}").read_config().train.lr == best
        tuning_run = RunDir(sweep_dir / "tune" / f"{variant}_lr1e-05").read_config().train
        assert (tuning_run.steps, tuning_run.seed) == (6, 1000)  # a seed of its own: none of the compared 1, 2
    assert record["seed"] == 1000
    assert (
        "Learning rate, tuned per variant (final validation loss of one 6-step run per grid point at seed 1000, none"
        in (sweep_dir / "results.md").read_text()
    )
    assert (sweep_dir / "tuning.png").stat().st_size > 0

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="slmlab"):
        assert main(["sweep", str(tuned_sweep), "--jobs", "1"]) == 0  # resumable: nothing trains again
    assert caplog.text.count("finished earlier, skipped") == 8
    assert main(["sweep", str(tuned_sweep), "--only", "0"]) == 0  # tuning done: a cluster task reads it
    capsys.readouterr()
    assert main(["sweep", str(tuned_sweep), "--dry-run"]) == 0  # listed at their tuned rates: done, not "other settings"
    assert capsys.readouterr().out.count("[done]") == 8


@pytest.mark.slow
def test_a_grid_of_learning_rate_and_weight_decay_picks_the_best_combination(tmp_path, micro_toml, capsys):
    """The issue's optional warmup and weight-decay grids: every combination is one tuning run,
    named by its settings, and the seeds train at the combination with the lowest final loss."""
    path = tmp_path / "grid.toml"
    text = (
        f'name = "grid"\nbase = "{micro_toml.name}"\nout_dir = "{tmp_path / "runs"}"\nseeds = [1]\n'
        '[overrides]\n"train.steps" = 6\n"train.eval_every" = 6\n"train.checkpoint_every" = 6\n'
        "[tune]\nlr = [1e-5, 3e-2]\nweight_decay = [0.0, 0.5]\nwarmup_steps = [1]\n[variants.baseline]\n"
    )
    path.write_text(text)
    assert main(["sweep", str(path), "--dry-run"]) == 0
    assert capsys.readouterr().out.count("tune ") == 4
    assert main(["sweep", str(path), "--jobs", "1"]) == 0
    sweep_dir = tmp_path / "runs" / "grid"
    names = sorted(p.name for p in (sweep_dir / "tune").iterdir() if p.is_dir())
    assert names == [
        "baseline_lr0.03_wu1_wd0",
        "baseline_lr0.03_wu1_wd0.5",
        "baseline_lr1e-05_wu1_wd0",
        "baseline_lr1e-05_wu1_wd0.5",
    ]
    losses = {name: RunDir(sweep_dir / "tune" / name).read_summary()["val_loss"] for name in names}
    best = RunDir(sweep_dir / "tune" / min(losses, key=losses.get)).read_config().train
    seeded = RunDir(sweep_dir / "baseline_s1").read_config().train
    assert (seeded.lr, seeded.weight_decay, seeded.warmup_steps) == (best.lr, best.weight_decay, 1)
    record = json.loads((sweep_dir / "results.json").read_text())["tuning"]
    assert record["grid"] == {"train.lr": [1e-5, 3e-2], "train.warmup_steps": [1], "train.weight_decay": [0.0, 0.5]}
    assert record["chosen"]["baseline"] == {"train.lr": best.lr, "train.warmup_steps": 1, "train.weight_decay": best.weight_decay}
    assert record["final_val_loss"]["baseline"] == {name.removeprefix("baseline_"): loss for name, loss in losses.items()}
    bpb = {name.removeprefix("baseline_"): RunDir(sweep_dir / "tune" / name).read_summary()["val_bpb"] for name in names}
    assert record["final_val_bpb"]["baseline"] == bpb
    results = (sweep_dir / "results.md").read_text()
    assert (
        "## Learning rate, warmup steps and weight decay, tuned per variant" in results and "| lr 0.03, wu 1, wd 0.5" in results
    )
    assert (sweep_dir / "tuning.png").stat().st_size > 0


@pytest.mark.parametrize(
    "tune, overrides, says",
    [
        ("weight_decay = [0.1, 0.1]", "", "tune.weight_decay lists a value twice"),
        ("weight_decay = [-0.1]", "", "tune.weight_decay must hold weight decays >= 0"),
        ("warmup_steps = [-1]", "", "tune.warmup_steps must hold step counts >= 0"),
        ("weight_decay = [0.1]", '"train.weight_decay" = 0.2', "sets train.weight_decay, which the sweep sets for every run"),
        # a value the grid sets is refused naming the grid point, not a train.* key the user never set
        ("lr = [1e9]", "", "[tune] grid point lr1e+09 of variant 'baseline': train.lr * train.weight_decay"),
        ("lr = [1e-3]\nsteps = 10000000000000000000000", "", "[tune] grid point lr0.001 of variant 'baseline': train.steps"),
        # tuned at a compared seed, that seed's run would carry the luck of the best of the grid
        ("lr = [1e-3]\nseed = 1", "", "tune.seed = 1 is also one of the seeds"),
        ("lr = [1e-3]\nseed = -1", "", "tune.seed must be a whole number from 0 to 2**64 - 1, got -1"),
    ],
)
def test_a_tuning_grid_that_cannot_run_as_written_is_one_line(tmp_path, micro_toml, capsys, tune, overrides, says):
    path = tmp_path / "grid.toml"
    path.write_text(
        f'name = "grid"\nbase = "{micro_toml.name}"\nseeds = [1]\n[overrides]\n{overrides}\n[tune]\n{tune}\n[variants.baseline]\n'
    )
    assert main(["sweep", str(path), "--dry-run"]) == 2
    assert says in capsys.readouterr().err


def test_a_diverged_grid_point_puts_the_losses_on_a_log_axis(tmp_path, monkeypatch):
    """A learning rate that diverges (a loss of 1e5 beside 1.5) flattened every other point onto
    0 on a linear axis; ordinary losses keep one."""
    from slmlab.experiments import tuning
    from slmlab.plotting import loss_axis, pyplot

    figures = []
    monkeypatch.setattr(tuning, "save_png", lambda fig, path, dpi: figures.append(fig))
    grid = {"train.lr": [1e-3, 1e-2, 1.0]}
    labels = [tuning.point_label({"train.lr": lr}) for lr in grid["train.lr"]]
    for losses, scale in (([1.6, 1.5, 1e5], "log"), ([1.6, 1.5, 2.4], "linear")):
        tuning.plot_tuning(tmp_path / "tuning.png", {"grid": grid, "final_val_loss": {"baseline": dict(zip(labels, losses))}})
        assert figures.pop().axes[0].get_yscale() == scale
    _, ax = pyplot().subplots()
    loss_axis(ax, [None, math.inf, 0.0, 4.2, 1.4])  # what is not a positive finite loss is not counted
    assert ax.get_yscale() == "linear"


def test_variants_with_other_tokenizers_are_plotted_in_bits_per_byte(tmp_path, monkeypatch):
    """A char and a byte variant's final losses per token shared one axis in other units."""
    from slmlab.experiments import tuning

    figures = []
    monkeypatch.setattr(tuning, "save_png", lambda fig, path, dpi: figures.append(fig))
    grid = {"train.lr": [1e-3, 1e-2]}
    labels = [tuning.point_label({"train.lr": lr}) for lr in grid["train.lr"]]
    record = {
        "grid": grid,
        "final_val_loss": {"char": dict(zip(labels, [2.0, 1.9])), "byte": dict(zip(labels, [1.5, 1.4]))},
        "final_val_bpb": {"char": dict(zip(labels, [2.9, 2.7])), "byte": dict(zip(labels, [2.2, 2.0]))},
    }
    tuning.plot_tuning(tmp_path / "tuning.png", record, per_byte=True)
    ax = figures.pop().axes[0]
    assert ax.get_ylabel() == "final validation bits per byte (tuning run)"
    assert {line.get_label(): list(line.get_ydata()) for line in ax.lines} == {"char": [2.9, 2.7], "byte": [2.2, 2.0]}
