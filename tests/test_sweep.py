"""Sweeps: paired statistics against hand-computed numbers, a micro sweep end to end, resume."""

from __future__ import annotations

import json
import math
import re

import pytest

from slmlab.cli import main
from slmlab.config import ConfigError, load_config
from slmlab.experiments.stats import paired_comparison
from slmlab.experiments.sweep import run_status
from slmlab.experiments.sweep_config import load_sweep


def test_paired_statistics_match_hand_computation():
    baseline = {0: 10.0, 1: 12.0, 2: 11.0, 3: 10.0}
    variant = {0: 9.0, 1: 11.4, 2: 11.55, 3: 9.0}
    # per-seed Δ% = -10, -5, +5, -10 -> mean -5, sample sd = sqrt(((-5)^2 + 0 + 10^2 + (-5)^2) / 3) = sqrt(50)
    c = paired_comparison(variant, baseline)
    assert c.n_pairs == 4 and c.wins == 3
    assert c.delta_pct == pytest.approx(100 * (40.95 / 4 / 10.75 - 1))
    half = 3.182446305284263 * math.sqrt(50) / 2  # t_{0.975, 3} * sd / sqrt(n)
    assert (c.ci_low, c.ci_high) == (pytest.approx(-5 - half), pytest.approx(-5 + half))
    assert c.t_p == pytest.approx(0.2522, abs=1e-4)  # t = -5 / (sqrt(50) / 2) = -1.414, 3 dof, two-sided
    assert c.sign_p == pytest.approx(0.625)  # P(|wins - 2| >= 1) under Binomial(4, 1/2) = 10/16


def test_a_variant_whose_every_run_failed_shows_dashes_not_nan_or_zero_parameters():
    from slmlab.experiments.results import results_table, summarize
    from slmlab.experiments.sweep_config import SweepConfig

    sweep = SweepConfig(name="s", base="b.toml", seeds=[0, 1], variants={"base": {}, "bad": {}}, baseline="base")
    done = {"val_ppl": 9.0, "val_bpb": 3.0, "step": 20, "tokens": 2560, "tokens_per_s": 1e4, "peak_memory_bytes": 1e8}
    results = {("base", 0): {**done, "params": 9920}, ("base", 1): {**done, "params": 9920}}
    results.update({("bad", seed): {"failed": "diverged"} for seed in (0, 1)})
    records = [{**r, "train_flops": math.nan} for r in summarize(sweep, results)]  # write_results adds the FLOPs
    bad = next(r for r in records if r["variant"] == "bad")
    assert bad["params"] is None and bad["runs"] == 0 and bad["failed_runs"] == 2
    row = next(line for line in results_table(records).splitlines() if line.startswith("| bad"))
    assert "nan" not in row and "| 0      |" not in row and row.rstrip(" |").endswith("–")


def test_a_variants_speed_is_the_median_over_its_seeds():
    """One run slowed by other work on the machine (a parallel job) moves the figure little."""
    from slmlab.experiments.results import summarize
    from slmlab.experiments.sweep_config import SweepConfig

    sweep = SweepConfig(name="s", base="b.toml", seeds=[0, 1, 2], variants={"base": {}}, baseline="base")
    done = {"val_ppl": 9.0, "val_bpb": 3.0, "step": 20, "tokens": 2560, "peak_memory_bytes": 1e8, "params": 9920}
    speeds = {0: 1000.0, 1: 1100.0, 2: 100.0}
    (record,) = summarize(sweep, {("base", seed): {**done, "tokens_per_s": speed} for seed, speed in speeds.items()})
    assert record["tokens_per_s"] == 1000.0


def test_a_missing_seed_is_left_out_of_the_pairing():
    c = paired_comparison({0: 9.0, 1: 9.0}, {0: 10.0, 1: 10.0, 2: 10.0})
    assert c.n_pairs == 2 and c.wins == 2 and c.sign_p == pytest.approx(0.5)
    # the Δ% of the means too: the baseline's unlucky seed 2, whose variant run failed, made it -77.5%
    assert paired_comparison({0: 9.0, 1: 9.0}, {0: 10.0, 1: 10.0, 2: 100.0}).delta_pct == pytest.approx(-10.0)


