"""SMT's Self Area: zero change at insertion, guidance reaching every layer, the input_once
baseline, gradient isolation for stage 2, and a micro stage-2 run that lowers persona-text loss."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file

from slmlab.cli import main
from slmlab.config import ConfigError, ModelConfig
from slmlab.model import build_model
from slmlab.runs.run_dir import RunDir
from slmlab.training import Trainer, train
from slmlab.variants.self_area import SelfAreaConfig

from .conftest import LINES

MODES = [
    {"target": "residual"},
    {"target": "sublayer_inputs"},
    {"token_dependent": True},
    {"target": "sublayer_inputs", "token_dependent": True},
    {"guidance_mode": "input_once"},
]


def pair(**self_area):
    """A baseline model and the same model with a Self Area, sharing every base weight."""
    cfg = ModelConfig(n_layer=3, n_head=2, d_model=32, block_size=32, vocab_size=40)
    torch.manual_seed(0)
    base = build_model(cfg)
    smt = build_model(dataclasses.replace(cfg, self_area=SelfAreaConfig(enabled=True, self_dim=8, **self_area)))
    missing, unexpected = smt.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and all(name.startswith("conditioning.") for name in missing)
    return base.eval(), smt.eval()


@pytest.mark.parametrize("mode", MODES, ids=lambda m: ",".join(f"{k}={v}" for k, v in m.items()))
def test_a_surgery_safe_self_area_changes_nothing_at_insertion(mode):
    base, smt = pair(**mode)
    idx = torch.randint(0, 40, (2, 20))
    assert torch.equal(base(idx)[0], smt(idx)[0])
    with torch.no_grad():
        smt.conditioning.area.alpha.fill_(0.5)
    assert not torch.allclose(base(idx)[0], smt(idx)[0])


def test_guidance_reaches_every_layer_as_alpha_W_g():
    _, smt = pair(target="residual")
    area = smt.conditioning.area
    with torch.no_grad():
        area.alpha.copy_(torch.tensor([0.5, -1.0, 2.0]))
    block_in, block_out = {}, {}
    for layer, block in enumerate(smt.blocks):
        block.hook_resid_pre.register_forward_hook(lambda m, args, out, layer=layer: block_in.__setitem__(layer, out))
        block.register_forward_hook(lambda m, args, out, layer=layer: block_out.__setitem__(layer, out))
    embed = {}  # x_0: the token and the position embeddings
    smt.hook_embed.register_forward_hook(lambda m, args, out: embed.__setitem__("tokens", out))
    smt.hook_pos_embed.register_forward_hook(lambda m, args, out: embed.__setitem__("positions", out))
    smt(torch.randint(0, 40, (2, 12)))
    g = area.state + area.refine(area.state)
    for layer in range(3):
        previous = embed["tokens"] + embed["positions"] if layer == 0 else block_out[layer - 1]
        expected = previous + area.alpha[layer] * (area.proj[layer] @ g)
        torch.testing.assert_close(block_in[layer], expected)


def test_input_once_adds_one_constant_vector_to_the_embeddings_only():
    _, smt = pair(guidance_mode="input_once")
    assert smt.conditioning.area.alpha.shape == (1,)
    with torch.no_grad():
        smt.conditioning.area.alpha.fill_(1.0)
    seen = []
    smt.conditioning.area.hook_guidance[0].register_forward_hook(lambda m, args, out: seen.append(out))
    smt(torch.randint(0, 40, (1, 5)))
    assert len(seen) == 1 and seen[0].shape == (32,)  # one d_model vector, one layer


def test_trainable_self_area_isolates_gradients(text_corpus, make_config):
    for which, may_change in (("self_area", ("conditioning.",)), ("self_area+norms", ("conditioning.", "ln", "norm_f"))):
        cfg = make_config(
            text_corpus,
            model={"self_area": {"enabled": True, "self_dim": 8}},
            train={"steps": 4, "trainable": which, "checkpoint_every": 0, "weight_decay": 0.1},
        )
        trainer = Trainer(dataclasses.replace(cfg, name=which.replace("+", "_")), progress=False)
        before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        trainer.fit()
        after = trainer.model.state_dict()
        changed = {k for k in before if not torch.equal(before[k], after[k])}
        assert changed and all(any(part in k for part in may_change) for k in changed), sorted(changed)
        assert any(k.startswith("conditioning.") for k in changed)
        if which == "self_area+norms":
            assert any(".ln1." in k for k in changed)


def test_trainable_self_area_needs_a_self_area(text_corpus, make_config, capsys):
    with pytest.raises(ConfigError, match="needs a Self Area; set model.self_area.enabled = true"):
        make_config(text_corpus, train={"trainable": "self_area"})
    # stage 2 on a run trained without one: the fix is a flag of this command, not the run's config
    base = train(make_config(text_corpus, train={"steps": 2, "checkpoint_every": 0}), progress=False).run_dir
    assert main(["persona", str(base), "--persona-data", str(text_corpus), "--steps", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "trained without a Self Area" in err and "--train all" in err
    stage2 = ["persona", str(base), "--persona-data", str(text_corpus), "--train", "all", "--steps", "2", "--no-progress"]
    # the persona run takes over the base run's tokenizer.json: its config recorded "byte" beside a char tokenizer
    assert main([*stage2, "--data.tokenizer", "byte"]) == 2
    assert "own tokenizer, so data.tokenizer cannot change" in capsys.readouterr().err
    assert main(stage2) == 0


def test_micro_stage_two_lowers_persona_text_loss(text_corpus, make_config, tmp_path, capsys):
    cfg = make_config(
        text_corpus,
        model={"self_area": {"enabled": True, "self_dim": 16}},
        train={"steps": 150, "lr": 1e-2, "checkpoint_every": 0, "eval_every": 150},
    )
    base = train(cfg, progress=False).run_dir
    persona = tmp_path / "persona"
    persona.mkdir()
    for i in range(6):  # one voice: Hamlet's line, over and over
        (persona / f"p{i}.txt").write_text("\n\n".join([LINES[2]] * 30))
    before = main(["eval", str(base), "--data.source", str(persona), "--json", "--batches", "4"])
    assert before == 0
    loss_before = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["loss"]
    assert main(["persona", str(base), "--persona-data", str(persona), "--steps", "60", "--lr", "0.03", "--no-progress"]) == 0
    out = capsys.readouterr().out
    run = RunDir(base.parent / f"{base.name}_persona")
    assert run.read_config().train.trainable == "self_area"
    assert f"from {base}" in out and out.count("perplexity") == 1  # one "after" figure: the gain's, beside its base's
    assert run.read_summary()["val_loss"] < 0.95 * loss_before  # measured: 0.916 -> 0.819
    # what stage 2 bought: the base model scored on the persona run's windows, paired by batch
    gain = json.loads((run.path / "persona_gain.json").read_text())
    assert main(["eval", str(base), "--data.source", str(persona), "--json", "--batches", str(cfg.train.eval_batches)]) == 0
    assert gain["val_loss_before"] == pytest.approx(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["loss"])
    assert gain["val_loss_after"] == pytest.approx(run.read_summary()["val_loss"])  # the same windows: they fit apart
    assert gain["delta_pct_low"] < gain["delta_pct"] < min(0, gain["delta_pct_high"])  # (2 batches: a wide interval)
    assert f"{gain['delta_pct']:+.2f}%, 95% CI [{gain['delta_pct_low']:+.2f}, {gain['delta_pct_high']:+.2f}]" in out
    assert main(["report", str(run.path)]) == 0  # the report card says it too
    assert f"Against its base run `{base}` on the same {gain['batches']} batches" in (run.path / "report.md").read_text()
    base_weights, tuned = load_file(base / "final.safetensors"), load_file(run.final_weights)
    for name, tensor in base_weights.items():  # the base model is untouched; only the Self Area moved
        assert torch.equal(tensor, tuned[name]) != name.startswith("conditioning."), name


def test_a_stage_two_gain_from_one_batch_says_it_has_no_interval(micro_toml, text_corpus, tmp_path, capsys):
    """With one validation batch the gain has no CI: persona_gain.json holds null bounds, and the
    run's report failed on them with a TypeError traceback (and read "the same 1 batches")."""
    assert main(["train", str(micro_toml), "--no-progress", "--name", "base", "--train.eval_batches", "1"]) == 0
    argv = ["persona", str(tmp_path / "runs" / "base"), "--persona-data", str(text_corpus), "--train", "all", "--steps", "2"]
    assert main([*argv, "--no-progress"]) == 0
    assert "on the same 1 batch of persona text" in capsys.readouterr().out
    run = tmp_path / "runs" / "base_persona"
    assert json.loads((run / "persona_gain.json").read_text())["delta_pct_low"] is None
    assert main(["report", str(run)]) == 0
    line = next(x for x in (run / "report.md").read_text().splitlines() if x.startswith("Against its base run"))
    assert "on the same 1 batch of persona text" in line and line.endswith("no CI from 1 batch.")


