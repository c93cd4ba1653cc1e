"""`ablate SWEEP`: each run ablated as `ablate RUN` does, then each variant's interventions over
its seeds (mean Δ%, its 95% CI over the seeds, the seeds it hurt), checked against the runs' own
ablations.json and scipy's t."""

from __future__ import annotations

import json
import math

import pytest

from slmlab.cli import main


def test_a_sweep_is_ablated_run_by_run_and_summarised_over_its_seeds(micro_sweep, tmp_path, capsys):
    from scipy import stats

    assert main(["sweep", str(micro_sweep)]) == 0
    sweep = tmp_path / "runs" / "micro"
    capsys.readouterr()
    assert main(["ablate", str(sweep), "--n-batches", "2"]) == 0
    printed = capsys.readouterr().out
    result = json.loads((sweep / "ablations.json").read_text())
    assert list(result["variants"]) == ["full"]  # the baseline declares no interventions without --layers
    assert set(result["weights"]) == {"full_s1", "full_s2"} and (sweep / "ablations.md").is_file()
    for name, row in result["variants"]["full"].items():
        per_run = {
            s: json.loads((sweep / f"full_s{s}" / "ablations.json").read_text())["interventions"][name]["delta_pct"]
            for s in (1, 2)
        }
        assert row["delta_pct"] == {str(s): v for s, v in per_run.items()}  # JSON keys are text
        values = list(per_run.values())
        mean = sum(values) / 2
        half = stats.t.ppf(0.975, 1) * (abs(values[0] - values[1]) / math.sqrt(2)) / math.sqrt(2)  # t · sd / √n
        assert row["mean"] == pytest.approx(mean)
        assert (row["delta_pct_low"], row["delta_pct_high"]) == pytest.approx((mean - half, mean + half))
        assert row["hurt"] == sum(v > 0 for v in values)
        assert row["p"] == pytest.approx(stats.ttest_1samp(values, 0.0).pvalue, rel=1e-6)
        assert f"| {name} " in printed
    p_values = {name: row["p"] for name, row in result["variants"]["full"].items()}
    m = len(p_values)
    for rank, name in enumerate(sorted(p_values, key=p_values.get)):  # Holm over the variant's interventions
        expected = max(min(1.0, (m - k) * p_values[n]) for k, n in enumerate(sorted(p_values, key=p_values.get)[: rank + 1]))
        assert result["variants"]["full"][name]["holm_p"] == pytest.approx(expected)
    from slmlab.variants.smat import route_shares

    means = result["variants"]["full"]
    shares = route_shares(means["lambda_zero"]["mean"], means["s_removed"]["mean"])
    assert result["summaries"]["full"]["s_effect_share"] == pytest.approx(dict(zip(("attention_bias", "gate"), shares)))
    assert "From the means over seeds: S's effect" in printed
    for s in (1, 2):  # and what each seed's own ablation reads: how far the seeds agree
        own = json.loads((sweep / f"full_s{s}" / "ablations.json").read_text())["s_effect_share"]
        by_seed = result["summaries_by_seed"]["full"][str(s)]
        assert by_seed == pytest.approx({f"s_effect_share.{k}": v for k, v in own.items()})
    assert "Each seed's own (1, 2): s_effect_share.attention_bias" in printed
    assert main(["ablate", str(sweep), "--layers", "--n-batches", "2"]) == 0
    result = json.loads((sweep / "ablations.json").read_text())
    assert list(result["variants"]) == ["baseline", "full"] and "blocks.0 attention = 0" in result["variants"]["baseline"]
    assert main(["report", str(sweep)]) == 0
    assert "## Surgical ablations over seeds" in (sweep / "report.md").read_text()
    record = json.loads((sweep / "ablations.json").read_text())
    record["weights"]["full_s1"] = "0" * 64  # as if full_s1 had trained on since
    (sweep / "ablations.json").write_text(json.dumps(record))
    assert main(["report", str(sweep)]) == 0
    report = (sweep / "report.md").read_text()
    assert f"rerun `slmlab ablate {sweep} --layers` to update" in report
    assert "other weights than its runs' current ones (one of them trained on, finished or was removed since)" in report


def test_a_sweep_ablation_records_the_weights_it_ablated_not_those_written_during_it(micro_sweep, tmp_path, monkeypatch):
    """Each run's weights are recorded as they were before the run was loaded: a run retrained
    while the command ran was recorded with its new weights, so the report called the table current."""
    from slmlab.evals import ablate as ablate_module

    assert main(["sweep", str(micro_sweep)]) == 0
    sweep = tmp_path / "runs" / "micro"
    summary = sweep / "full_s1" / "summary.json"
    before = json.loads(summary.read_text())["final_sha256"]
    real_load = ablate_module.load_run

    def load_then_retrain(run_path, device):
        loaded = real_load(run_path, device)
        if run_path == sweep / "full_s1":  # as if `slmlab train --resume` rewrote it meanwhile
            record = json.loads(summary.read_text())
            summary.write_text(json.dumps({**record, "final_sha256": "f" * 64}))
        return loaded

    monkeypatch.setattr(ablate_module, "load_run", load_then_retrain)
    assert main(["ablate", str(sweep), "--n-batches", "2"]) == 0
    assert json.loads((sweep / "ablations.json").read_text())["weights"]["full_s1"] == before
    assert json.loads((sweep / "full_s1" / "ablations.json").read_text())["weights_sha256"] == before