@pytest.mark.slow
def test_micro_sweep_end_to_end_and_resume(micro_sweep, tmp_path, capsys, caplog):
    assert main(["sweep", str(micro_sweep), "--jobs", "2"]) == 0
    out = capsys.readouterr().out
    sweep_dir = tmp_path / "runs" / "micro"
    for name in ("results.md", "results.json", "results.csv", "curves.png"):
        assert (sweep_dir / name).is_file()
    for run in ("baseline_s1", "baseline_s2", "full_s1", "full_s2"):
        assert (sweep_dir / run / "final.safetensors").is_file() and (sweep_dir / run / "metrics.jsonl").is_file()
    results = json.loads((sweep_dir / "results.json").read_text())
    full = next(v for v in results["variants"] if v["variant"] == "full")
    base = next(v for v in results["variants"] if v["variant"] == "baseline")
    ppl = {s: json.loads((sweep_dir / f"full_s{s}" / "summary.json").read_text())["val_ppl"] for s in (1, 2)}
    assert full["val_ppl_mean"] == pytest.approx((ppl[1] + ppl[2]) / 2) and full["runs"] == 2
    assert full["params"] > base["params"] and f"{full['val_ppl_mean']:.3f}" in out
    _, jobs = load_sweep(micro_sweep)
    assert all(run_status(job) == "done" for job in jobs)
    # resume: a finished run is skipped, an interrupted one resumes from its checkpoint
    (sweep_dir / "full_s2" / "summary.json").unlink()
    (sweep_dir / "full_s2" / "final.safetensors").unlink()
    before = (sweep_dir / "baseline_s1" / "final.safetensors").stat().st_mtime_ns
    with caplog.at_level("INFO", logger="slmlab"):
        assert main(["sweep", str(micro_sweep), "--jobs", "4"]) == 0
    assert "1 run to do, 3 done; 1 parallel job," in caplog.text  # one run left takes every core
    assert (sweep_dir / "baseline_s1" / "final.safetensors").stat().st_mtime_ns == before
    assert (sweep_dir / "full_s2" / "summary.json").is_file()
    (sweep_dir / "full_s1" / "final.safetensors").write_bytes(b"damaged")  # skipped as done, it failed every later verb
    assert [run_status(job) for job in jobs if job.run.path.name == "full_s1"] == ["resume"]  # a resume writes it again
    assert main(["sweep", str(micro_sweep)]) == 0
    assert all(run_status(job) == "done" for job in jobs)


def test_variants_see_the_same_data_order(micro_sweep):
    from slmlab.data.sampling import WindowSampler
    from slmlab.data.tokens import prepare_tokens

    _, jobs = load_sweep(micro_sweep)
    batches = {}
    for job in jobs:
        _, data = prepare_tokens(job.config.data)
        sampler = WindowSampler(data.train, job.config.data.seq_len, job.config.train.batch_size, job.config.train.seed)
        batches[(job.variant, job.seed)] = sampler.next_batch()[0]
    assert (batches[("baseline", 1)] == batches[("full", 1)]).all()
    assert not (batches[("baseline", 1)] == batches[("baseline", 2)]).all()


