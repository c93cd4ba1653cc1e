"""TapeTransformer (seed 001): the activation and combination rules against their formulas, the
Student-t head, the Wolf optimizer's update rule by hand, and the model's causality, cache
equivalence, batch independence and a gradient for every parameter; a micro run whose loss falls."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from slmlab.analysis.decoding_checks import CountingBackend
from slmlab.config import ModelConfig
from slmlab.model import build_model
from slmlab.model.heads import StudentTHead
from slmlab.runs.run_dir import RunDir
from slmlab.training import train
from slmlab.variants.tape import TapeConfig, bounded_log, soft_xor, softmax_mix
from slmlab.variants.wolf import Wolf

V = 53


def tape(**fields) -> torch.nn.Module:
    torch.manual_seed(0)
    fields = {"pos": "sinusoidal", **fields}
    cfg = ModelConfig(
        arch="tape",
        vocab_size=V,
        n_head=4,
        d_model=32,
        block_size=48,
        head="student_t",
        tape=TapeConfig(n_critics=2, critic_layers=2, rnn_dim=16),
        **fields,
    )
    return build_model(cfg).double().eval()


def test_bounded_activation_matches_its_formula_with_finite_gradients():
    x = torch.linspace(-50, 50, 2001, dtype=torch.float64)
    u = 2 * torch.tanh(x / 2)
    l = torch.sign(u) * torch.log1p(u.abs())
    expected = 2 * torch.atanh(l / torch.sqrt(1 + 24 * l**2) / 2)
    torch.testing.assert_close(bounded_log(x), expected, rtol=1e-12, atol=1e-12)
    wide = torch.cat([torch.logspace(-8, 8, 200, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)])
    wide = torch.cat([wide, -wide]).requires_grad_()
    bounded_log(wide).sum().backward()
    assert torch.isfinite(wide.grad).all() and wide.grad[200] == pytest.approx(1.0)  # slope 1 at 0
    assert bounded_log(torch.tensor([1e9, -1e9], dtype=torch.float64)).abs().max() < 0.21


def test_combination_rules():
    big = torch.tensor(30.0)
    assert soft_xor(torch.tensor(0.0), torch.tensor(0.0)) == pytest.approx(0.25)
    assert soft_xor(big, big) == pytest.approx(0.0, abs=1e-6) and soft_xor(-big, -big) == pytest.approx(0.0, abs=1e-6)
    assert soft_xor(big, -big) == pytest.approx(0.5, abs=1e-6)
    a, b = torch.randn(5, 7), torch.randn(5, 7)
    weights = torch.softmax(torch.stack([a, b]), dim=0)
    torch.testing.assert_close(softmax_mix(a, b), weights[0] * a + weights[1] * b)


def test_student_t_head_normalises_and_matches_its_formula():
    cfg = ModelConfig(vocab_size=11, d_model=6, head="student_t")
    head = StudentTHead(cfg).double()
    h = torch.randn(4, 6, dtype=torch.float64)
    distance = ((h[:, None, :] - head.weight[None]) ** 2).sum(-1)  # explicit (N, V, D)
    expected = -(math.e + 6) / 2 * torch.log(1 + distance / math.e)
    torch.testing.assert_close(head(h), expected)
    log_p = torch.log_softmax(head(h), dim=-1)
    torch.testing.assert_close(log_p.exp().sum(-1), torch.ones(4, dtype=torch.float64))
    targets = torch.tensor([0, 3, 10, 5])
    assert head.loss(h, targets).item() == pytest.approx(-log_p[torch.arange(4), targets].mean().item())


def test_wolf_update_rule_by_hand():
    p = torch.nn.Parameter(torch.tensor([1.0, 1.0]))
    optimizer = Wolf([p], lr=0.5)
    c = math.exp(-1)
    p.grad = torch.tensor([0.5, -0.2])
    optimizer.step()  # m = 0: u = c g (signs agree), m = c u
    u1 = [c * 0.5, c * -0.2]
    assert p.tolist() == pytest.approx([1 - 0.5 * u1[0], 1 - 0.5 * u1[1]])
    m1 = [c * u1[0], c * u1[1]]
    p.grad = torch.tensor([-0.1, -0.2])
    before = p.detach().clone()
    optimizer.step()
    u2 = [(1 - c) * m1[0] + c * -0.1, (1 - c) * m1[1] + c * -0.2]
    assert u2[0] > 0  # disagrees with its gradient -> the first entry stays
    assert p.tolist() == pytest.approx([before[0].item(), before[1].item() - 0.5 * u2[1]])
    assert optimizer.state[p]["m"].tolist() == pytest.approx([(1 - c) * m1[0] + c * u2[0], (1 - c) * m1[1] + c * u2[1]])


@pytest.mark.parametrize("fields", [{}, {"pos": "rope"}], ids=["sinusoidal", "rotary"])
def test_tape_is_causal(fields):
    model = tape(**fields)
    idx = torch.randint(0, V, (2, 40))
    base, _ = model(idx)
    for t in (0, 17, 38):
        changed = idx.clone()
        changed[:, t + 1] = (changed[:, t + 1] + 1) % V
        logits, _ = model(changed)
        assert torch.equal(logits[:, : t + 1], base[:, : t + 1])
        assert not torch.allclose(logits[:, t + 1], base[:, t + 1])


def test_tape_cached_decoding_equals_full_recomputation():
    model = tape()
    idx = torch.randint(0, V, (2, 30))
    full, _ = model(idx)
    caches = model.make_caches()
    prefill, _ = model(idx[:, :12], caches=caches)  # KV caches and the prophet's hidden state
    steps = [model(idx[:, t : t + 1], caches=caches)[0] for t in range(12, 22)]
    chunk, _ = model(idx[:, 22:], caches=caches)
    torch.testing.assert_close(torch.cat([prefill, *steps, chunk], dim=1), full, rtol=1e-10, atol=1e-10)
    prompt = idx[:1, :5]
    assert torch.equal(model.generate(prompt, 20, temperature=0), model.generate(prompt, 20, temperature=0, use_cache=False))


def test_batch_items_never_influence_each_other():
    model = tape()
    idx = torch.randint(0, V, (3, 24))
    base, _ = model(idx)
    changed = idx.clone()
    changed[1] = (changed[1] + 7) % V
    logits, _ = model(changed)
    assert torch.equal(logits[0], base[0]) and torch.equal(logits[2], base[2])
    assert not torch.allclose(logits[1], base[1])


@pytest.mark.parametrize("moderator", ["merge", "last"])
def test_every_parameter_receives_a_gradient(moderator):
    model = tape()
    if moderator == "last":
        model = build_model(dataclasses.replace(model.cfg, tape=dataclasses.replace(model.cfg.tape, moderator="last"))).double()
    idx = torch.randint(0, V, (2, 24))
    _, loss = model(idx, idx.roll(-1, dims=1))
    loss.backward()
    silent = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not silent, silent  # "last" builds only the critic it reads: no dead weight
    assert len(model.critics) == (2 if moderator == "merge" else 1)
    assert loss.item() == pytest.approx(math.log(V), abs=0.3)  # loss at init ≈ ln V


@pytest.mark.slow
def test_compiled_training_leaves_the_prophets_steps_out_of_the_graph():
    """Traced, the char-RNN's T steps were unrolled into the training graph (142 s of inductor
    compiling at T = 37 on a small model, growing with T); they now run eagerly between graphs of
    a size that does not depend on T, with the eager loss and gradients."""
    model = tape().train()
    nodes = []
    for T in (8, 24):
        torch._dynamo.reset()
        idx = torch.randint(0, V, (2, T))
        _, loss = model(idx, idx.roll(-1, dims=1))
        expected = torch.autograd.grad(loss, list(model.parameters()))
        counting = CountingBackend()
        _, compiled_loss = torch.compile(model, backend=counting, dynamic=False)(idx, idx.roll(-1, dims=1))
        torch.testing.assert_close(compiled_loss, loss, rtol=0, atol=1e-12)
        for got, want in zip(torch.autograd.grad(compiled_loss, list(model.parameters())), expected):
            torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
        nodes.append(counting.nodes)
    torch._dynamo.reset()
    assert nodes[0] == nodes[1], f"the captured graphs grow with T: {nodes[0]} nodes at T = 8, {nodes[1]} at T = 24"


@pytest.mark.slow
def test_tape_and_wolf_train_on_text(text_corpus, make_config):
    cfg = make_config(
        text_corpus,
        model={
            "arch": "tape",
            "pos": "sinusoidal",
            "head": "student_t",
            "n_head": 2,
            "d_model": 32,
            "tape": {"n_critics": 2, "critic_layers": 2, "rnn_dim": 16},
        },
        train={"steps": 30, "lr": 3e-3, "eval_every": 30, "checkpoint_every": 0, "sample_tokens": 16},
    )
    first = train(cfg, progress=False)
    losses = [r["loss"] for r in RunDir(first.run_dir).read_metrics()]
    assert losses[-1] < losses[0] - 0.5 and first.sample
    wolf = train(
        dataclasses.replace(cfg, name="wolf", train=dataclasses.replace(cfg.train, optimizer="wolf", lr=0.2)), progress=False
    )
    losses = [r["loss"] for r in RunDir(wolf.run_dir).read_metrics()]
    assert losses[-1] < losses[0] - 0.3, losses