@pytest.mark.parametrize("mode", MODES, ids=lambda m: ",".join(f"{k}={v}" for k, v in m.items()))
def test_self_area_off_is_the_host_model_and_random_persona_keeps_the_norm(mode):
    """`slmlab ablate` on an SMT run: self_area_off gives the base model's logits exactly, in every
    mode; random_persona feeds every layer a g of the learned one's norm and another direction."""
    from slmlab.model.interventions import applicable, intervene
    from slmlab.registry import INTERVENTIONS

    base, smt = pair(**mode)
    area = smt.conditioning.area
    with torch.no_grad():
        area.alpha.fill_(0.7)
    idx = torch.randint(0, 40, (2, 20))
    assert not torch.allclose(smt(idx)[0], base(idx)[0])
    with intervene(smt, INTERVENTIONS["self_area"]["self_area_off"]):
        torch.testing.assert_close(smt(idx)[0], base(idx)[0], rtol=0, atol=1e-6)
    learned = area.guidance().detach()
    seen = []
    with intervene(smt, INTERVENTIONS["self_area"]["random_persona"]):
        handle = area.hook_persona.register_forward_hook(lambda m, args, out: seen.append(out.detach()))
        first = smt(idx)[0]
        handle.remove()
        torch.testing.assert_close(smt(idx)[0], first)  # the same random g at every application
    torch.testing.assert_close(seen[0].norm(), learned.norm())
    assert torch.cosine_similarity(seen[0], learned, dim=0) < 0.9
    assert not torch.allclose(first, smt(idx)[0])
    assert {i.name for i in applicable(smt)} >= {"self_area_off", "random_persona"}
    assert not {i.name for i in applicable(base)} & {"self_area_off", "random_persona"}


