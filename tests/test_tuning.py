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


def test_each_variant_trains_its_seeds_at_its_best_learning_rate(tmp_path, tuned_sweep, capsys, caplog):
    assert main(["sweep", str(tuned_sweep), "--dry-run"]) == 0
    assert capsys.readouterr().out.count("tune ") == 4  # 2 variants x 2 values
    assert main(["sweep", str(tuned_sweep), "--only", "0"]) == 2  # before tuning: refused, one line
    assert "tuning run(s) are not finished" in capsys.readouterr().err

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
        assert RunDir(sweep_dir / "tune" / f"{variant}_lr1e-05").read_config().train.steps == 6
    assert "Learning rate, tuned per variant" in (sweep_dir / "results.md").read_text()
    assert (sweep_dir / "tuning.png").stat().st_size > 0

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="slmlab"):
        assert main(["sweep", str(tuned_sweep), "--jobs", "1"]) == 0  # resumable: nothing trains again
    assert caplog.text.count("finished earlier, skipped") == 8
    assert main(["sweep", str(tuned_sweep), "--only", "0"]) == 0  # tuning done: a cluster task reads it
