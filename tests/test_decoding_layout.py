"""DecodingLayout: while a CPU model decodes, its wide nn.Linear layers multiply by an (in, out)
copy of their weight. The products equal nn.Linear's to float rounding, only wide layers are
touched, a weight changed in place is honoured and kept, and every weight is in its own storage
afterwards (also after an error, and when generations nest)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from slmlab.config import ModelConfig
from slmlab.model import build_model
from slmlab.model.decoding_layout import MAX_ROWS, DecodingLayout

SHAPE = {"n_layer": 2, "n_head": 2, "d_model": 32, "block_size": 32, "vocab_size": 50}


def layers():
    torch.manual_seed(0)
    return nn.ModuleDict({"wide": nn.Linear(8, 24), "unbiased": nn.Linear(8, 24, bias=False), "narrow": nn.Linear(24, 8)})


def plain(module: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """The naive reference: bias + Σ_i x_i W_oi, written out."""
    y = (x[..., None, :] * module.weight).sum(-1)
    return y if module.bias is None else y + module.bias


def swapped(module: nn.Linear) -> bool:
    """Whether the layer's weight is the (out, in) view of an (in, out) copy."""
    return module.weight.stride() == (1, module.out_features)


@pytest.mark.parametrize("rows", [(1, 8), (3, 1, 8), (2, 5, 8)])
def test_products_equal_nn_linear_within_the_block_and_the_modules_are_restored(rows):
    model = layers()
    own = {name: m.weight.data for name, m in model.items()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad(), DecodingLayout(model):
        assert swapped(model["wide"]) and swapped(model["unbiased"])
        assert not swapped(model["narrow"])  # out <= in: the (out, in) layout is the faster one
        for name in ("wide", "unbiased"):
            x = torch.randn(*rows[:-1], 8)
            y = model[name](x)
            assert y.shape == (*rows[:-1], 24)
            torch.testing.assert_close(y, plain(model[name], x), rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(y, F.linear(x, own[name], model[name].bias), rtol=1e-6, atol=1e-6)
    assert all(m.weight.data is own[name] or torch.equal(m.weight, own[name]) for name, m in model.items())
    assert all(m.weight.is_contiguous() and m.weight.data_ptr() == own[name].data_ptr() for name, m in model.items())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_a_weight_changed_in_place_is_read_at_once_and_kept_afterwards():
    """An edit inside the layout lands in the copy (the next product reads it) and, on leaving,
    in the weight's own storage."""
    model = layers()
    x = torch.randn(1, 8)
    expected = model["wide"].weight.detach() * -2.0
    with torch.no_grad(), DecodingLayout(model):
        model["wide"].weight.mul_(-2.0)
        model["wide"].bias.zero_()  # the bias is never swapped
        torch.testing.assert_close(model["wide"](x), plain(model["wide"], x), rtol=1e-5, atol=1e-5)
    assert model["wide"].weight.is_contiguous()
    assert torch.equal(model["wide"].weight, expected)
    assert torch.equal(model["wide"].bias, torch.zeros(24))


def test_disabled_leaves_every_layer_as_it_is():
    model = layers()
    with DecodingLayout(model, enabled=False):
        assert not any(swapped(m) for m in model.values())


def test_restored_after_an_error_and_when_nested():
    model = layers()
    own = model["wide"].weight.data
    with pytest.raises(RuntimeError, match="inside"), DecodingLayout(model):
        raise RuntimeError("inside")
    assert model["wide"].weight.data_ptr() == own.data_ptr() and not swapped(model["wide"])
    with DecodingLayout(model):
        outer_copy = model["wide"].weight.data_ptr()
        with DecodingLayout(model) as inner:
            assert not inner.lent  # already swapped: the outer layout owns them
            assert model["wide"].weight.data_ptr() == outer_copy
        assert swapped(model["wide"]) and model["wide"].weight.data_ptr() == outer_copy
    assert model["wide"].weight.data_ptr() == own.data_ptr() and not swapped(model["wide"])


def test_a_tied_weight_is_swapped_once_for_both_its_uses():
    embedding, head = nn.Embedding(24, 8), nn.Linear(8, 24, bias=False)
    head.weight = embedding.weight
    model = nn.ModuleList([embedding, head])
    own = embedding.weight.data.clone()
    with torch.no_grad(), DecodingLayout(model) as layout:
        assert len(layout.lent) == 1 and swapped(head)
        assert torch.equal(embedding(torch.tensor([3, 5])), own[[3, 5]])
        embedding.weight[3].fill_(1.0)
    own[3] = 1.0
    assert torch.equal(embedding.weight, own) and embedding.weight.is_contiguous()


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
        assert not swapped(model[0])
        torch.testing.assert_close(model(x), expected)


def test_generate_leaves_the_model_as_it_was_even_when_a_callback_raises():
    torch.manual_seed(0)
    model = build_model(ModelConfig(**SHAPE))

    def fail(_):
        raise KeyError("stop")

    with pytest.raises(KeyError):
        model.generate(torch.tensor([[1, 2, 3]]), 4, until=fail)
    assert all(p.is_contiguous() for p in model.parameters())  # every weight back in its own layout
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
    """Inference tensors keep no version counter: the copy is written back on leaving, so an edit
    made during the call is kept (here: the head zeroed by a callback)."""
    with torch.inference_mode():
        torch.manual_seed(0)
        model = build_model(ModelConfig(**SHAPE, tie_embeddings=False)).eval()
        out = model.generate(torch.tensor([[1, 2, 3]]), 5, temperature=0.0)
        reference = model(out[:, :-1])[0][:, 2:].argmax(-1)
        with DecodingLayout(model) as layout:
            assert layout.lent
            model.head.weight.zero_()
    assert torch.equal(out[:, 3:], reference)
    assert model.head.weight.is_contiguous() and not model.head.weight.any()


def test_a_parametrized_linear_and_an_inference_tensor_outside_inference_mode_are_left_alone():
    model = nn.Sequential(nn.utils.parametrizations.weight_norm(nn.Linear(8, 24)))
    with DecodingLayout(model) as layout:
        assert not layout.lent and model[0].weight.is_contiguous()
    with torch.inference_mode():
        built = layers()
    with DecodingLayout(built) as layout:
        assert not layout.lent


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


@pytest.mark.parametrize("compile", [False, "eager"])
def test_eager_and_compiled_decoding_read_the_copies_at_one_or_two_rows_only(compile):
    """generate lends the copies to batches of up to MAX_ROWS rows, compiled or not (the
    parameter's strides change, its forward does not), and gives each weight its own storage back."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(**SHAPE, tie_embeddings=False)).eval()
    strides = []

    def greedy(logits):
        strides.append(model.head.weight.stride())
        return logits.argmax(-1, keepdim=True)

    for rows in (1, MAX_ROWS, MAX_ROWS + 1):
        model.generate(torch.tensor([[1, 2, 3]] * rows), 2, sample=greedy, compile=compile)
    assert strides == [(1, 50)] * 4 + [(32, 1)] * 2
    assert all(p.is_contiguous() for p in model.parameters())
