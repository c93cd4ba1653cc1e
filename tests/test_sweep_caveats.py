"""Where a sweep's table compares something other than what it seems to (experiments/caveats.py):
variants with the same settings, variants validated on other text, variants whose perplexity
counts other units (another tokenizer)."""

from __future__ import annotations

import json
import math

from slmlab.cli import main
from slmlab.config import load_config
from slmlab.experiments.caveats import caveats, other_units
from slmlab.experiments.results import results_table, summarize
from slmlab.experiments.sweep_config import SweepConfig, load_sweep


def test_variants_with_the_same_settings_are_named_in_a_warning(micro_sweep, caplog):
    """A variant table copied and left unedited, or one that sets a default (use_S = false), trains
    the baseline's model on the baseline's batches: a comparison of nothing, reported as a result."""
    text = micro_sweep.read_text()
    micro_sweep.write_text(text + '[variants.copy]\n"model.smat.use_S" = false\n[variants.same_width]\n"model.d_model" = 16\n')
    with caplog.at_level("WARNING", logger="slmlab"):
        load_sweep(micro_sweep)
    warnings = [r.getMessage() for r in caplog.records if "have the same settings" in r.getMessage()]
    assert len(warnings) == 2 and all(w.startswith(f"{micro_sweep}: variants 'baseline' and ") for w in warnings), warnings
    assert "'copy'" in warnings[0] and "'same_width'" in warnings[1] and "change or remove one" in warnings[0]
    caplog.clear()
    micro_sweep.write_text(text)
    with caplog.at_level("WARNING", logger="slmlab"):
        load_sweep(micro_sweep)
    assert not caplog.records


def test_variants_validated_on_other_text_are_named_and_spellings_of_one_corpus_are_not(micro_toml, tmp_path, monkeypatch):
    base = load_config(micro_toml)
    monkeypatch.chdir(tmp_path)
    corpus = base.data.source
    configs = {
        "baseline": base,
        "other_split": load_config(micro_toml, {"data.val_fraction": 0.2, "model.d_model": 32}),
        "relative": load_config(micro_toml, {"data.source": f"./{corpus.split('/')[-1]}", "model.d_model": 8}),
    }
    assert (tmp_path / corpus.split("/")[-1]).exists()  # the relative spelling names the same corpus
    (note,) = caveats(configs, "baseline")
    assert note.startswith("variant 'other_split' is validated on other text than the baseline (data.val_fraction = 0.2 vs 0.1)")
    assert "slmlab eval SWEEP --text FILE" in note and not other_units(configs, "baseline")
    configs["longer"] = load_config(micro_toml, {"data.seq_len": 16, "model.n_layer": 3})
    assert caveats(configs, "baseline")[1] == (
        "variant 'longer' is scored on windows of 16 tokens, the baseline on 32 (data.seq_len): a token's loss falls with "
        "the context before it, so its Δ counts the windows' length as well as the model; give both one data.seq_len to "
        "compare the models alone"
    )


