"""DecodingLayout: while a CPU model decodes, its wide nn.Linear layers multiply by an (in, out)
copy of their weight. The products equal nn.Linear's to float rounding, only wide layers are
touched, a weight changed in place is honoured, and every module is as it was afterwards (also
after an error, and when generations nest)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from slmlab.config import ModelConfig
from slmlab.model import build_model
from slmlab.model.decoding_layout import DecodingLayout

SHAPE = {"n_layer": 2, "n_head": 2, "d_model": 32, "block_size": 32, "vocab_size": 50}


def layers():
    torch.manual_seed(0)
    return nn.ModuleDict({"wide": nn.Linear(8, 24), "unbiased": nn.Linear(8, 24, bias=False), "narrow": nn.Linear(24, 8)})


def plain(module: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """The naive reference: bias + Σ_i x_i W_oi, written out."""
    y = (x[..., None, :] * module.weight).sum(-1)
    return y if module.bias is None else y + module.bias


@pytest.mark.parametrize("rows", [(1, 8), (3, 1, 8), (2, 5, 8)])
def test_products_equal_nn_linear_within_the_block_and_the_modules_are_restored(rows):
    model = layers()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad(), DecodingLayout(model):
        assert "forward" in model["wide"].__dict__ and "forward" in model["unbiased"].__dict__
        assert "forward" not in model["narrow"].__dict__  # out <= in: the (out, in) layout is the faster one
        for name in ("wide", "unbiased"):
            x = torch.randn(*rows[:-1], 8)
            y = model[name](x)
            assert y.shape == (*rows[:-1], 24)
            torch.testing.assert_close(y, plain(model[name], x), rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(y, F.linear(x, model[name].weight, model[name].bias), rtol=1e-6, atol=1e-6)
    assert all("forward" not in m.__dict__ for m in model.values())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_a_weight_changed_in_place_is_honoured_from_the_next_refresh():
    """generate refreshes before every step: a weight edited in place between steps is read anew."""
    model = layers()
    x = torch.randn(1, 8)
    with torch.no_grad(), DecodingLayout(model) as layout:
        model["wide"].weight.mul_(-2.0)
        model["wide"].bias.zero_()  # the bias is read where it lives, with no copy
        layout.refresh()
        torch.testing.assert_close(model["wide"](x), plain(model["wide"], x), rtol=1e-5, atol=1e-5)


def test_disabled_leaves_every_layer_as_it_is():
    model = layers()
    with DecodingLayout(model, enabled=False) as layout:
        layout.refresh()
        assert all("forward" not in m.__dict__ for m in model.values())


def test_restored_after_an_error_and_when_nested():
    model = layers()
    with pytest.raises(RuntimeError, match="inside"), DecodingLayout(model):
        raise RuntimeError("inside")
    assert "forward" not in model["wide"].__dict__
    with DecodingLayout(model):
        inner_forward = model["wide"].forward
        with DecodingLayout(model):
            assert model["wide"].forward is inner_forward  # a module with a forward of its own is left alone
        assert model["wide"].forward is inner_forward
    assert "forward" not in model["wide"].__dict__


def test_a_linear_subclass_with_its_own_forward_is_left_alone():
    class LowRank(nn.Linear):
        def __init__(self):
            super().__init__(8, 24)
            self.extra = nn.Parameter(torch.ones(24))

        def forward(self, x):
            return super().forward(x) + self.extra

    model = nn.Sequential(LowRank())
    x = torch.randn(1, 8)
    expected = model(x)
    with torch.no_grad(), DecodingLayout(model):
        assert "forward" not in model[0].__dict__
        torch.testing.assert_close(model(x), expected)


def test_generate_leaves_the_model_as_it_was_even_when_a_callback_raises():
    torch.manual_seed(0)
    model = build_model(ModelConfig(**SHAPE))

    def fail(_):
        raise KeyError("stop")

    with pytest.raises(KeyError):
        model.generate(torch.tensor([[1, 2, 3]]), 4, until=fail)
    assert not any("forward" in m.__dict__ for m in model.modules())
    assert model.training  # the train/eval mode it had


def test_cached_decoding_in_the_layout_equals_full_recomputation():
    """The logits of every decoded token (the LM head's tied weight included, read through the copy)
    equal the full forward over the same tokens."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(**SHAPE, tie_embeddings=True)).eval()
    out = model.generate(torch.tensor([[1, 2, 3]]), 10, temperature=0.0)
    caches, steps = model.make_caches(), []
    with torch.no_grad(), DecodingLayout(model):
        steps.append(model(out[:, :3], caches=caches)[0][:, -1])
        for t in range(3, out.shape[1] - 1):
            steps.append(model(out[:, t : t + 1], caches=caches)[0][:, -1])
        full = model(out[:, :-1])[0]
    torch.testing.assert_close(torch.stack(steps, 1), full[:, 2:], rtol=1e-4, atol=1e-5)
    assert torch.equal(torch.stack(steps, 1).argmax(-1), out[:, 3:])


def test_a_model_built_in_inference_mode_decodes():
    """Inference tensors keep no version counter: the copy is used without one."""
    with torch.inference_mode():
        torch.manual_seed(0)
        model = build_model(ModelConfig(**SHAPE)).eval()
        out = model.generate(torch.tensor([[1, 2, 3]]), 5, temperature=0.0)
        reference = model(out[:, :-1])[0][:, 2:].argmax(-1)
    assert torch.equal(out[:, 3:], reference)


def test_a_parametrized_linear_is_left_alone():
    model = nn.Sequential(nn.utils.parametrizations.weight_norm(nn.Linear(8, 24)))
    with DecodingLayout(model):
        assert "forward" not in model[0].__dict__


def test_generate_reads_weights_changed_between_its_steps():
    """A callback that edits a weight in place mid-generation is honoured from the next step, as it
    would be without the copies: here the untied LM head is zeroed after the first token."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(**SHAPE, tie_embeddings=False)).eval()
    seen = []

    def greedy_then_zero_the_head(logits):
        seen.append(logits.clone())
        model.head.weight.zero_()  # generate runs under no_grad
        return logits.argmax(-1, keepdim=True)

    model.generate(torch.tensor([[1, 2, 3]]), 3, sample=greedy_then_zero_the_head)
    assert seen[0].abs().sum() > 0
    assert all(torch.equal(logits, torch.zeros_like(logits)) for logits in seen[1:])
