"""The size-and-cost table of a config: parameters, FLOPs per token, inference and training memory.

Shared by `slmlab info` and the report card. The model is built on the meta device, so even a
large preset costs no memory to describe."""

from __future__ import annotations

import torch

from ..config import RunConfig
from ..model import build_model, model_stats
from ..model.accounting import traced_activation_bytes
from ..tables import human
from ..tables import markdown_table


def describe(m) -> str:
    """One line on the model's shape."""
    head = f"{'tied' if m.tie_embeddings else 'untied'} {m.head} head"
    if m.arch == "tape":
        t = m.tape
        return (f"tape: coda {t.coda_layers} + {t.n_critics} critics x {t.critic_layers} layers (left/right stacks), "
                f"d_model {m.d_model}, {m.n_head} heads, MLP x{t.mlp_expand}, prophet RNN {t.rnn_dim or m.d_model} x {t.rnn_layers}, "
                f"moderator {t.moderator}, block {m.block_size}, vocab {m.vocab_size}, {head}")
    return (f"{m.arch}: {m.n_layer} layers x {m.d_model} d_model x {m.n_head} heads, d_ff {m.ff_dim}, "
            f"block {m.block_size}, vocab {m.vocab_size}, {head}")


def size_table(cfg: RunConfig, batch_size: int = 0, seq_len: int = 0) -> str:
    """Markdown table of the model's size and cost at (batch_size, seq_len) (default: the config's)."""
    with torch.device("meta"):
        model = build_model(cfg.model)
    stats = model_stats(model, cfg.model)
    batch = batch_size or cfg.train.batch_size
    seq = seq_len or cfg.data.seq_len
    train_mem = stats.training_bytes(batch, seq, cfg.train.dtype)
    m = cfg.model
    infer32, infer16 = stats.inference_bytes(1, m.block_size, "fp32"), stats.inference_bytes(1, m.block_size, "bf16")
    rows = [
        ("architecture", describe(m)),
        ("parameters", f"{stats.params:,} ({human(stats.params)})"),
        ("non-embedding parameters", f"{stats.non_embedding_params:,} ({human(stats.non_embedding_params)})"),
        (f"FLOPs / token (train, T={seq})", human(stats.flops_per_token(seq, training=True))),
        (f"FLOPs / token (inference, T={seq})", human(stats.flops_per_token(seq, training=False))),
        ("inference memory fp32 (weights + KV cache, 1 x block)", human(infer32["total"], "B")),
        ("inference memory bf16 (weights + KV cache, 1 x block)", human(infer16["total"], "B")),
    ]
    if m.arch != "decoder":  # no closed form for other graphs: trace one forward pass on the meta device
        train_mem["activations"] = traced_activation_bytes(model, batch, seq)
        train_mem["total"] = sum(v for k, v in train_mem.items() if k != "total")
    rows += [(f"training memory: {k} (batch {batch} x {seq})", human(v, "B")) for k, v in train_mem.items()]
    return markdown_table(("quantity", "value"), rows)
