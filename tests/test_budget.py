"""Equal-compute sweeps: a budget in tokens, FLOPs or seconds gives each variant the steps its
cost allows; a variant that costs more per step (full SMAT) gets fewer; the results say which
budget held and show steps and FLOPs."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

from slmlab.cli import main
from slmlab.config import ConfigError, apply_overrides, config_from_dict
from slmlab.experiments import budget as budget_module
from slmlab.experiments.budget import flops_per_token, seconds_per_step, tokens_per_step
from slmlab.experiments.sweep_config import load_sweep
from slmlab.model import build_model
from slmlab.training.optim import select_trainable


def sweep_file(
    tmp_path, micro_toml, budget: str, full: str = '"model.smat.use_S" = true\n"model.smat.use_G" = true', device: str = "cpu"
) -> str:
    """A baseline-vs-SMAT sweep of the micro config under `budget`, trained on `device` (the CPU,
    whose step times are named by thread count, unless a test asks for another)."""
    path = tmp_path / "budget_sweep.toml"
    path.write_text(
        f'name = "budget"\nbase = "{micro_toml.name}"\nout_dir = "{tmp_path / "runs"}"\nseeds = [1]\n'
        f'[overrides]\n"train.warmup_steps" = 1\n"train.device" = "{device}"\n'
        f"[budget]\n{budget}\n[variants.baseline]\n[variants.full]\n{full}\n"
    )
    return str(path)


def steps_of(jobs) -> dict[str, int]:
    return {job.variant: job.config.train.steps for job in jobs}


@pytest.mark.slow
def test_a_flops_budget_gives_a_costlier_variant_fewer_steps(tmp_path, micro_toml, capsys):
    _, jobs = load_sweep(sweep_file(tmp_path, micro_toml, "flops = 5e8"))
    steps = steps_of(jobs)
    assert steps["full"] < steps["baseline"]
    for job in jobs:  # the most steps the budget buys
        per_step = flops_per_token(job.config) * tokens_per_step(job.config)
        assert job.config.train.steps * per_step <= 5e8 < (job.config.train.steps + 1) * per_step
    assert main(["sweep", sweep_file(tmp_path, micro_toml, "flops = 5e8"), "--dry-run"]) == 0
    planned = capsys.readouterr().out  # the steps each run will train, before it trains
    assert f"full_s1  [new]  {steps['full']:,} steps" in planned and f"baseline_s1  [new]  {steps['baseline']:,} steps" in planned
    assert main(["sweep", sweep_file(tmp_path, micro_toml, "flops = 5e8"), "--jobs", "1"]) == 0
    capsys.readouterr()
    results = (tmp_path / "runs" / "budget" / "results.md").read_text()
    assert "Equal compute: budget flops = 5e+08 held by every variant" in results
    rows = {line.split("|")[1].strip(): line for line in results.splitlines() if line.startswith("| ") and "variant" not in line}
    assert f"| {steps['full']} " in rows["full"] and f"| {steps['baseline']} " in rows["baseline (baseline)"]


def test_a_token_budget_follows_the_batch(tmp_path, micro_toml):
    _, jobs = load_sweep(sweep_file(tmp_path, micro_toml, "tokens = 3200", full='"train.batch_size" = 8'))
    assert steps_of(jobs) == {"baseline": 25, "full": 12}  # 4 x 32 and 8 x 32 tokens per step


def test_frozen_weights_cost_no_gradient_flops(tmp_path, micro_toml):
    """A run that trains a subset (train.trainable, SMT's stage 2) computes no weight gradient for
    the frozen linear layers: 2 in x out FLOPs per token fewer each, which the FLOPs budget and the
    results' train FLOPs counted anyway."""
    _, jobs = load_sweep(sweep_file(tmp_path, micro_toml, "tokens = 3200", full='"model.self_area.enabled" = true'))
    area = next(job.config for job in jobs if job.variant == "full")
    frozen = config_from_dict(apply_overrides(area.to_dict(), {"train.trainable": "self_area"}))
    model = build_model(budget_module.with_vocab(area).model)
    select_trainable(model, "self_area")
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    frozen_weights = sum(m.weight.numel() for m in linear if not m.weight.requires_grad)
    assert 0 < frozen_weights < sum(m.weight.numel() for m in linear)
    assert flops_per_token(area) - flops_per_token(frozen) == 2 * frozen_weights


def test_a_seconds_budget_times_each_variant(tmp_path, micro_toml, monkeypatch, device):
    cfg = load_sweep(sweep_file(tmp_path, micro_toml, "seconds = 10", device=device.type))[1][0].config
    measured = seconds_per_step(cfg)
    assert 0 < measured < 5 and math.isfinite(measured)
    monkeypatch.setattr(budget_module, "seconds_per_step", lambda cfg: 0.1 if cfg.model.smat.use_S else 0.05)
    assert steps_of(load_sweep(sweep_file(tmp_path, micro_toml, "seconds = 10"))[1]) == {"baseline": 200, "full": 100}


def test_a_seconds_budget_is_timed_once_per_sweep(tmp_path, micro_toml, monkeypatch, capsys):
    """Step times move between measurements: timed anew by each command, a finished sweep run again
    gave every run more steps to train (97 -> 145), and each SLURM task its own. The sweep verb
    records them in the sweep folder; later commands read them, re-timing only a changed variant."""
    times = iter([0.05, 0.1, 0.07, 0.02, 0.09, 0.03])
    timed = []
    monkeypatch.setattr(budget_module, "seconds_per_step", lambda cfg: timed.append(cfg.name) or next(times))
    config = sweep_file(tmp_path, micro_toml, "seconds = 10")
    record = tmp_path / "runs" / "budget" / "budget.json"
    assert steps_of(load_sweep(config)[1]) == {"baseline": 200, "full": 100} and not record.exists()  # check, info
    assert main(["sweep", config, "--dry-run"]) == 0  # the sweep verb times and records
    assert "baseline_s1  [new]  142 steps" in capsys.readouterr().out and record.is_file()
    assert steps_of(load_sweep(config)[1]) == {"baseline": 142, "full": 500} and len(timed) == 4
    changed = sweep_file(tmp_path, micro_toml, "seconds = 10", full='"model.smat.use_S" = true')
    assert steps_of(load_sweep(changed, step_times="record")[1]) == {"baseline": 142, "full": 111} and len(timed) == 5
    assert steps_of(load_sweep(changed)[1])["full"] == 111 and len(timed) == 5
    record.write_text("{not json")
    with pytest.raises(
        ConfigError, match=r"step times .*budget\.json is damaged .* delete .*budget\.json to time the variants again"
    ):
        load_sweep(config)


def test_a_step_is_timed_as_the_run_trains_it(tmp_path, micro_toml, monkeypatch):
    """The seconds budget timed every variant with plain AdamW in fp32: a Muon variant (the modern
    baseline's optimizer, several matrix products per update) was given AdamW's step count. It
    times the trainer's own OptimizerStep, with the run's optimizer and trainable parameters."""
    built = []
    real = budget_module.build_optimizer
    monkeypatch.setattr(
        budget_module, "build_optimizer", lambda model, train, device: built.append(real(model, train, device)) or built[-1]
    )
    stepped = []
    monkeypatch.setattr(
        budget_module.OptimizerStep,
        "__call__",
        lambda self, n, real=budget_module.OptimizerStep.__call__: stepped.append(n) or real(self, n),
    )
    config = sweep_file(tmp_path, micro_toml, "seconds = 10", full='"train.optimizer" = "muon"')
    jobs = load_sweep(config)[1]
    assert [type(o).__name__ for o in built] == ["AdamW", "Optimizers"] and stepped == [0, 1, 2, 2, 2, 2, 2] * 2
    muon = next(job.config for job in jobs if job.variant == "full")
    assert muon.train.optimizer == "muon" and 0 < seconds_per_step(muon, repeats=1, warmup=0) < 5


def test_a_slurm_script_does_not_time_a_seconds_budget_on_the_login_node(tmp_path, micro_toml, monkeypatch, capsys):
    """--slurm timed each variant's step where the script was written (a login node, often without
    the GPU the tasks train on) and recorded it for every task: the runs trained for a budget of
    another machine's seconds; a task that found none timed its own. Both refuse instead, until the
    step times are recorded on a node that trains."""
    monkeypatch.setattr(budget_module, "seconds_per_step", lambda cfg: 0.05)
    config, script = sweep_file(tmp_path, micro_toml, "seconds = 10"), tmp_path / "sweep.sh"
    for task in (["--slurm", str(script)], ["--only", "0"]):  # nor a task: each would train its own budget
        assert main(["sweep", config, *task]) == 2
        assert re.search(r"variant 'baseline' has no step time in .*budget\.json.* there with --dry-run", capsys.readouterr().err)
    assert not script.exists() and not (tmp_path / "runs" / "budget" / "budget.json").exists()
    assert main(["sweep", config, "--dry-run"]) == 0  # on a node that trains: records them
    record = (tmp_path / "runs" / "budget" / "budget.json").read_text()
    assert '"machine":' in record and "threads" in record
    assert main(["sweep", config, "--slurm", str(script)]) == 0 and script.is_file()
    assert "200 steps" in capsys.readouterr().out


@pytest.mark.slow
def test_the_results_name_the_machine_a_seconds_budget_was_timed_on(tmp_path, micro_toml, monkeypatch, capsys):
    monkeypatch.setattr(budget_module, "seconds_per_step", lambda cfg: 0.1)
    config = sweep_file(tmp_path, micro_toml, "seconds = 0.5")
    assert main(["sweep", config, "--jobs", "1"]) == 0
    capsys.readouterr()
    results = (tmp_path / "runs" / "budget" / "results.md").read_text()
    assert re.search(
        r"budget seconds = 0.5 held by every variant .* Step times measured on .+, cpu, \d+ threads \(budget\.json\)\.", results
    )


def test_a_budget_or_a_tuned_setting_a_curriculum_replaces_is_refused(tmp_path, micro_toml):
    """A budget sets train.steps, which a curriculum's phases replace with their own: the sweep
    listed 78 steps per run and trained the phases' 20 + 10."""
    micro_toml.write_text(micro_toml.read_text().replace("steps = 12\n", "") + '[[phases]]\nname = "A"\nsteps = 6\nlr = 1e-3\n')
    with pytest.raises(
        ConfigError, match=r"\[budget\] sets each run's train.steps, but variant '(baseline|full)' trains a curriculum"
    ):
        load_sweep(sweep_file(tmp_path, micro_toml, "tokens = 5000"))
    path = Path(sweep_file(tmp_path, micro_toml, "tokens = 5000"))
    path.write_text(path.read_text().replace("[budget]\ntokens = 5000", "[tune]\nlr = [1e-3, 3e-3]"))
    with pytest.raises(ConfigError, match=r"\[tune\] sets train.lr, which variant '(baseline|full)''s curriculum replaces"):
        load_sweep(path)
    path.write_text(path.read_text().replace("lr = [1e-3, 3e-3]", "weight_decay = [0.0, 0.1]"))
    assert len(load_sweep(path)[1]) == 2  # a setting no phase sets is tuned as ever


def test_budget_mistakes_are_one_line_errors(tmp_path, micro_toml):
    with pytest.raises(ConfigError, match="give one of tokens, flops, seconds"):
        load_sweep(sweep_file(tmp_path, micro_toml, "tokens = 1000\nflops = 1e9"))
    with pytest.raises(ConfigError, match="buys variant '(baseline|full)' only 0 steps"):
        load_sweep(sweep_file(tmp_path, micro_toml, "tokens = 10"))
    with pytest.raises(ConfigError, match="did you mean 'budget.flops'"):
        load_sweep(sweep_file(tmp_path, micro_toml, "flop = 1e9"))
    # it said "train.steps = 2486... is too large", a setting the user never gave
    with pytest.raises(
        ConfigError, match=r"budget flops = 1e\+30 buys variant '(baseline|full)' .* steps, more than a run can count"
    ):
        load_sweep(sweep_file(tmp_path, micro_toml, "flops = 1e30"))
