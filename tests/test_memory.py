"""The memory estimates of `slmlab info` against what a training step and a filled KV cache really
hold on CPU: weights, gradients and AdamW state counted from the tensors, activations as the bytes
autograd keeps for backward (unique storages): activations within 2%, everything else exact."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from slmlab.config import ModelConfig, TrainConfig
from slmlab.model import build_model, model_stats
from slmlab.model.accounting import cache_bytes, traced_activation_bytes
from slmlab.training.optim import build_optimizer
from slmlab.variants.smat import SmatConfig
from slmlab.variants.tape import TapeConfig


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


TRAINED = {  # ModelConfig fields, batch, seq
    "decoder": ({"n_layer": 4, "n_head": 4, "d_model": 128, "vocab_size": 256}, 8, 128),
    "decoder, ff 768": ({"n_layer": 2, "n_head": 4, "d_model": 192, "d_ff": 768, "vocab_size": 76}, 16, 256),
    "smat full": (
        {"n_layer": 2, "n_head": 4, "d_model": 128, "vocab_size": 256, "smat": SmatConfig(use_S=True, use_G=True)},
        4,
        128,
    ),
    "swiglu, rmsnorm, rope": (
        {"n_layer": 2, "n_head": 4, "d_model": 128, "vocab_size": 256, "mlp": "swiglu", "norm": "rmsnorm", "pos": "rope"},
        4,
        128,
    ),
    "block-local": (
        {"n_layer": 2, "n_head": 4, "d_model": 128, "vocab_size": 256, "attention": "block_local", "local_block": 16},
        4,
        128,
    ),
    "tape": (
        {
            "arch": "tape",
            "vocab_size": 76,
            "n_head": 4,
            "d_model": 64,
            "pos": "sinusoidal",
            "head": "student_t",
            "tape": TapeConfig(n_critics=2, critic_layers=2, rnn_dim=64),
        },
        4,
        128,
    ),
}


@pytest.mark.parametrize("kind", TRAINED)
def test_training_memory_is_what_a_training_step_holds(kind):
    """Weights, gradients and AdamW state exactly; activations traced on the meta device (attention
    as the fused kernel, whose backward keeps no T x T probabilities) within 2% of what autograd
    keeps on CPU, for every architecture: a closed form missed SMAT's and SwiGLU's by 30%."""
    fields, batch, seq = TRAINED[kind]
    cfg = ModelConfig(block_size=seq, **fields)
    torch.manual_seed(0)
    model = build_model(cfg)
    optimizer = build_optimizer(model, TrainConfig(), torch.device("cpu"))
    loss, activations = kept_for_backward(model, torch.randint(0, cfg.vocab_size, (batch, seq)))
    loss.backward()
    optimizer.step()
    measured = {
        "weights": sum(p.nbytes for p in model.parameters()),
        "gradients": sum(p.grad.nbytes for p in model.parameters()),
        "optimizer": sum(t.nbytes for state in optimizer.state.values() for key, t in state.items() if key != "step"),
    }
    with torch.device("meta"):
        meta = build_model(cfg)
    estimate = model_stats(meta, cfg).training_bytes(traced_activation_bytes(meta, batch, seq))
    for part in ("weights", "gradients", "optimizer"):
        assert estimate[part] == measured[part], part
    assert estimate["activations"] == pytest.approx(activations, rel=0.02)
    assert traced_activation_bytes(meta, batch, seq, "bf16") == pytest.approx(activations / 2, rel=0.02)


CACHED = {  # model fields -> the bytes its caches hold after 96 tokens (L = 3 layers, d = 64, 4 heads of 16)
    "decoder": ({}, 2 * 3 * 96 * 64 * 4),
    "smat: keys and values widened by s_dim, and the running sum of s": (
        {"smat": SmatConfig(use_S=True, use_G=True, s_dim=8)},
        2 * 3 * 96 * 4 * (16 + 8) * 4 + 3 * 8 * 4,
    ),
    "block-local: a buffer of twice the 2B window": (
        {"attention": "block_local", "pos": "rope", "local_block": 8},
        2 * 3 * 32 * 64 * 4,
    ),
    "tape: 3 layers, a coda layer and 2 critics of 1 layer": (
        {"arch": "tape", "pos": "sinusoidal", "tape": TapeConfig(n_critics=2, critic_layers=1, coda_layers=1, rnn_dim=8)},
        2 * 6 * 96 * 64 * 4,
    ),
}


@pytest.mark.parametrize("kind", CACHED)
def test_the_decoding_cache_is_counted_on_the_caches_the_model_makes(kind):
    """`slmlab info`'s decoding cache is counted on the caches a model built on the meta device
    makes and fills: a closed form 2 L T d missed SMAT's wider keys and values and a block-local
    layer's window (O(B) whatever the context) and a TapeTransformer's other layers, and equals
    what a real filled cache holds."""
    fields, expected = CACHED[kind]
    cfg = ModelConfig(n_layer=3, n_head=4, d_model=64, vocab_size=100, block_size=96, **fields)
    caches = build_model(cfg).eval().make_caches()
    with torch.no_grad():
        build_model(cfg).eval()(torch.randint(0, 100, (1, 96)), caches=caches)
    held = [t for c in caches for t in (c.k, c.v, *c.state.values()) if torch.is_tensor(t)]
    real = sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in held}.values())
    with torch.device("meta"):
        meta = build_model(cfg)
        longer = build_model(dataclasses.replace(cfg, block_size=192))
    counted = cache_bytes(meta, 96, ("fp32", "bf16"))
    assert counted["fp32"] == real == expected
    assert counted["bf16"] == expected // 2
    assert (cache_bytes(longer, 192)["fp32"] == expected) == kind.startswith("block-local")


def test_bf16_activations_under_cpu_autocast_are_about_1_4x_the_all_bf16_count():
    """What `slmlab info` says beside a bf16 run's activations: they are counted as if every one
    were bf16, and CPU autocast, which keeps the residual stream and norms in fp32, holds ~1.4x."""
    cfg = ModelConfig(n_layer=4, n_head=4, d_model=128, vocab_size=2000, block_size=128)
    torch.manual_seed(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, activations = kept_for_backward(build_model(cfg), torch.randint(0, 2000, (4, 128)))
    with torch.device("meta"):
        counted = traced_activation_bytes(build_model(cfg), 4, 128, "bf16")
    assert 1.25 < activations / counted < 1.55