def test_a_variant_with_another_tokenizer_gets_no_statistics_on_perplexity(micro_toml):
    """A byte model's perplexity per byte and a char model's per character are other units: the
    table compared them as Δ% (+49%), with a t-test and seed wins. Bits per byte compares them."""
    configs = {
        "baseline": load_config(micro_toml),
        "bytes": load_config(micro_toml, {"data.tokenizer": "byte"}),
        "deeper": load_config(micro_toml, {"model.n_layer": 2}),
    }
    assert other_units(configs, "baseline") == {"bytes"}
    (note,) = caveats(configs, "baseline")
    assert note.startswith('variant \'bytes\' has another tokenizer than the baseline (data.tokenizer = "byte" vs "char")')
    sweep = SweepConfig(name="s", base="b.toml", seeds=[0, 1, 2], variants={name: {} for name in configs}, baseline="baseline")
    done = {"step": 20, "tokens": 2560, "tokens_per_s": 1e4, "peak_memory_bytes": 1e8, "params": 9920}
    figures = {"baseline": (9.0, 3.2), "bytes": (13.4, 3.0), "deeper": (8.5, 3.1)}  # (ppl, bpb) at seed 0
    results = {
        (variant, seed): {**done, "val_ppl": ppl + 0.1 * seed * (variant == "deeper"), "val_bpb": bpb - 0.01 * seed}
        for variant, (ppl, bpb) in figures.items()
        for seed in (0, 1, 2)
    }
    records = {r["variant"]: {**r, "train_flops": math.nan} for r in summarize(sweep, results, frozenset({"bytes"}))}
    apart, kept = records["bytes"], records["deeper"]
    assert apart["wins"] is None and all(math.isnan(apart[key]) for key in ("delta_pct", "ci_low", "t_p", "sign_p", "holm_p"))
    assert math.isclose(apart["delta_bpb"], -0.2)  # bits per byte still compares it
    assert kept["wins"] == 3 and math.isclose(kept["holm_p"], kept["t_p"])  # Holm over one comparison: bytes is left out
    row = next(line for line in results_table(list(records.values())).splitlines() if line.startswith("| bytes"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[5].startswith("-0.2000") and cells[6:8] == ["–", "–"] and cells[9:14] == ["–"] * 5


def test_the_notes_stand_under_the_results_table(micro_sweep, capsys):
    micro_sweep.write_text(
        micro_sweep.read_text().replace(
            '[variants.full]\n"model.smat.use_S" = true', '[variants.full]\n"data.tokenizer" = "byte"\n"model.smat.use_S" = true'
        )
    )
    assert main(["sweep", str(micro_sweep), "--jobs", "2"]) == 0
    out = capsys.readouterr().out
    results = (micro_sweep.parent / "runs" / "micro" / "results.md").read_text()
    note = '- Note: variant \'full\' has another tokenizer than the baseline (data.tokenizer = "byte" vs "char")'
    assert note in out and note in results and results.index(note) < results.index("| variant")
    notes = json.loads((micro_sweep.parent / "runs" / "micro" / "results.json").read_text())["notes"]
    assert len(notes) == 1 and notes[0].startswith(note.removeprefix("- Note: "))
    row = next(line for line in results.splitlines() if line.startswith("| full"))
    assert [cell.strip() for cell in row.strip("|").split("|")][6:8] == ["–", "–"]


def test_a_variant_that_trains_on_other_tokens_without_a_budget_is_named(micro_toml):
    """More steps, or a larger batch at the same steps, is more training: without a [budget] its Δ
    counts that as well as the idea. Under a [budget] the steps differ by design: no note."""
    configs = {
        "baseline": load_config(micro_toml),
        "longer": load_config(micro_toml, {"train.steps": 24}),
        "batch": load_config(micro_toml, {"train.batch_size": 2, "model.n_layer": 2}),
        "accumulated": load_config(micro_toml, {"train.batch_size": 2, "train.grad_accum": 2, "model.n_layer": 3}),
    }
    notes = caveats(configs, "baseline")
    assert notes == [
        "variant 'longer' trains on 2x the baseline's tokens (3.07K vs 1.54K: train.steps x batch_size x seq_len x "
        "grad_accum) and the sweep has no [budget]: its Δ counts the training as well as the idea; a [budget] of "
        "tokens or flops compares at equal cost",
        "variant 'batch' trains on 0.5x the baseline's tokens (768 vs 1.54K: train.steps x batch_size x seq_len x "
        "grad_accum) and the sweep has no [budget]: its Δ counts the training as well as the idea; a [budget] of "
        "tokens or flops compares at equal cost",
    ]  # 'accumulated' trains on as many tokens as the baseline
    assert caveats(configs, "baseline", budget=True) == []


def test_the_table_says_equal_steps_only_where_the_steps_are_equal(micro_sweep):
    micro_sweep.write_text(micro_sweep.read_text() + '"train.steps" = 6\n')  # the 'full' variant's own steps
    assert main(["sweep", str(micro_sweep), "--jobs", "2"]) == 0
    results = (micro_sweep.parent / "runs" / "micro" / "results.md").read_text()
    assert "Equal steps" not in results and "No [budget], and the variants train their own numbers of steps" in results
    assert "- Note: variant 'full' trains on 0.5x the baseline's tokens" in results


def test_runs_whose_speed_was_measured_in_other_settings_are_noted(micro_sweep):
    """A sweep run again with another --jobs trains its remaining runs with other thread counts:
    their tokens/s then compare the settings as well as the variants."""
    from slmlab.experiments.caveats import speed_caveat

    assert speed_caveat([("cpu", 1), ("cpu", 1)]) == []
    (note,) = speed_caveat([("cpu", 1), ("cpu", 2), ("auto", 0)])
    assert note.startswith(
        "the runs' tokens/s were measured in different settings (auto with its default threads, cpu with 1 thread, "
        "cpu with 2 threads:"
    )
    assert main(["sweep", str(micro_sweep), "--jobs", "2"]) == 0
    runs = micro_sweep.parent / "runs" / "micro"
    assert "tokens/s were measured" not in (runs / "results.md").read_text()
    config = json.loads((runs / "full_s2" / "config.json").read_text())
    config["train"]["threads"] += 1  # as a later `slmlab sweep` with other --jobs trains the runs it has left
    (runs / "full_s2" / "config.json").write_text(json.dumps(config))
    assert main(["sweep", str(micro_sweep), "--jobs", "2"]) == 0
    assert "- Note: the runs' tokens/s were measured in different settings (cpu with " in (runs / "results.md").read_text()


def test_curves_of_variants_with_other_tokenizers_are_drawn_in_bits_per_byte(micro_sweep, monkeypatch):
    """A byte model's loss per byte and a char model's per character drawn on one axis showed the
    byte model far ahead or behind by units alone."""
    import slmlab.experiments.results as results_module
    from slmlab.runs import RunDir

    drawn = {}
    real = results_module.save_png

    def keep(fig, path, **options):
        if path.name == "curves.png":
            ax = fig.axes[0]
            drawn.update(label=ax.get_ylabel(), lines={line.get_label(): list(line.get_ydata()) for line in ax.lines})
        return real(fig, path, **options)

    monkeypatch.setattr(results_module, "save_png", keep)
    text = micro_sweep.read_text().replace("seeds = [1, 2]", "seeds = [1]")
    micro_sweep.write_text(text.replace('"model.smat.use_S" = true', '"data.tokenizer" = "byte"\n"model.smat.use_S" = true'))
    assert main(["sweep", str(micro_sweep)]) == 0
    runs = micro_sweep.parent / "runs" / "micro"
    assert drawn["label"] == "validation bits per byte"
    for variant in ("baseline", "full"):
        bpb = [r["val_bpb"] for r in RunDir(runs / f"{variant}_s1").read_metrics() if r.get("val_bpb") is not None]
        assert drawn["lines"][f"{variant} (n=1)"] == bpb