def test_bad_sweep_configs(tmp_path, micro_sweep):
    text = micro_sweep.read_text()
    micro_sweep.write_text(text.replace('"model.smat.use_S" = true', '"model.smat.use_s" = true'))
    with pytest.raises(
        ConfigError, match="variant 'full': unknown config key 'model.smat.use_s' \\(did you mean 'model.smat.use_S'\\?\\)"
    ):
        load_sweep(micro_sweep)
    micro_sweep.write_text(text.replace("seeds = [1, 2]", 'seeds = [1, 2]\nbaseline = "nope"'))
    with pytest.raises(ConfigError, match="baseline 'nope' is not one of the variants"):
        load_sweep(micro_sweep)
    micro_sweep.write_text(text.replace("seeds = [1, 2]", "seeds = [1, 2, 1]"))
    with pytest.raises(ConfigError, match=r"seeds \[1\] appear more than once"):  # one run folder, counted twice
        load_sweep(micro_sweep)
    micro_sweep.write_text(text + "[variants.Full]\n")
    with pytest.raises(ConfigError, match=r"variants \['full', 'Full'\] differ only in case"):
        load_sweep(micro_sweep)
    with pytest.raises(ConfigError, match="is a run config: train it with `slmlab train"):
        load_sweep(micro_sweep.parent / "base.toml")
    with pytest.raises(ConfigError, match="is a sweep config .* run it with `slmlab sweep"):
        load_config(micro_sweep)
    micro_sweep.write_text(text.replace('base = "base.toml"', f'base = "{micro_sweep.name}"'))
    with pytest.raises(ConfigError, match="is a sweep config"):  # was: "unknown config key 'base'"
        load_sweep(micro_sweep)
    micro_sweep.write_text(text + '[variants." "]\n')  # ran as run " _s1", a blank row in the table
    with pytest.raises(ConfigError, match="a variant's name is empty"):
        load_sweep(micro_sweep)
    micro_sweep.write_text(text + '"model" = {smat = {use_S = false}}\n')  # which of the two held was the order's choice
    with pytest.raises(ConfigError, match="variant 'full' sets model.smat.use_S twice .* give it once$"):
        load_sweep(micro_sweep)


def test_info_and_diagnose_of_a_sweep_config_look_at_every_variant(micro_sweep, tmp_path, capsys):
    """They refused a sweep config and advised `slmlab sweep`, which trains every run; `check` took
    it. Each variant's table is the one its own run config gives (the base with its settings)."""
    base = str(tmp_path / "base.toml")
    assert main(["info", str(micro_sweep), "--train.batch_size", "2"]) == 0
    tables = capsys.readouterr().out
    assert main(["info", base, "--train.batch_size", "2", "--train.seed", "1"]) == 0
    baseline = capsys.readouterr().out
    smat = ["--model.smat.use_S", "true", "--model.smat.use_G", "true"]
    assert main(["info", base, "--train.batch_size", "2", "--train.seed", "1", *smat]) == 0
    full = capsys.readouterr().out
    assert baseline != full and tables == f"variant baseline:\n\n{baseline.rstrip()}\n\nvariant full:\n\n{full}"
    assert main(["diagnose", str(micro_sweep), "--steps", "2"]) == 1  # two steps overfit nothing
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["baseline", "baseline", "full", "full"]
    assert "[PASS] loss at init" in lines[2] and "[FAIL] overfit one batch" in lines[3]


