"""The memory estimates of `slmlab info` against what a training step and a filled KV cache really
hold on CPU: weights, gradients and AdamW state counted from the tensors, activations as the bytes
autograd keeps for backward (unique storages). Each estimate must be within 25%."""

from __future__ import annotations

import pytest
import torch

from slmlab.config import ModelConfig, TrainConfig
from slmlab.model import build_model, model_stats
from slmlab.training.optim import build_optimizer


def kept_for_backward(model, x) -> tuple[torch.Tensor, int]:
    storages: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        _, loss = model(x, x)
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return loss, sum(n for ptr, n in storages.items() if ptr not in weights)


@pytest.mark.parametrize(
    "shape",
    [
        {"n_layer": 4, "n_head": 4, "d_model": 128, "vocab_size": 256, "batch": 8, "seq": 128},
        {"n_layer": 2, "n_head": 4, "d_model": 192, "d_ff": 768, "vocab_size": 76, "batch": 16, "seq": 256},
    ],
)
def test_training_memory_estimate_within_25_percent(shape):
    batch, seq = shape.pop("batch"), shape.pop("seq")
    cfg = ModelConfig(block_size=seq, **shape)
    torch.manual_seed(0)
    model = build_model(cfg)
    optimizer = build_optimizer(model, TrainConfig(), torch.device("cpu"))
    loss, activations = kept_for_backward(model, torch.randint(0, cfg.vocab_size, (batch, seq)))
    loss.backward()
    optimizer.step()
    measured = {
        "weights": sum(p.nbytes for p in model.parameters()),
        "gradients": sum(p.grad.nbytes for p in model.parameters()),
        "optimizer": sum(t.nbytes for state in optimizer.state.values() for t in state.values() if t.dim() > 0),
        "activations": activations,
    }
    estimate = model_stats(model, cfg).training_bytes(batch, seq)
    for part in ("weights", "gradients", "optimizer"):
        assert estimate[part] == measured[part], part
    assert estimate["activations"] == pytest.approx(measured["activations"], rel=0.25)
    assert estimate["total"] == pytest.approx(sum(measured.values()), rel=0.25)


def test_traced_estimate_for_the_tape_graph_within_25_percent():
    from slmlab.model.accounting import traced_activation_bytes
    from slmlab.variants.tape import TapeConfig

    cfg = ModelConfig(
        arch="tape",
        vocab_size=76,
        n_head=4,
        d_model=64,
        block_size=128,
        pos="sinusoidal",
        head="student_t",
        tape=TapeConfig(n_critics=2, critic_layers=2, rnn_dim=64),
    )
    torch.manual_seed(0)
    _, measured = kept_for_backward(build_model(cfg), torch.randint(0, 76, (4, 128)))
    with torch.device("meta"):
        traced = traced_activation_bytes(build_model(cfg), 4, 128)
    assert traced == pytest.approx(measured, rel=0.25)


def test_inference_memory_estimate_counts_weights_and_a_full_kv_cache():
    cfg = ModelConfig(n_layer=3, n_head=4, d_model=64, vocab_size=100, block_size=96)
    model = build_model(cfg).eval()
    caches = model.make_caches()
    with torch.no_grad():
        model(torch.randint(0, 100, (2, 96)), caches=caches)
    cache_bytes = sum(c.k.nbytes + c.v.nbytes for c in caches)
    estimate = model_stats(model, cfg).inference_bytes(2, 96)
    assert estimate["kv_cache"] == cache_bytes
    assert estimate["weights"] == sum(p.nbytes for p in model.parameters())
