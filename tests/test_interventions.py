"""Each SMAT intervention changes exactly what it says, and `slmlab ablate` reports them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from slmlab.model.interventions import applicable, intervene
from slmlab.registry import INTERVENTIONS
from slmlab.variants.smat import route_shares
from tests.test_smat import smat_model

SMAT = INTERVENTIONS["smat"]


def same_weights(target, source):
    """Copy every parameter of `target` from `source` (which may have more); return the target."""
    wanted = target.state_dict()
    result = target.load_state_dict({k: v for k, v in source.state_dict().items() if k in wanted}, strict=False)
    assert not result.missing_keys
    return target


@pytest.fixture
def idx():
    torch.manual_seed(3)
    return torch.randint(0, 37, (2, 20))


def test_lambda_zero_makes_s_only_equal_to_baseline(idx):
    s_only = smat_model("s_only").eval()
    baseline = same_weights(smat_model("baseline"), s_only).eval()
    with intervene(s_only, SMAT["lambda_zero"]):
        torch.testing.assert_close(s_only(idx)[0], baseline(idx)[0], rtol=1e-12, atol=1e-12)
    assert not torch.allclose(s_only(idx)[0], baseline(idx)[0])  # and the hook was removed afterwards


def test_gate_one_equals_the_use_G_false_path(idx):
    full = smat_model("full").eval()
    s_only = same_weights(smat_model("s_only"), full).eval()
    with intervene(full, SMAT["gate_one"]):
        torch.testing.assert_close(full(idx)[0], s_only(idx)[0], rtol=1e-12, atol=1e-12)


def test_s_removed_equals_a_gate_without_centrality(idx):
    full = smat_model("full").eval()
    g_only = same_weights(smat_model("g_only"), full).eval()
    with torch.no_grad():
        for module in g_only.modules():
            if hasattr(module, "mu"):
                module.mu.zero_()
    with intervene(full, SMAT["s_removed"]):
        torch.testing.assert_close(full(idx)[0], g_only(idx)[0], rtol=1e-12, atol=1e-12)


def test_gate_mean_is_constant_over_tokens_and_random_s_keeps_the_norm(idx):
    full = smat_model("full").eval()
    seen = {}
    gate_point = full.blocks[0].attn.extensions[0].hook_gate
    with intervene(full, SMAT["gate_mean"]):  # an observer registered after the intervention sees its output
        handle = gate_point.register_forward_hook(lambda m, a, out: seen.__setitem__("gate", out))
        full(idx)
    handle.remove()
    assert torch.allclose(seen["gate"], seen["gate"][0, 0].expand_as(seen["gate"]))
    s_point = full.blocks[0].attn.extensions[0].hook_s
    observe = lambda m, a, out: seen.setdefault("s", []).append(out)
    handle = s_point.register_forward_hook(observe)
    full(idx)
    handle.remove()
    with intervene(full, SMAT["random_s"]):
        handle = s_point.register_forward_hook(observe)
        first = full(idx)[0]
        second = full(idx)[0]
    handle.remove()
    original, replaced = seen["s"][0], seen["s"][1]
    gram = lambda s: torch.linalg.matrix_norm(s @ s.transpose(1, 2))  # ||S||_F with S = s s^T, naive
    torch.testing.assert_close(gram(replaced), gram(original))
    assert not torch.allclose(replaced, original)
    with intervene(full, SMAT["random_s"]):
        torch.testing.assert_close(full(idx)[0], first)  # reproducible on each application
    assert not torch.equal(first, second)


def test_applicable_interventions_follow_the_variant():
    assert applicable(smat_model("baseline")) == []
    assert {i.name for i in applicable(smat_model("s_only"))} == {"lambda_zero", "random_s"}
    assert {i.name for i in applicable(smat_model("full"))} == set(SMAT)


def test_route_shares():
    assert route_shares(0.5, 2.0) == (0.25, 0.75)


def _ablated_full_smat_run(text_corpus, make_config, capsys, n_batches: int) -> tuple[str, dict]:
    """(what `slmlab ablate` printed, its ablations.json) for a full SMAT run trained on text_corpus."""
    from slmlab.cli import main
    from slmlab.runs.run_dir import RunDir
    from slmlab.training import train

    cfg = make_config(text_corpus, model={"smat": {"use_S": True, "use_G": True}})
    train(cfg, progress=False)
    run = RunDir.for_config(cfg).path
    assert main(["ablate", str(run), "--n-batches", str(n_batches)]) == 0
    assert (run / "ablations.md").is_file()
    return capsys.readouterr().out, json.loads((run / "ablations.json").read_text())


def test_ablate_command_on_a_trained_full_smat_run(text_corpus, make_config, capsys):
    from slmlab.cli import main
    from slmlab.runs.run_dir import RunDir
    from slmlab.training import train

    out, result = _ablated_full_smat_run(text_corpus, make_config, capsys, 2)
    assert set(result["interventions"]) == {"unmodified", *SMAT}
    shares = result["s_effect_share"]
    assert shares["attention_bias"] + shares["gate"] == pytest.approx(1.0)
    assert "through the attention bias" in out
    baseline_cfg = make_config(text_corpus)
    baseline_cfg.name = "plain"
    train(baseline_cfg, progress=False)
    plain = RunDir.for_config(baseline_cfg).path
    assert main(["ablate", str(plain)]) == 2
    err = capsys.readouterr().err
    assert "declares no interventions" in err and "add --layers" in err
    assert main(["ablate", str(plain), "--layers", "--n-batches", "2"]) == 0
    rows = json.loads((plain / "ablations.json").read_text())["interventions"]
    assert list(rows) == ["unmodified"] + [f"blocks.{i} {part} = 0" for i in range(2) for part in ("attention", "MLP")]
    assert all(r["val_ppl"] != rows["unmodified"]["val_ppl"] for name, r in rows.items() if name != "unmodified")
    assert main(["ablate", str(plain), "--heads", "--n-batches", "2"]) == 0
    rows = json.loads((plain / "ablations.json").read_text())["interventions"]
    n_head = baseline_cfg.model.n_head
    assert list(rows) == ["unmodified"] + [f"blocks.{i}.attn head {h} = 0" for i in range(2) for h in range(n_head)]


class Zero(torch.nn.Module):
    def forward(self, x, *args):
        return torch.zeros_like(x)


@pytest.mark.parametrize("layer, part", [(0, "attn"), (1, "attn"), (0, "mlp"), (2, "mlp")])
def test_a_layer_ablation_equals_the_model_with_that_sublayer_replaced_by_zero(layer, part, idx):
    """Naive reference: the same weights with the sublayer's module swapped for one returning zeros."""
    import copy

    from slmlab.config import ModelConfig
    from slmlab.model import build_model
    from slmlab.model.interventions import layer_ablations

    torch.manual_seed(0)
    model = build_model(ModelConfig(vocab_size=37, n_layer=3, n_head=2, d_model=32, block_size=32)).eval()
    by_name = {i.name: i for i in layer_ablations(model)}
    assert len(by_name) == 6
    with torch.no_grad(), intervene(model, by_name[f"blocks.{layer} {'attention' if part == 'attn' else 'MLP'} = 0"]):
        ablated, _ = model(idx)
    reference = copy.deepcopy(model)
    setattr(reference.blocks[layer], part, Zero())
    with torch.no_grad():
        expected, _ = reference(idx)
        untouched, _ = model(idx)
    torch.testing.assert_close(ablated, expected, rtol=0, atol=0)
    assert not torch.allclose(untouched, expected)


