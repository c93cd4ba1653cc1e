"""Each attention pattern's fast path on each device, in float32 and under bf16 autocast, against the
same weights' float64 result on the CPU: logits, loss and every parameter's gradient, by relative
error ‖ours − reference‖ / ‖reference‖ (METHOD: float32 lands far under 1e-3, bf16 operands between
1e-3 and 1e-2; NaN never passes)."""

from __future__ import annotations

import copy

import pytest
import torch

from slmlab.analysis.probe import Probe
from slmlab.config import ModelConfig
from slmlab.training.kernel_choice import set_kernel
from slmlab.training.runtime import autocast
from slmlab.variants.smat import SmatConfig
from tests.conftest import DEVICES

SHAPE = {"vocab_size": 61, "n_layer": 2, "n_head": 2, "d_model": 32, "block_size": 64}
MODELS = {
    "learned positions": {},
    "rope, rmsnorm, swiglu": {"pos": "rope", "norm": "rmsnorm", "mlp": "swiglu"},
    "smat full": {"smat": SmatConfig(use_S=True, use_G=True, s_dim=8)},
    "block_local windows": {"pos": "rope", "attention": "block_local", "local_block": 8, "local_kernel": "windows"},
    "block_local flex": {"pos": "rope", "attention": "block_local", "local_block": 8, "local_kernel": "flex"},
    "self area": {"self_area": {"enabled": True, "self_dim": 16}},
    "tape": {"arch": "tape", "pos": "sinusoidal", "tape": {"n_critics": 2, "coda_layers": 1, "critic_layers": 1, "rnn_dim": 8}},
}
BOUNDS = {"fp32": (1e-5, 1e-4), "bf16": (2e-2, 2e-2)}  # (logits and loss, gradients)
CASES = [
    (device, name)
    for device in DEVICES
    for name in MODELS
    if name != "block_local flex" or device == "cuda"  # FlexAttention trains on CUDA only
]


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    ours = ours.detach().double().cpu()
    return ((ours - reference).norm() / reference.norm()).item()


def forward_backward(model, idx, targets, device: torch.device, dtype: str):
    with autocast(device, dtype):
        logits = model(idx)[0].detach()  # (training forwards with targets return no logits: the fused loss)
        loss = model(idx, targets)[1]
    loss.backward()
    grads = torch.cat([p.grad.detach().double().cpu().flatten() for p in model.parameters() if p.grad is not None])
    return logits, loss, grads


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("device, name", CASES)
def test_fast_path_agrees_with_float64_to_its_precision(device, name, dtype):
    cfg = ModelConfig(**SHAPE, **MODELS[name])
    probe = Probe(cfg, seed=3)
    reference_model = probe.build(torch.float64, moved=True).train()  # off its init: gates and Self Area open
    model = copy.deepcopy(reference_model).float().to(device)
    set_kernel(reference_model, "windows")  # the same pattern: FlexAttention has no backward on the CPU
    device = torch.device(device)
    idx, targets = probe.tokens, probe.targets
    reference = forward_backward(reference_model, idx, targets, torch.device("cpu"), "fp32")
    ours = forward_backward(model, idx.to(device), targets.to(device), device, dtype)
    assert all(torch.isfinite(t).all() for t in ours)
    logit_bound, grad_bound = BOUNDS[dtype]
    errors = [relative_error(o, r) for o, r in zip(ours, reference)]
    assert errors[0] <= logit_bound and errors[1] <= logit_bound and errors[2] <= grad_bound, (
        f"relative errors: logits {errors[0]:.2e}, loss {errors[1]:.2e}, gradients {errors[2]:.2e}"
    )
