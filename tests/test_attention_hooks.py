"""hook_attn_scores and hook_pattern: the attention matrices TransformerLens users read and patch,
built only when hooked, against naive references written here."""

from __future__ import annotations

import contextlib
import math

import pytest
import torch

import slmlab
from slmlab.config import ConfigError, ModelConfig
from slmlab.model import build_model
from slmlab.model.attention_maps import capture_attention

V, T = 40, 12
MODELS = {
    "full": {},
    "rope": {"pos": "rope"},
    "block_local": {"attention_layers": ["block_local", "full"], "local_block": 4},
    "smat": {"smat": {"use_S": True, "use_G": True, "s_dim": 8}},
    "self_area": {"self_area": {"enabled": True, "self_dim": 8}},
    "tape": {"arch": "tape", "pos": "sinusoidal", "tape": {"n_critics": 2, "coda_layers": 1, "critic_layers": 1, "rnn_dim": 8}},
}


def tiny(**fields) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(vocab_size=V, n_layer=2, n_head=2, d_model=16, block_size=32, **fields)).eval()


@contextlib.contextmanager
def every_pattern_seen(model: torch.nn.Module):
    """A hook on every layer's hook_pattern that keeps what it reads, in order (the list yielded);
    removed on leaving."""
    seen: list[torch.Tensor] = []
    handles = [
        module.register_forward_hook(lambda module, args, output: seen.append(output))
        for path, module in model.named_modules()
        if path.endswith("hook_pattern")
    ]
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


def test_the_pattern_is_softmax_of_the_scaled_scores_under_a_causal_mask():
    model, ids = tiny(), torch.randint(0, V, (2, T))
    _, cache = slmlab.run_with_cache(model, ids)
    q, k = cache["blocks.1.attn.hook_q"], cache["blocks.1.attn.hook_k"]
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    scores = torch.where(causal, q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), -math.inf)
    torch.testing.assert_close(cache["blocks.1.attn.hook_attn_scores"], scores)
    torch.testing.assert_close(cache["blocks.1.attn.hook_pattern"], scores.softmax(-1))
    z = cache["blocks.1.attn.hook_pattern"] @ cache["blocks.1.attn.hook_v"]
    torch.testing.assert_close(cache["blocks.1.attn.hook_z"], z)


@pytest.mark.parametrize("name", list(MODELS))
def test_every_architecture_gives_the_attention_it_applies(name):
    """Reading the matrices leaves the logits as they are, bit for bit, and they are the attention
    maps `viz` draws (each checked against the fused kernels' output)."""
    model, ids = tiny(**MODELS[name]), torch.randint(0, V, (1, T))
    plain, _ = model(ids)
    logits, cache = slmlab.run_with_cache(model, ids, lambda n: n.endswith(("hook_pattern", "hook_attn_scores")))
    assert torch.equal(logits, plain)
    cache = {point: value for point, value in cache.items() if point.endswith("hook_pattern")}
    maps, _ = capture_attention(model, ids)
    assert [m.name + ".hook_pattern" for m in maps] == list(cache)
    for amap, pattern in zip(maps, cache.values()):
        torch.testing.assert_close(pattern[0], amap.probs, atol=1e-6, rtol=1e-5)
        assert torch.allclose(pattern.sum(-1), torch.ones(())) and not pattern.triu(1).any()


def test_a_replaced_pattern_is_the_attention_that_runs():
    """Uniform attention over the keys each query sees, put in hook_pattern: the heads' outputs
    are the mean of the values so far."""
    model, ids = tiny(), torch.randint(0, V, (2, T))
    _, cache = slmlab.run_with_cache(model, ids)
    uniform = torch.tril(torch.ones(T, T)) / torch.arange(1, T + 1)[:, None]
    seen = {}
    attn = model.get_submodule("blocks.0.attn")
    handles = [
        attn.hook_pattern.register_forward_hook(lambda module, args, output: uniform.expand_as(output)),
        attn.hook_z.register_forward_hook(lambda module, args, output: seen.setdefault("z", output)),
    ]
    try:
        with torch.no_grad():
            model(ids)
    finally:
        for handle in handles:
            handle.remove()
    v = cache["blocks.0.attn.hook_v"]
    torch.testing.assert_close(seen["z"], v.cumsum(2) / torch.arange(1, T + 1)[:, None])


def test_a_pattern_changed_in_place_is_the_attention_that_runs():
    """TransformerLens's habit: `pattern[:, head] = 0; return pattern`, the same tensor changed."""
    model, ids = tiny(), torch.randint(0, V, (1, T))

    def head_off(pattern, name):
        pattern[:, 1] = 0.0
        return pattern

    _, cache = slmlab.run_with_cache(model, ids)
    seen = {}
    with torch.no_grad():
        plain, _ = model(ids)
        off = slmlab.run_with_hooks(
            model,
            ids,
            [
                ("blocks.1.attn.hook_pattern", head_off),
                ("blocks.1.attn.hook_z", lambda z, name: seen.update(z=z)),
            ],
        )
    assert not seen["z"][:, 1].any()  # the head's output is P v = 0
    torch.testing.assert_close(seen["z"][:, 0], cache["blocks.1.attn.hook_z"][:, 0])  # the other head's as it was
    assert not torch.allclose(off, plain)