@pytest.mark.parametrize("arch, layer, head", [("decoder", 0, 0), ("decoder", 2, 1), ("tape", 0, 1)])
def test_a_head_ablation_equals_the_model_with_that_heads_output_projection_columns_zeroed(arch, layer, head, idx):
    """Naive reference: attn(x) = W_o concat(z_1..z_H) + b, so zeroing z_h equals zeroing the
    columns of W_o that read head h, in a copy of the weights; every other head's columns kept."""
    import copy

    from slmlab.config import ModelConfig
    from slmlab.model import build_model
    from slmlab.model.attention import CausalSelfAttention
    from slmlab.model.interventions import head_ablations

    torch.manual_seed(0)
    model = build_model(ModelConfig(vocab_size=37, n_layer=3, n_head=2, d_model=32, block_size=32, arch=arch)).eval()
    attention = [name for name, m in model.named_modules() if isinstance(m, CausalSelfAttention)]
    by_name = {i.name: i for i in head_ablations(model)}
    assert list(by_name) == [f"{name} head {h} = 0" for name in attention for h in range(2)]
    name = attention[layer]
    with torch.no_grad(), intervene(model, by_name[f"{name} head {head} = 0"]):
        ablated, _ = model(idx)
    reference = copy.deepcopy(model)
    with torch.no_grad():
        reference.get_submodule(name).proj.weight[:, head * 16 : (head + 1) * 16] = 0
        expected, _ = reference(idx)
        untouched, _ = model(idx)
    torch.testing.assert_close(ablated, expected, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(untouched, expected)


def test_ablate_offers_the_kinds_an_architecture_has(text_corpus, make_config, capsys):
    """The TapeTransformer has attention heads but no per-layer attention and MLP outputs:
    `ablate --layers` said it had "no attention, MLP or head hook points either", yet --heads works."""
    from slmlab.cli import main
    from slmlab.training import train

    tape = {
        "arch": "tape",
        "pos": "sinusoidal",
        "n_head": 2,
        "d_model": 16,
        "tape": {"n_critics": 1, "critic_layers": 1, "rnn_dim": 8},
    }
    run = train(make_config(text_corpus, model=tape, train={"steps": 2, "checkpoint_every": 0}), progress=False).run_dir
    for flags in ([], ["--layers"]):
        assert main(["ablate", str(run), *flags]) == 2
        err = capsys.readouterr().err
        assert err.strip().endswith("add --heads to zero each attention head in turn") and "--layers" not in err, err
    assert main(["ablate", str(run), "--heads", "--n-batches", "1"]) == 0


def test_an_ablations_change_has_a_paired_interval_over_the_validation_batches(text_corpus, make_config, capsys):
    """`ablate` printed Δ% alone: a change of +0.1% read as an effect whether or not another choice
    of windows would have moved it as much. Each row now has the 95% CI of Δ% from the batches'
    paired differences (t over the batches), checked here against a naive per-batch reference."""
    from scipy import stats

    from slmlab.cli import main
    from slmlab.data.sampling import validation_batches
    from slmlab.data.tokens import prepare_tokens
    from slmlab.experiments.stats import perplexity_change
    from slmlab.model.interventions import intervene, layer_ablations
    from slmlab.runs.run_dir import RunDir, load_run
    from slmlab.training import train

    cfg = make_config(text_corpus)
    train(cfg, progress=False)
    run = RunDir.for_config(cfg).path
    assert main(["ablate", str(run), "--layers", "--n-batches", "4"]) == 0
    printed = capsys.readouterr().out
    rows = json.loads((run / "ablations.json").read_text())["interventions"]
    _, model, tokenizer = load_run(run, torch.device("cpu"))
    _, data = prepare_tokens(cfg.data, tokenizer)

    def naive_batches() -> list[float]:
        with torch.no_grad():
            return [model(x, y)[1].item() for x, y in validation_batches(data.val, cfg.data.seq_len, cfg.train.batch_size, 4)]

    reference, p_values = naive_batches(), {}
    for intervention in layer_ablations(model):
        with intervene(model, intervention):
            batches = naive_batches()
        d = np.subtract(batches, reference)
        half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
        row = rows[intervention.name]
        p_values[intervention.name] = stats.ttest_1samp(d, 0.0).pvalue
        assert row["p"] == pytest.approx(p_values[intervention.name], rel=1e-6)
        change = np.log(row["val_ppl"] / rows["unmodified"]["val_ppl"])
        assert row["delta_pct_low"] == pytest.approx(100 * np.expm1(change - half), abs=1e-6)
        assert row["delta_pct_high"] == pytest.approx(100 * np.expm1(change + half), abs=1e-6)
        assert row["delta_pct_low"] <= row["delta_pct"] <= row["delta_pct_high"]
        assert f"[{row['delta_pct_low']:+.2f}, {row['delta_pct_high']:+.2f}]" in printed
    ordered, running = sorted(p_values.items(), key=lambda item: item[1]), 0.0  # Holm, step by step
    for rank, (name, p) in enumerate(ordered):
        running = max(running, min(1.0, (len(ordered) - rank) * p))
        assert rows[name]["holm_p"] == pytest.approx(running, rel=1e-6)
    assert "| unmodified " in printed and printed.split("| unmodified ")[1].split("\n")[0].rstrip(" |").endswith("–")
    one = perplexity_change(0.1, [1.1], [1.0])  # one batch: no spread, no interval
    assert one["delta_pct"] == pytest.approx(100 * np.expm1(0.1)) and np.isnan(one["delta_pct_low"])


def test_the_bias_gate_split_has_a_bootstrap_interval_over_the_validation_batches(text_corpus, make_config, capsys):
    """The seed's headline ("74% of S's lift through the gate") is a ratio of two measured changes,
    printed without its uncertainty. ablations.json keeps each row's per-batch losses, and the
    split has its 95% bootstrap interval, checked here against a naive resampling of those losses."""
    printed, result = _ablated_full_smat_run(text_corpus, make_config, capsys, 5)
    losses = {name: np.array(batches) for name, batches in result["batch_losses"].items()}
    for name, row in result["interventions"].items():  # the kept losses are those the rows were computed from
        assert np.exp(losses[name].mean()) == pytest.approx(row["val_ppl"], rel=1e-9)
    rng, bias = np.random.default_rng(0), []
    for _ in range(2000):
        drawn = rng.integers(0, 5, 5)
        base = losses["unmodified"][drawn].mean()
        lambda_zero, removed = (np.expm1(losses[name][drawn].mean() - base) for name in ("lambda_zero", "s_removed"))
        bias.append(lambda_zero / removed)
    low, high = result["summary_intervals"]["s_effect_share.attention_bias"]
    assert (low, high) == pytest.approx((np.percentile(bias, 2.5), np.percentile(bias, 97.5)), rel=1e-9)
    assert low <= result["s_effect_share"]["attention_bias"] <= high
    gate_low, gate_high = result["summary_intervals"]["s_effect_share.gate"]
    assert (gate_low, gate_high) == pytest.approx((1 - high, 1 - low), abs=1e-9)
    assert f"s_effect_share.attention_bias {result['s_effect_share']['attention_bias']:.3g} [{low:.3g}, {high:.3g}]" in printed


def test_a_split_of_an_effect_not_told_from_none_says_so():
    from slmlab.variants.smat import summarize_ablations

    def rows(low: float, high: float) -> dict:
        return {
            "lambda_zero": {"delta_pct": 0.1},
            "s_removed": {"delta_pct": 0.2, "delta_pct_low": low, "delta_pct_high": high},
        }

    unresolved, _ = summarize_ablations(rows(-0.3, 0.7))
    assert "not resolved: removing S moves perplexity by -0.30% to +0.70%, which includes no change" in unresolved
    resolved, values = summarize_ablations(rows(0.05, 0.35))
    assert "not resolved" not in resolved and values["s_effect_share"]["attention_bias"] == pytest.approx(0.5)
    assert "not resolved" not in summarize_ablations({"lambda_zero": {"delta_pct": 0.1}, "s_removed": {"delta_pct": 0.2}})[0]


def test_a_summary_interval_of_a_change_past_float64_is_left_out_not_an_overflow():
    """A resampled Δ% of exp(900 nats) overflowed math.expm1 (OverflowError); it is inf, as in
    perplexity_change, and a figure with no finite value in some draw gets no interval."""
    from slmlab.evals.ablate import summary_intervals
    from slmlab.variants.smat import summarize_ablations

    rows = {"unmodified": {"delta_pct": 0.0}, "lambda_zero": {"delta_pct": 1.0}, "s_removed": {"delta_pct": 2.0}}
    losses = {"unmodified": [1.0, 1.1, 0.9], "s_removed": [1.2, 1.3, 1.1]}
    assert summary_intervals(summarize_ablations, rows, {**losses, "lambda_zero": [800.0, 900.0, 1000.0]}) == {}
    finite = summary_intervals(summarize_ablations, rows, {**losses, "lambda_zero": [1.1, 1.15, 1.0]})
    assert set(finite) == {"s_effect_share.attention_bias", "s_effect_share.gate"}


def test_ablate_pairs_batches_of_windows_that_share_no_token(text_corpus, make_config, capsys):
    """Its intervals and t-tests treat the batches as independent: on a short validation split the
    400 windows asked for overlapped, each token scored several times, and the intervals came out
    that much too narrow. ablate scores as many windows as fit apart (one line says so)."""
    from slmlab.cli import main
    from slmlab.data.sampling import validation_offsets
    from slmlab.data.tokens import prepare_tokens
    from slmlab.runs.run_dir import RunDir, load_run
    from slmlab.training import train

    cfg = make_config(text_corpus)
    train(cfg, progress=False)
    run = RunDir.for_config(cfg).path
    assert main(["ablate", str(run), "--layers", "--n-batches", "50"]) == 0
    result = json.loads((run / "ablations.json").read_text())
    _, _, tokenizer = load_run(run)
    _, data = prepare_tokens(cfg.data, tokenizer)
    apart = validation_offsets(len(data.val), cfg.data.seq_len, cfg.train.batch_size, 50, disjoint=True)
    assert len(apart) < 50 * cfg.train.batch_size and (np.diff(apart) >= cfg.data.seq_len).all()
    batches = len(result["batch_losses"]["unmodified"])
    assert len(apart) % batches == 0 and len(apart) // batches <= cfg.train.batch_size  # batches of one size
