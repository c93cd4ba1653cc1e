"""The fused, chunked LM-head cross-entropy equals logits + F.cross_entropy, value and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from slmlab.model import loss as loss_module
from slmlab.model.loss import linear_cross_entropy


@pytest.mark.parametrize("vocab, rows", [(50, 7), (3000, 1500)])  # one chunk; many chunks with a ragged tail
def test_matches_the_naive_reference_in_float64(vocab, rows, device, monkeypatch):
    monkeypatch.setattr(loss_module, "ACCELERATOR_CHUNK_ELEMENTS", loss_module.CHUNK_ELEMENTS["cpu"])  # many chunks on a GPU too
    torch.manual_seed(0)
    h = torch.randn(rows, 16, dtype=torch.float64).to(device).requires_grad_()
    w = torch.randn(vocab, 16, dtype=torch.float64).to(device).requires_grad_()
    y = torch.randint(0, vocab, (rows,)).to(device)
    ours = linear_cross_entropy(h, w, y)
    (ours * 3.0).backward()
    grads = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    reference = F.cross_entropy(h @ w.t(), y)
    (reference * 3.0).backward()
    assert loss_module._chunk_rows(vocab, device) < rows or vocab == 50
    torch.testing.assert_close(ours, reference, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grads[0], h.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grads[1], w.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("frozen", ["", "weight", "h"])
def test_counted_flops_are_6nvd_and_a_frozen_input_gets_no_gradient(frozen):
    """torch.utils.flop_counter (what a FLOPs budget and `slmlab info` count) missed the head's
    weight gradient (an in-place addmm_ it does not see), 2 N V d of the 6 N V d; and a frozen head
    (SMT's stage 2) still had its (V, d) gradient computed. Each product is counted, and made only
    for an input that needs it."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    rows, vocab, d = 3000, 1000, 16  # several chunks
    h = torch.randn(rows, d, dtype=torch.float64, requires_grad=frozen != "h")
    w = torch.randn(vocab, d, dtype=torch.float64, requires_grad=frozen != "weight")
    y = torch.randint(0, vocab, (rows,))
    with FlopCounterMode(display=False) as counter:
        linear_cross_entropy(h, w, y).backward()
    assert counter.get_total_flops() == (4 if frozen else 6) * rows * vocab * d
    reference_h, reference_w = h.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    F.cross_entropy(reference_h @ reference_w.t(), y).backward()
    for ours, reference, name in ((h, reference_h, "h"), (w, reference_w, "weight")):
        if name == frozen:
            assert ours.grad is None
        else:
            torch.testing.assert_close(ours.grad, reference.grad, rtol=1e-10, atol=1e-12)


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


def _masked_reference(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Naive: the mean of -log softmax(z_i)[y_i] over the rows whose target is not negative (the
    rows picked by a list of their indices)."""
    kept = torch.tensor([i for i in range(len(y)) if y[i] >= 0])
    return -logits.log_softmax(-1)[kept, y[kept]].mean()


@pytest.mark.parametrize("vocab, rows", [(50, 40), (3000, 1500)])
def test_negative_targets_are_ignored_as_pytorch_and_nanogpt_ignore_them(vocab, rows):
    """-100 (PyTorch's and Hugging Face's ignore_index) and -1 (nanoGPT's) leave a row out of the
    mean; the model's loss raised 'index -100 is out of bounds' before."""
    torch.manual_seed(2)
    h = torch.randn(rows, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(vocab, 8, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, vocab, (rows,))
    y[::3], y[1::5] = -100, -1
    ours = linear_cross_entropy(h, w, y)
    grads = torch.autograd.grad(ours, (h, w))
    reference = _masked_reference(h @ w.t(), y)
    expected = torch.autograd.grad(reference, (h, w))
    torch.testing.assert_close(ours, reference, rtol=1e-12, atol=1e-12)
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    assert torch.all(grads[0][y < 0] == 0)  # an ignored row gets no gradient
    with torch.no_grad():
        torch.testing.assert_close(linear_cross_entropy(h, w, y), reference.detach(), rtol=1e-12, atol=1e-12)
    assert linear_cross_entropy(h, w, torch.full_like(y, -100)).isnan()  # nothing to average, as F.cross_entropy


@pytest.mark.parametrize("head", ["linear", "student_t"])
def test_the_model_loss_ignores_negative_targets_for_every_head(head):
    from slmlab.config import ModelConfig
    from slmlab.model import build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(vocab_size=30, n_layer=1, n_head=2, d_model=16, block_size=16, head=head)).double()
    idx = torch.randint(0, 30, (2, 12))
    targets = torch.randint(0, 30, (2, 12))
    targets[0, :5], targets[1, -3:] = -100, -1
    _, loss = model(idx, targets)
    logits, _ = model(idx)
    reference = _masked_reference(logits.reshape(-1, 30), targets.reshape(-1))
    torch.testing.assert_close(loss, reference, rtol=1e-10, atol=1e-10)


def test_under_autocast_every_product_of_the_head_runs_in_its_dtype(device, monkeypatch):
    """The weight gradient's product was written into a float32 buffer (addmm's out=), which
    autocast leaves in float32: a third of the head's FLOPs at a GPU's float32 rate, 15x below its
    bf16 rate on an H200. Every product now runs in autocast's dtype, the sum over chunks in float32."""
    from torch.utils._python_dispatch import TorchDispatchMode

    products = []

    class Products(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.overloadpacket in (torch.ops.aten.mm, torch.ops.aten.addmm):
                products.append({a.dtype for a in args if isinstance(a, torch.Tensor)})
            return func(*args, **(kwargs or {}))

    monkeypatch.setattr(loss_module, "ACCELERATOR_CHUNK_ELEMENTS", loss_module.CHUNK_ELEMENTS["cpu"])  # 3 chunks everywhere
    torch.manual_seed(0)
    h = torch.randn(2500, 16).to(device).requires_grad_()
    w = torch.randn(2000, 16).to(device).requires_grad_()
    y = torch.randint(0, 2000, (2500,)).to(device)
    with torch.autocast(device.type, dtype=torch.bfloat16), Products():
        ours = linear_cross_entropy(h, w, y)
    ours.backward()
    assert len(products) == 3 * 3 and all(dtypes == {torch.bfloat16} for dtypes in products), products
    h64, w64 = h.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    reference = F.cross_entropy(h64 @ w64.t(), y)
    reference.backward()
    for name, got, expected in (("loss", ours, reference), ("dh", h.grad, h64.grad), ("dW", w.grad, w64.grad)):
        error = ((got.double() - expected).norm() / expected.norm()).item()
        assert error < 2e-2, f"{name}: relative error {error:.2e}"


@pytest.mark.parametrize("autocast", [False, True])
def test_the_compiled_loss_stays_in_one_graph_where_dynamo_cannot_trace_the_autocast_check(autocast, monkeypatch):
    """torch 2.11's Dynamo could not trace torch.amp.is_autocast_available: on an H200 the compiled
    training step broke its graph at the loss, which then ran eagerly. Here the check is made
    untraceable the same way (a graph break inside it); the loss must still compile whole."""
    from slmlab.analysis.decoding_checks import CountingBackend
    from slmlab.config import ModelConfig
    from slmlab.model import build_model

    available = torch.amp.is_autocast_available

    def untraceable(device_type):
        torch._dynamo.graph_break()
        return available(device_type)

    monkeypatch.setattr(torch.amp, "is_autocast_available", untraceable)
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = build_model(ModelConfig(vocab_size=40, n_layer=1, n_head=2, d_model=16, block_size=16))
    backend = CountingBackend()
    step = torch.compile(model, backend=backend, fullgraph=True)
    idx = torch.randint(0, 40, (2, 12))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        _, loss = step(idx, idx)
        _, eager = model(idx, idx)
    loss.backward()
    assert backend.graphs == 1
    torch.testing.assert_close(loss, eager)
