"""The LM head and its cross-entropy, fused and chunked over rows: no (N, V) logits tensor.

For hidden states h (N, d), head weight W (V, d) and targets y (N,), of which the rows with a
negative target are ignored (PyTorch's and Hugging Face's -100, nanoGPT's -1; m_i = [y_i >= 0],
M = sum_i m_i):

    z = h W^T,  loss = (1/M) sum_i m_i (logsumexp(z_i) - z_{i, y_i})
    dloss/dz = m (softmax(z) - onehot(y)) / M,  dloss/dh = (dloss/dz) W,  dloss/dW = (dloss/dz)^T h

(NaN when every target is ignored, as F.cross_entropy gives.) The mask multiplies each chunk's
gradient rows while the chunk is in cache, and needs no host sync.

Rows are processed in chunks: each chunk's logits are made, turned into their gradient in place
and multiplied out into dloss/dh and dloss/dW at once, so forward keeps only (N, d) + (V, d)
gradients for backward instead of (N, V) logits and their log-softmax. On CPU a chunk holds about
2M logits (8 MB in fp32), and at least 256 rows: there every fresh (N, V) buffer costs page faults,
and chunking took the loss from a fifth of a small model's training step to a few percent. On a GPU
a chunk holds about 64M (256 MB). Chunks of 2M logits and at least 32 rows were 41 rows at GPT-2's
vocabulary: 100 of them per micro-batch of 4,096 rows (an H200, 2026-12-04), each a handful of
kernel launches eagerly and all of them unrolled into the graph under torch.compile (on 2 CPU
cores, a 2-layer model's compiled first step took 104 s at 41 rows, 27.6 s at 256). The matmul
FLOPs are the usual 6 N V d, and under autocast all three products run in its dtype (the weight
gradient's too, accumulated over chunks in float32).
"""

from __future__ import annotations

import torch

# logits per chunk by device type; any other device: ACCELERATOR_CHUNK_ELEMENTS. The meta device
# (shapes only: memory and FLOP counts) takes every row at once: its saved tensors and FLOPs are
# those of any chunking, and a batch of 2**40 rows was a loop of 2**35 chunks before a refusal
CHUNK_ELEMENTS = {"cpu": 1 << 21, "meta": 1 << 62}
ACCELERATOR_CHUNK_ELEMENTS = 1 << 26


def _chunk_rows(vocab_size: int, device: torch.device) -> int:
    return max(256, CHUNK_ELEMENTS.get(device.type, ACCELERATOR_CHUNK_ELEMENTS) // vocab_size)


def _autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The dtype autocast runs products in on `device`; None where it is off, or where the device
    has no autocast (meta: FLOP and memory counts, never compiled). torch.compile does not trace
    the availability check: torch 2.11's Dynamo cannot, and broke the compiled training step's graph
    at the loss, which then ran eagerly (an H200, 2026-12-04)."""
    if not torch.compiler.is_compiling() and not torch.amp.is_autocast_available(device.type):
        return None
    if not torch.is_autocast_enabled(device.type):
        return None
    return torch.get_autocast_dtype(device.type)


def _accumulation_dtype(h: torch.Tensor) -> torch.dtype:
    """float32 for bf16/fp16/fp32 inputs, float64 for float64 (so tests can compare exactly)."""
    return torch.promote_types(h.dtype, torch.float32)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The gradients of the inputs that need one only: a frozen head (SMT's stage 2) costs no
        (V, d) product, and frozen layers below it no (N, d) one."""
        n, acc = h.shape[0], _accumulation_dtype(h)
        grad_h = torch.empty_like(h) if h.requires_grad else None
        grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if weight.requires_grad else None
        total = torch.zeros((), dtype=acc, device=h.device)
        kept = targets >= 0
        step = _chunk_rows(weight.shape[0], h.device)
        low = _autocast_dtype(h.device)
        for start in range(0, n, step):
            rows = slice(start, min(n, start + step))
            h_chunk, y, m = h[rows], targets[rows].clamp_min(0), kept[rows]
            logits = (h_chunk @ weight.t()).to(acc)  # (c, V)
            lse = torch.logsumexp(logits, dim=-1)
            total += ((lse - logits.gather(1, y[:, None]).squeeze(1)) * m).sum()
            grad = logits.sub_(lse[:, None]).exp_()  # softmax, in place
            grad[torch.arange(len(y), device=y.device), y] -= 1.0
            grad.mul_(m[:, None])  # an ignored row's gradient is 0 (the chunk is in cache: ~free)
            if grad_h is not None:
                grad_h[rows] = (grad.to(weight.dtype) @ weight).to(h.dtype)
            if grad_w is not None:
                if low is not None:  # autocast leaves an out= product in float32: cast as it casts the two above
                    grad_w += grad.t().to(low) @ h_chunk.to(low)
                else:
                    torch.addmm(grad_w, grad.t(), h_chunk.to(acc), out=grad_w)  # not addmm_: flop_counter skips in-place ops
        count = kept.sum().to(acc)
        ctx.save_for_backward(grad_h, grad_w, count)
        ctx.weight_dtype = weight.dtype
        return total / count

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        grad_h, grad_w, count = ctx.saved_tensors
        scale = grad_output / count
        return (
            None if grad_h is None else grad_h * scale.to(grad_h.dtype),
            None if grad_w is None else (grad_w * scale).to(ctx.weight_dtype),
            None,
        )


@torch.no_grad()
def _linear_cross_entropy_value(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    acc = _accumulation_dtype(h)
    total = torch.zeros((), dtype=acc, device=h.device)
    kept = targets >= 0
    step = _chunk_rows(weight.shape[0], h.device)
    for start in range(0, h.shape[0], step):
        logits = (h[start : start + step] @ weight.t()).to(acc)
        y, m = targets[start : start + step].clamp_min(0), kept[start : start + step]
        total += ((torch.logsumexp(logits, dim=-1) - logits.gather(1, y[:, None]).squeeze(1)) * m).sum()
    return total / kept.sum().to(acc)


def linear_cross_entropy(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the logits h W^T, (N, d) x (V, d) against (N,) targets, in float32
    (float64 for float64 inputs); rows with a negative target are left out of the mean.

    Without autograd (evaluation under no_grad) it only computes the value."""
    if targets.dim() != 1 or targets.shape[0] != h.shape[0]:  # the chunks would pair rows with the wrong targets
        raise ValueError(f"targets of shape {tuple(targets.shape)} for {h.shape[0]} rows: give one target per row")
    if torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad):
        return _LinearCrossEntropy.apply(h, weight, targets)
    return _linear_cross_entropy_value(h, weight, targets)