@pytest.mark.parametrize(
    ("table", "says"),
    [
        ("[budget]\n", "[budget] asks for nothing: give one of tokens, flops or seconds"),
        ("[tune]\nsteps = 4\n", "[tune] asks for nothing: give values to try for lr, warmup_steps or weight_decay"),
        ("[tune]\nlr = []\n", "[tune] asks for nothing"),
        ("[lm_eval]\ntasks = []\n", "[lm_eval] asks for nothing: give its tasks"),
        ("lm_eval = 3\n", "lm_eval: expected a table ([lm_eval] or lm_eval = {...}), got int 3"),
    ],
)
def test_a_table_that_asks_for_nothing_is_refused(micro_sweep, capsys, table, says):
    """An empty [budget] ran the sweep at equal steps, an empty [tune] tuned nothing, in silence."""
    text = micro_sweep.read_text()
    micro_sweep.write_text(table + text if "=" in table.split("\n")[0] else text + table)
    assert main(["sweep", str(micro_sweep), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and "\n" not in err


def test_a_shared_setting_one_variant_ignores_is_kept_for_the_variants_that_read_it(micro_sweep):
    """SMAT's s_dim in [overrides] is read by the 'full' variant, ignored by the baseline: the
    baseline's run used to be refused ("remove it"), which a sweep cannot do for one variant. A
    variant's own ignored setting, and a shared one no variant reads, are still refused."""
    text = micro_sweep.read_text()
    micro_sweep.write_text(text.replace("[variants.baseline]", '[overrides]\n"model.smat.s_dim" = 8\n[variants.baseline]'))
    _, jobs = load_sweep(micro_sweep)
    assert {job.variant: job.config.model.smat.s_dim for job in jobs} == {"baseline": 8, "full": 8}
    micro_sweep.write_text(text.replace("[variants.baseline]", '[variants.baseline]\n"model.smat.s_dim" = 8'))
    with pytest.raises(ConfigError, match="^variant 'baseline': model.smat.s_dim = 8 is read only with model.smat.use_S or"):
        load_sweep(micro_sweep)
    micro_sweep.write_text(text.replace("[variants.baseline]", '[overrides]\n"model.rope_theta" = 500.0\n[variants.baseline]'))
    with pytest.raises(
        ConfigError, match='model.rope_theta = 500.0 is ignored with model.pos = "learned"; remove it \\(every variant'
    ):
        load_sweep(micro_sweep)


def test_a_phase_setting_is_refused_only_where_every_variant_ignores_it(micro_sweep, micro_toml):
    """A curriculum's phase B scales RoPE: kept while one variant rotates, refused when none does."""
    micro_toml.write_text(
        micro_toml.read_text().replace("steps = 12\n", "")
        + '[[phases]]\nname = "A"\nsteps = 2\n[[phases]]\nname = "B"\nsteps = 2\nrope_scale = 2.0\n'
    )
    text = micro_sweep.read_text()
    micro_sweep.write_text(text.replace("[variants.full]", '[variants.full]\n"model.pos" = "rope"'))
    _, jobs = load_sweep(micro_sweep)
    assert {job.variant: job.config.phase(1).model.rope_scale for job in jobs} == {"baseline": 2.0, "full": 2.0}
    micro_sweep.write_text(text)
    with pytest.raises(
        ConfigError, match=re.escape('phases[1] (B): model.rope_scale = 2.0 is ignored with model.pos = "learned"')
    ):
        load_sweep(micro_sweep)


def test_a_sweep_with_an_empty_out_dir_is_refused(micro_sweep):
    """Its runs went to a folder named after the sweep in the working directory; a run config's
    empty out_dir was already refused."""
    micro_sweep.write_text(micro_sweep.read_text().replace(f'out_dir = "{micro_sweep.parent / "runs"}"', 'out_dir = ""'))
    with pytest.raises(ConfigError, match="out_dir is empty: name the folder that holds the sweep's folder"):
        load_sweep(micro_sweep)


def test_a_sweep_named_like_an_existing_run_is_refused(micro_sweep, micro_toml, tmp_path):
    from slmlab.cli import main

    assert main(["train", str(micro_toml), "--name", "micro", "--train.steps", "2", "--no-progress"]) == 0
    with pytest.raises(ConfigError, match="runs/micro is a run, not a sweep's folder"):
        load_sweep(micro_sweep)
    assert sorted(p.name for p in (tmp_path / "runs" / "micro").iterdir() if p.is_dir()) == ["checkpoints"]


@pytest.mark.parametrize(
    "added, extra, where",
    [
        ('[variants.seeded]\n"train.seed" = 7\n', {}, "variant 'seeded' sets train.seed"),
        ("[variants.seeded.train]\nseed = 7\n", {}, "variant 'seeded' sets train.seed"),
        ('[variants.named]\nname = "x"\n', {}, "variant 'named' sets name"),
        ("", {"train.seed": 3}, "the command line sets train.seed"),
        ("", {"out_dir": "elsewhere"}, "the command line sets out_dir"),
        ('[tune]\nlr = [1e-3, 3e-3]\n[variants.hot]\n"train.lr" = 0.5\n', {}, "variant 'hot' sets train.lr"),
        ("[budget]\ntokens = 100000\n", {"train.steps": 9}, "the command line sets train.steps"),
    ],
)
def test_a_setting_the_sweep_makes_for_every_run_is_refused_not_replaced(micro_sweep, added, extra, where):
    """Each run's seed, name and folder come from the sweep: a variant's own train.seed was dropped in silence."""
    micro_sweep.write_text(micro_sweep.read_text() + added)
    with pytest.raises(ConfigError, match=f"{where}, which the sweep sets for every run from its"):
        load_sweep(micro_sweep, extra)


@pytest.mark.slow
def test_one_seed_results_are_standard_json_with_an_unknown_spread(micro_sweep, tmp_path, capsys):
    """With one seed the spread and every interval are undefined: null in results.json (json.dumps
    wrote NaN, which jq and JavaScript refuse) and '–' in the table, never a spread of 0."""
    micro_sweep.write_text(micro_sweep.read_text().replace("seeds = [1, 2]", "seeds = [1]"))
    assert main(["sweep", str(micro_sweep), "--jobs", "1"]) == 0
    sweep_dir = tmp_path / "runs" / "micro"

    def refuse(constant):
        raise ValueError(f"not standard JSON: {constant}")

    results = json.loads((sweep_dir / "results.json").read_text(), parse_constant=refuse)
    full = next(v for v in results["variants"] if v["variant"] == "full")
    assert full["runs"] == 1 and full["val_ppl_std"] is None and full["ci_low"] is None
    row = next(line for line in (sweep_dir / "results.md").read_text().splitlines() if line.startswith("| full"))
    assert row.split("|")[4].strip() == "–"
    capsys.readouterr()
    assert main(["eval", str(sweep_dir / "full_s1"), "--batches", "1", "--json"]) == 0
    json.loads(capsys.readouterr().out, parse_constant=refuse)


@pytest.mark.slow
def test_a_run_trained_with_other_settings_is_never_reused(micro_sweep, tmp_path, capsys):
    """Changing a variant's setting and running the sweep again skipped its finished runs, whose
    results then stood in the table under the new setting; more steps train them on."""
    micro_sweep.write_text(micro_sweep.read_text().replace("seeds = [1, 2]", "seeds = [1]"))
    assert main(["sweep", str(micro_sweep), "--jobs", "1"]) == 0
    run = tmp_path / "runs" / "micro" / "full_s1"
    weights = (run / "final.safetensors").read_bytes()
    capsys.readouterr()
    assert main(["sweep", str(micro_sweep), "--jobs", "1", "--model.smat.s_dim", "8"]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'runs' / 'micro' / 'baseline_s1'} was trained with other settings" in err
    assert "model.smat.s_dim" in err and (run / "final.safetensors").read_bytes() == weights
    assert main(["sweep", str(micro_sweep), "--dry-run", "--model.smat.s_dim", "8"]) == 0
    assert "[trained with other settings]" in capsys.readouterr().out
    assert main(["sweep", str(micro_sweep), "--jobs", "1", "--train.steps", "18"]) == 0  # trains both runs on
    assert json.loads((run / "summary.json").read_text())["step"] == 18
    capsys.readouterr()
    assert main(["sweep", str(micro_sweep), "--jobs", "1"]) == 2  # back to fewer steps than the runs trained
    assert "train.steps: 18 -> 12" in capsys.readouterr().err


@pytest.mark.slow
def test_runs_trained_on_a_corpus_that_changed_between_them_are_not_compared(micro_sweep, tmp_path, capsys):
    """A finished run was kept from an earlier sweep and a new seed trained on the edited corpus:
    the table compared them as if they saw the same text."""
    import shutil

    micro_sweep.write_text(micro_sweep.read_text().replace("seeds = [1, 2]", "seeds = [1]"))
    assert main(["sweep", str(micro_sweep), "--jobs", "1"]) == 0
    doc = tmp_path / "corpus" / "prose" / "doc00.txt"
    doc.write_text(doc.read_text() * 2)  # the same characters: only the text changed
    micro_sweep.write_text(micro_sweep.read_text().replace("seeds = [1]", "seeds = [1, 2]"))
    capsys.readouterr()
    assert main(["sweep", str(micro_sweep), "--jobs", "1"]) == 2
    err = capsys.readouterr().err
    assert "trained on different text under the same data settings" in err and "\n" not in err.strip()
    for variant in ("baseline", "full"):
        shutil.rmtree(tmp_path / "runs" / "micro" / f"{variant}_s1")
    assert main(["sweep", str(micro_sweep), "--jobs", "1"]) == 0


@pytest.mark.slow
def test_a_sweep_whose_corpus_moved_keeps_its_runs_and_adds_seeds(micro_sweep, tmp_path, capsys):
    """With the corpus moved and the base config naming its new place, every finished run was
    'trained with other settings (data.source ...)', and the fix offered was to delete them. Such
    runs are now resumed as they are (their token streams checked, their configs recording the new
    place, no step trained), and new seeds train beside them."""
    import shutil

    from tests.conftest import write_micro_toml

    micro_sweep.write_text(micro_sweep.read_text().replace("seeds = [1, 2]", "seeds = [1]"))
    assert main(["sweep", str(micro_sweep), "--jobs", "1"]) == 0
    sweep_dir = tmp_path / "runs" / "micro"
    weights = {name: (sweep_dir / name / "final.safetensors").read_bytes() for name in ("baseline_s1", "full_s1")}
    moved = (tmp_path / "corpus").rename(tmp_path / "moved")
    write_micro_toml(tmp_path / "base.toml", moved, tmp_path)
    micro_sweep.write_text(micro_sweep.read_text().replace("seeds = [1]", "seeds = [1, 2]"))
    capsys.readouterr()
    assert main(["sweep", str(micro_sweep), "--jobs", "1"]) == 0
    for name in ("baseline_s1", "full_s1", "baseline_s2"):
        assert json.loads((sweep_dir / name / "config.json").read_text())["data"]["source"] == str(moved)
    assert all((sweep_dir / name / "final.safetensors").read_bytes() == data for name, data in weights.items())
    assert json.loads((sweep_dir / "full_s1" / "summary.json").read_text())["step"] == 12
    other = tmp_path / "other"  # another corpus in another place: checked, refused, nothing recorded
    shutil.copytree(moved, other)
    (other / "prose" / "doc00.txt").write_text((other / "prose" / "doc00.txt").read_text() * 2)
    write_micro_toml(tmp_path / "base.toml", other, tmp_path)
    capsys.readouterr()
    assert main(["sweep", str(micro_sweep), "--jobs", "1"]) == 1
    assert "trained on other data than data.source" in capsys.readouterr().err
    assert json.loads((sweep_dir / "full_s1" / "config.json").read_text())["data"]["source"] == str(moved)


@pytest.mark.slow
def test_a_sweep_with_a_failed_run_writes_its_table_and_exits_1(micro_toml, tmp_path, capsys):
    """One run failing (here: windows longer than its validation text) leaves the others trained
    and the table written, and the exit status says the table is not whole (it was 0)."""
    sweep = tmp_path / "failing.toml"
    sweep.write_text(f"""
name = "failing"
base = "base.toml"
out_dir = "{tmp_path / "runs"}"
seeds = [1]
[variants.baseline]
[variants.long]
"data.seq_len" = 20000
"model.block_size" = 20000
""")
    assert main(["sweep", str(sweep)]) == 1
    captured = capsys.readouterr()
    assert "| long " in captured.out and (tmp_path / "runs" / "failing" / "results.md").is_file()
    error = captured.err.strip().splitlines()[-1]
    assert error.startswith("slmlab: 1 of 2 runs failed (the failures column); ") and "long_s1: the validation split" in error
    assert main(["sweep", str(sweep), "--only", "1"]) == 1  # a cluster task whose run fails
    assert "long_s1: the validation split has" in capsys.readouterr().out
    assert main(["sweep", str(sweep), "--only", "0"]) == 0


def test_a_sweep_worker_logs_its_run_s_evaluations(tmp_path, micro_toml, capfd):
    """A spawned worker's logging was unset: its run's lines per evaluation were dropped, and a
    sweep of hour-long runs said nothing between "N runs to do" and the first run's end."""
    sweep = tmp_path / "logs.toml"
    sweep.write_text(f'name = "logs"\nout_dir = "{tmp_path / "runs"}"\nbase = "{micro_toml}"\nseeds = [0]\n[variants.a]\n')
    assert main(["sweep", str(sweep)]) == 0
    err = capfd.readouterr().err
    assert "a_s0 step 6/12: loss " in err and "a_s0 step 12/12: loss " in err