def test_a_key_masked_in_the_scores_gets_no_attention():
    model, ids = tiny(), torch.randint(0, V, (1, T))

    def hide_first(scores, name):
        scores = scores.clone()
        scores[..., 1:, 0] = -math.inf
        return scores

    with torch.no_grad():
        plain, _ = model(ids)
        hidden = slmlab.run_with_hooks(model, ids, [("blocks.0.attn.hook_attn_scores", hide_first)])
    torch.testing.assert_close(hidden[0, 0], plain[0, 0])  # the first query sees key 0 alone, as before
    assert not torch.isclose(hidden[0, 1:], plain[0, 1:]).all(-1).any()  # every later one lost it


@pytest.mark.parametrize("name", ["full", "block_local", "smat"])
def test_cached_decoding_reads_them_over_the_cached_keys(name):
    """A hook on the pattern while generating: one query's row over the keys the cache holds
    (block-local's window of 2B keys too), and the same tokens as without it."""
    model, prompt = tiny(**MODELS[name]), torch.randint(0, V, (2, 5))
    plain = model.generate(prompt, 20, temperature=0)
    with every_pattern_seen(model) as seen:
        hooked = model.generate(prompt, 20, temperature=0)
    assert torch.equal(hooked, plain)
    assert seen[0].shape == (2, 2, 5, 5) and seen[-1].shape[:3] == (2, 2, 1)  # the prompt, then one query a step


@pytest.mark.parametrize("name", ["full", "block_local"])
def test_a_left_padded_batch_reads_each_rows_own_attention(name):
    """Prompts of different lengths decoded as one left-padded batch: no real query attends a
    padding key, and the continuations are those without the hook."""
    model, prompts = tiny(**MODELS[name]), [[1, 2, 3, 4, 5, 6], [7, 8]]
    plain = model.generate_many(prompts, 12, temperature=0)
    with every_pattern_seen(model) as seen:
        hooked = model.generate_many(prompts, 12, temperature=0)
    assert hooked == plain
    prefill = seen[0]  # (2, H, 6, 6), shortest prompt first: row 0 starts with 4 padding keys
    assert prefill.shape == (2, 2, 6, 6) and not prefill[0, :, 4:, :4].any() and prefill[1, :, 4:, :4].all()
    assert torch.allclose(prefill.sum(-1), torch.ones(()))


@pytest.mark.parametrize("mlp", ["gelu", "swiglu"])
def test_the_residual_stream_and_the_neurons_add_up(mlp):
    """hook_resid_mid / hook_resid_post and the MLP's neurons (hook_pre, hook_post; SwiGLU's
    hook_pre_linear), against the block's equations written here."""
    model, ids = tiny(mlp=mlp), torch.randint(0, V, (2, T))
    _, c = slmlab.run_with_cache(model, ids)
    for layer in (0, 1):
        block, at = model.blocks[layer], f"blocks.{layer}."
        torch.testing.assert_close(c[at + "hook_resid_mid"], c[at + "hook_resid_pre"] + c[at + "hook_attn_out"])
        torch.testing.assert_close(c[at + "hook_resid_post"], c[at + "hook_resid_mid"] + c[at + "hook_mlp_out"])
        mlp_in = block.ln2(c[at + "hook_resid_mid"])
        if mlp == "gelu":
            torch.testing.assert_close(c[at + "mlp.hook_pre"], block.mlp.fc(mlp_in))
            post = torch.nn.functional.gelu(c[at + "mlp.hook_pre"], approximate="tanh")
        else:
            torch.testing.assert_close(c[at + "mlp.hook_pre_linear"], block.mlp.up(mlp_in))
            post = torch.nn.functional.silu(block.mlp.gate(mlp_in)) * c[at + "mlp.hook_pre_linear"]
        torch.testing.assert_close(c[at + "mlp.hook_post"], post)
        out = (block.mlp.proj if mlp == "gelu" else block.mlp.down)(c[at + "mlp.hook_post"])
        torch.testing.assert_close(c[at + "hook_mlp_out"], out)
    torch.testing.assert_close(c["blocks.1.hook_resid_pre"], c["blocks.0.hook_resid_post"])


def test_a_bf16_model_gives_its_pattern():
    """The check against the fused kernel allowed fp32's rounding only: a bf16 model was refused."""
    model, ids = tiny(), torch.randint(0, V, (1, T))
    _, exact = slmlab.run_with_cache(model, ids, "blocks.1.attn.hook_pattern")
    _, rounded = slmlab.run_with_cache(model.to(torch.bfloat16), ids, "blocks.1.attn.hook_pattern")
    torch.testing.assert_close(
        rounded["blocks.1.attn.hook_pattern"].float(), exact["blocks.1.attn.hook_pattern"], atol=2e-2, rtol=0
    )


def test_a_pattern_with_no_padding_rule_is_refused_in_a_padded_batch():
    """A pattern that gives its own scores has no `sees(i, j)` rule to mask padding keys by."""
    model = tiny()
    attention = model.get_submodule("blocks.0.attn")
    attention.pattern.scores = lambda q, k, scale, q_start: (q @ k.transpose(-2, -1)) * scale
    handle = attention.hook_pattern.register_forward_hook(lambda *args: None)
    try:
        with pytest.raises(ConfigError, match="gives no `sees\\(i, j\\)` rule to mask a left-padded batch by"):
            model.generate_many([[1, 2, 3], [4, 5]], 2)
    finally:
        handle.remove()