def test_info_counts_only_the_trainable_parameters_gradients_and_optimizer_state(micro_toml, capsys):
    """`slmlab info` of a stage-2 style config (train.trainable = "self_area") gave every parameter
    a gradient and AdamW state; a frozen weight has neither, nor a weight-gradient product."""
    from slmlab.tables import human

    def info_rows(*extra: str) -> dict[str, str]:
        assert main(["info", str(micro_toml), "--model.self_area.enabled", "true", *extra]) == 0
        cells = (line.split("|")[1:3] for line in capsys.readouterr().out.splitlines() if line.startswith("| "))
        return {key.strip(): value.strip() for key, value in cells}

    everything, frozen = info_rows(), info_rows("--train.trainable", "self_area")
    model = build_model(
        ModelConfig(n_layer=1, n_head=2, d_model=16, block_size=32, vocab_size=100, self_area=SelfAreaConfig(enabled=True))
    )
    trainable = sum(p.numel() for name, p in model.named_parameters() if name.startswith("conditioning.area"))
    assert frozen["trainable parameters (train.trainable = self_area)"] == f"{trainable:,} ({human(trainable)})"
    assert "trainable parameters (train.trainable = all)" not in everything
    gradients = next(value for key, value in frozen.items() if key.startswith("training memory: gradients"))
    assert gradients == human(4 * trainable, "B")
    counted = "FLOPs / token (train, T=32, counted by torch.utils.flop_counter)"
    assert float(frozen[counted].rstrip("K")) < float(everything[counted].rstrip("K"))
    assert "FLOPs / token (train, T=32, if every parameter trained)" in frozen  # the closed form says what it assumes
    assert "FLOPs / token (train, T=32)" in everything
