"""Direct logit attribution (analysis/attribution.py): the contributions sum to the model's own
logit (difference), each equals a naive reference computed from cached activations, and each
head's share is what the attention writes with every other head's output zeroed."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from slmlab.analysis.attribution import logit_attribution
from slmlab.config import ConfigError
from slmlab.model import build_model
from slmlab.model.activations import run_with_cache
from tests.test_viz import BASE, MODELS

KINDS = {
    **{kind: MODELS[kind] for kind in ("decoder", "smat", "block_local_rope", "smt")},
    "modern": dataclasses.replace(BASE, pos="rope", norm="rmsnorm", mlp="swiglu", bias=False),
    "self_area_residual": dataclasses.replace(
        MODELS["smt"], self_area=dataclasses.replace(MODELS["smt"].self_area, surgery_safe=False)
    ),
}


def _model(kind: str):
    torch.manual_seed(0)
    return build_model(KINDS[kind]).double().eval()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("wrong", [None, 7])
def test_contributions_sum_to_the_logit_and_heads_to_their_attention(kind, wrong, device):
    model = _model(kind).to(device)
    idx = torch.randint(0, 40, (1, 13), generator=torch.Generator().manual_seed(1)).to(device)
    result = logit_attribution(model, idx, answer=3, wrong=wrong)
    logits = model(idx)[0][0, -1].detach()
    expected = logits[3] - (logits[wrong] if wrong is not None else 0.0)
    assert sum(result.components.values()) == pytest.approx(float(expected), abs=1e-9)
    assert result.metric == pytest.approx(float(expected), abs=1e-12)
    for layer in range(len(model.blocks)):
        whole = result.components[f"block {layer} attention"]
        assert float(result.heads[layer].sum() + result.heads_bias[layer]) == pytest.approx(whole, abs=1e-9)
    assert ("conditioning" in result.components) == (kind == "self_area_residual")


@pytest.mark.parametrize("kind", ["decoder", "modern"])
def test_each_contribution_is_the_naive_frozen_norm_reading_of_its_write(kind):
    """Reference: the writes read from the cache, the final norm written out with x_L's own
    statistics, and each head's output taken as the attention's output with the other heads' z
    zeroed (less the projection's bias)."""
    model = _model(kind).requires_grad_(False)
    idx = torch.randint(0, 40, (1, 9), generator=torch.Generator().manual_seed(2))
    result = logit_attribution(model, idx, answer=5)
    L = len(model.blocks)
    _, cache = run_with_cache(model, idx)
    writes = {"token embeddings": cache["hook_embed"][0, -1]}
    if "hook_pos_embed" in cache:  # learned positions (RoPE adds none)
        writes["position embeddings"] = cache["hook_pos_embed"][0, -1]
    for layer in range(L):
        writes[f"block {layer} attention"] = cache[f"blocks.{layer}.hook_attn_out"][0, -1]
        writes[f"block {layer} MLP"] = cache[f"blocks.{layer}.hook_mlp_out"][0, -1]
    x = sum(writes.values())
    g = model.norm_f.weight
    u = model.head.weight[5]
    if kind == "modern":  # RMSNorm
        scale = torch.sqrt((x**2).mean() + model.norm_f.eps)
        read = lambda c: g * c / scale
    else:
        scale = torch.sqrt(((x - x.mean()) ** 2).mean() + model.norm_f.eps)
        read = lambda c: g * (c - c.mean()) / scale
    for name, c in writes.items():
        assert result.components[name] == pytest.approx(float(read(c) @ u), abs=1e-10)
    assert set(result.components) == {*writes, "biases (final norm, LM head)"}
    for layer in range(L):
        attention = model.blocks[layer].attn
        for head in range(KINDS[kind].n_head):

            def only(module, args, z, head=head):
                kept = torch.zeros_like(z)
                kept[:, head] = z[:, head]
                return kept

            handle = attention.hook_z.register_forward_hook(only)
            _, alone = run_with_cache(model, idx, names=[f"blocks.{layer}.hook_attn_out"])
            handle.remove()
            out = alone[f"blocks.{layer}.hook_attn_out"][0, -1]
            if attention.proj.bias is not None:
                out = out - attention.proj.bias
            assert float(result.heads[layer, head]) == pytest.approx(float(read(out) @ u), abs=1e-10)


def test_attribution_refuses_what_it_cannot_split():
    with pytest.raises(ConfigError, match="model.arch = 'tape' has none"):
        logit_attribution(build_model(MODELS["tape"]).eval(), torch.zeros(1, 4, dtype=torch.long), answer=1)
    with pytest.raises(ConfigError, match="needs a linear LM head; model.head is StudentTHead"):
        logit_attribution(build_model(dataclasses.replace(BASE, head="student_t")).eval(), torch.zeros(1, 4, dtype=torch.long), 1)


def test_viz_attribute_writes_the_chart_and_tables(text_corpus, make_config, capsys):
    from slmlab.cli import main
    from slmlab.training import train

    run = train(make_config(text_corpus, train={"steps": 3, "checkpoint_every": 0}), progress=False).run_dir
    capsys.readouterr()
    assert main(["viz", "attribute", str(run), "--prompt", "ROMEO: But", "--answer", "t", "--wrong", "s"]) == 0
    text = capsys.readouterr().out
    assert "Direct contributions to logit('t') - logit('s')" in text and "| block 1 MLP " in text and "| W_O bias |" in text
    own = float(text.split("the model's own: ")[1].split(".\n")[0])
    total = next(float(line.split("|")[2]) for line in text.splitlines() if line.startswith("| sum "))
    assert total == pytest.approx(own, abs=2e-4)
    assert (run / "viz" / "attribution.png").stat().st_size > 1000 and "## Attention heads" in (
        run / "viz" / "attribution.md"
    ).read_text()
    assert main(["viz", "attribute", str(run), "--prompt", "ROMEO", "--answer", "t", "--wrong", "t"]) == 2
    assert "--wrong 't' is the answer itself" in capsys.readouterr().err


def test_the_readouts_read_a_plugin_decoder():
    """The worked example's output gate (examples/plugins) acts before hook_z: the heads' shares
    still sum to each attention's write, and patching still restores the clean run at block 0."""
    from slmlab.analysis.patching import activation_patching, last_token_metric
    from slmlab.plugins import activate
    from tests.test_batched_generation import GATED

    activate([GATED])
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(BASE, gated_attention={"enabled": True})).double().eval()
    idx = torch.randint(0, 40, (1, 11), generator=torch.Generator().manual_seed(3))
    result = logit_attribution(model, idx, answer=2, wrong=9)
    logits = model(idx)[0][0, -1].detach()
    assert sum(result.components.values()) == pytest.approx(float(logits[2] - logits[9]), abs=1e-9)
    for layer in range(2):
        whole = result.components[f"block {layer} attention"]
        assert float(result.heads[layer].sum() + result.heads_bias[layer]) == pytest.approx(whole, abs=1e-9)
    corrupt = idx.clone()
    corrupt[0, 4] = (idx[0, 4] + 5) % 40
    patched = activation_patching(model, idx, corrupt, last_token_metric(2, 9))
    assert patched.by_position["hook_resid_pre"][0, 4].item() == pytest.approx(1.0, abs=1e-6)
