"""A diverged run's perplexity is exp(val_loss) as it is, inf past float64's range: never a cap.

Perplexity used to be capped at exp(50), so every run whose validation loss passed 50 nats read
5.18e21: a sweep showed a std of 0 across diverged seeds and ran its t-test on capped values, and
`slmlab ablate` of such a run stopped with Python's OverflowError."""

from __future__ import annotations

import json
import logging
import math
import re
import warnings

import pytest

from slmlab.cli.main import main
from slmlab.experiments.results import results_table, summarize
from slmlab.experiments.stats import mean_std, paired_comparison
from slmlab.experiments.sweep_config import SweepConfig
from slmlab.runs.metrics import perplexity
from slmlab.runs.run_dir import RunDir
from slmlab.training import train


def test_perplexity_is_exp_of_the_loss_and_inf_past_float64():
    assert perplexity(2.0) == math.exp(2.0)
    assert perplexity(60.0) == math.exp(60.0) > math.exp(50.0)  # no cap at exp(50)
    assert perplexity(709.0) == math.exp(709.0)
    assert perplexity(710.0) == perplexity(1e6) == math.inf
    assert math.isnan(perplexity(math.nan))


def test_a_seed_whose_perplexity_overflowed_is_a_loss_with_no_interval():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy "invalid value" warnings on the way
        one = paired_comparison({0: math.inf, 1: 30.0, 2: 25.0}, {0: 20.0, 1: 21.0, 2: 26.0})
        both = paired_comparison({0: math.inf, 1: 30.0}, {0: math.inf, 1: 21.0})
        spread = mean_std([math.inf, 3.0])
    assert one.n_pairs == 3 and one.delta_pct == math.inf and one.wins == 1
    assert math.isnan(one.ci_low) and math.isnan(one.ci_high) and math.isnan(one.t_p) and math.isnan(one.sd)
    assert one.sign_p == pytest.approx(1.0)  # 1 win of 3 decided seeds
    assert math.isnan(both.delta_pct) and both.wins == 0 and both.sign_p == 1.0  # inf / inf: one seed decided (a loss)
    assert spread[0] == math.inf and math.isnan(spread[1])
    against = paired_comparison({0: 30.0, 1: 25.0}, {0: math.inf, 1: 26.0})  # the baseline's seed 0 diverged
    assert against.wins == 2 and math.isnan(against.ci_low) and math.isnan(against.t_p)  # -100% is no measurement
    finite = paired_comparison({0: 22.0, 1: 30.0}, {0: 20.0, 1: 21.0})  # unchanged for measured values
    assert finite.sd > 0 and finite.ci_low < finite.delta_pct < finite.ci_high and 0 < finite.t_p < 1


@pytest.fixture
def diverged(text_corpus, make_config, caplog):
    """A run trained at a learning rate of 50: its validation loss passes 709 nats per token, and
    training ends saying it diverged (no step was non-finite, so nothing else says so)."""
    cfg = make_config(text_corpus, train={"steps": 20, "lr": 50.0, "weight_decay": 0.0, "warmup_steps": 2})
    with caplog.at_level(logging.WARNING, logger="slmlab"):
        train(cfg, progress=False)
    run = RunDir.for_config(cfg)
    assert json.loads(run.summary.read_text())["val_loss"] > 710  # the premise: exp(val_loss) overflows
    assert (
        re.search(r"nats per token is more than twice the \d\.\d{3} \(ln V\) that guessing", caplog.text)
        and "the run diverged; lower train.lr" in caplog.text
    )
    caplog.clear()
    return cfg, run


def test_a_diverged_run_records_and_reads_back_an_infinite_perplexity(diverged, capsys):
    _, run = diverged
    written = json.loads(run.summary.read_text())
    assert written["val_ppl"] is None  # standard JSON has no inf: null, as every non-finite figure
    assert run.read_summary()["val_ppl"] == math.inf
    written["val_ppl"] = math.exp(50.0)  # as slmlab before 2026-12-05 capped it
    run.summary.write_text(json.dumps(written))
    assert run.read_summary()["val_ppl"] == math.inf

    assert main(["ablate", str(run.path), "--layers", "--n-batches", "1"]) == 0  # was: OverflowError
    rows = json.loads((run.path / "ablations.json").read_text())["interventions"]
    assert rows["unmodified"]["val_ppl"] is None and "| inf " in capsys.readouterr().out

    sweep = SweepConfig(name="s", seeds=[0, 1], variants={"baseline": {}, "hot": {}}, baseline="baseline")
    summary = run.read_summary()
    results = {("baseline", 0): {**summary, "val_ppl": 20.0}, ("baseline", 1): {**summary, "val_ppl": 21.0}}
    results |= {("hot", 0): summary, ("hot", 1): {**summary, "val_ppl": 30.0}}
    records = summarize(sweep, results)
    hot = next(r for r in records if r["variant"] == "hot")
    assert hot["val_ppl_by_seed"] == {0: math.inf, 1: 30.0}  # the diverged seed stays in, as inf
    assert hot["val_ppl_mean"] == math.inf and math.isnan(hot["val_ppl_std"]) and hot["delta_pct"] == math.inf
    assert math.isnan(hot["ci_low"]) and math.isnan(hot["t_p"]) and hot["wins"] == 0
    for record in records:
        record["train_flops"] = math.nan  # (what results_table shows beside: the configs' FLOPs, not at issue here)
    row = next(line for line in results_table(records).splitlines() if line.startswith("| hot"))
    assert "| inf " in row and "+inf%" in row


def test_the_sweep_curves_beside_a_diverged_variant_are_drawn_on_a_log_axis(
    diverged, text_corpus, make_config, monkeypatch, caplog
):
    """On a linear axis the baseline's curve lay flat on 0 under the diverged variant's 1e5."""
    from slmlab.experiments import results as results_module
    from slmlab.experiments.sweep_config import Job

    cfg, _ = diverged
    normal = make_config(text_corpus, train={"steps": 20})
    normal.name = "normal"
    with caplog.at_level(logging.WARNING, logger="slmlab"):
        train(normal, progress=False)
    assert "diverged" not in caplog.text
    figures = []
    monkeypatch.setattr(results_module, "save_png", lambda fig, path, dpi: figures.append(fig))
    sweep = SweepConfig(name="s", variants={"baseline": {}, "hot": {}}, baseline="baseline")
    results_module.plot_curves(normal.out_dir, sweep, [Job("baseline", 0, normal), Job("hot", 0, cfg)])
    assert figures[0].axes[0].get_yscale() == "log"
    results_module.plot_curves(normal.out_dir, sweep, [Job("baseline", 0, normal)])
    assert figures[1].axes[0].get_yscale() == "linear"
