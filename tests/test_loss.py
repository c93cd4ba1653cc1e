"""The fused, chunked LM-head cross-entropy equals logits + F.cross_entropy, value and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from slmlab.model import loss as loss_module
from slmlab.model.loss import linear_cross_entropy


@pytest.mark.parametrize("vocab, rows", [(50, 7), (3000, 1500)])  # one chunk; many chunks with a ragged tail
def test_matches_the_naive_reference_in_float64(vocab, rows):
    torch.manual_seed(0)
    h = torch.randn(rows, 16, dtype=torch.float64, requires_grad=True)
    w = torch.randn(vocab, 16, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, vocab, (rows,))
    ours = linear_cross_entropy(h, w, y)
    (ours * 3.0).backward()
    grads = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    reference = F.cross_entropy(h @ w.t(), y)
    (reference * 3.0).backward()
    assert loss_module._chunk_rows(vocab) < rows or vocab == 50
    torch.testing.assert_close(ours, reference, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grads[0], h.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grads[1], w.grad, rtol=1e-10, atol=1e-12)


def test_gradcheck():
    torch.manual_seed(1)
    h = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(9, 4, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 9, (5,))
    assert torch.autograd.gradcheck(lambda a, b: loss_module._LinearCrossEntropy.apply(a, b, y), (h, w))


def test_without_autograd_only_the_value_is_computed():
    h, w, y = torch.randn(6, 4), torch.randn(11, 4), torch.randint(0, 11, (6,))
    with torch.no_grad():
        value = linear_cross_entropy(h, w, y)
    assert value.grad_fn is None
    torch.testing.assert_close(value, F.cross_entropy(h @ w.t(), y))
