"""Output-gated attention, as an slmlab plugin: a fifth idea in one file outside slmlab.

"Gated Attention for Large Language Models" (Qiu et al., arXiv 2505.06708) gates each head's
scaled-dot-product-attention output with a sigmoid of the block input. For the normed block
input h (B, T, d_model), heads of width D:

    Y_h = softmax(q_h k_h^T / sqrt(D) + M) v_h          (B, H, T, D), M the causal mask
    G   = sigmoid(W_g h + b_g)                          "elementwise": one gate per head dimension
                                                        (W_g: d_model -> H·D, the paper's G1);
                                                        "headwise": one gate per head (d_model -> H)
    out = W_o concat_h(G_h ⊙ Y_h)

The gate depends on the query position t only (h_t), so it is causal and needs nothing in the KV
cache. It is the natural control for SMAT's value gate G_j (a gate on the *keys'* values): if
SMAT's gain were "any gate helps", this gate would show it too.

The plugin registers, with the calls slmlab's own variants use:
- the attention extension "gated_attention" (its `output` method acts on the SDPA output),
- the config section [model.gated_attention] (enabled, granularity, bias_init),
- the interventions "gate_one" (G forced to 1: the trained model without its gate) and "gate_mean"
  (G replaced by its mean over tokens: its scale without its input dependence), for `slmlab ablate`,
- a float64 naive reference for `slmlab check`: explicit (T, T) matrices.

    slmlab check examples/plugins/gated_attention.toml
    slmlab sweep examples/plugins/gated_attention_sweep.toml --jobs 2
    slmlab ablate runs/gated_attention_sweep/gated_s0 --trust-plugins
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from slmlab.errors import ConfigError
from slmlab.model import naive
from slmlab.model.hooks import HookPoint
from slmlab.model.interventions import Intervention, constant
from slmlab.registry import ATTENTION_EXTENSIONS, INTERVENTIONS, NAIVE_REFERENCES, register_model_check, register_section


@dataclass
class GatedAttentionConfig:
    """Output gate on each head's attention output (this file's docstring has the equations).
    bias_init sets where the gate starts: sigmoid(bias_init) (0 -> 0.5)."""

    enabled: bool = False
    granularity: Literal["elementwise", "headwise"] = "elementwise"
    bias_init: float = 0.0


class OutputGate(nn.Module):
    """An attention extension with an `output` step: (B, H, T, D) head outputs -> gated ones."""

    padding_safe = True  # the gate reads each token's own h: left-padded batches decode exactly

    def __init__(self, cfg):
        super().__init__()
        section = cfg.gated_attention
        self.n_head, self.width = cfg.n_head, cfg.head_dim if section.granularity == "elementwise" else 1
        self.w_g = nn.Linear(cfg.d_model, self.n_head * self.width)
        nn.init.normal_(self.w_g.weight, std=cfg.init_std)
        nn.init.constant_(self.w_g.bias, section.bias_init)
        self.hook_gate = HookPoint()

    def gate(self, h: torch.Tensor) -> torch.Tensor:
        """G for h (B, T, d_model) -> (B, H, T, D or 1)."""
        B, T, _ = h.shape
        return torch.sigmoid(self.w_g(h)).view(B, T, self.n_head, self.width).transpose(1, 2)

    def forward(self, q, k, v, h, scale, state):
        return q, k, v, scale  # nothing before the attention

    def output(self, y: torch.Tensor, h: torch.Tensor, state) -> torch.Tensor:
        return y * self.hook_gate(self.gate(h)).to(y.dtype)


ATTENTION_EXTENSIONS.register("gated_attention", lambda cfg, layer: OutputGate(cfg) if cfg.gated_attention.enabled else None)
register_section(
    "gated_attention",
    GatedAttentionConfig,
    extends="attention",
    read_with={"granularity": ("enabled",), "bias_init": ("enabled",)},
)


@register_model_check
def check_gated_attention(m) -> None:
    if m.gated_attention.enabled and m.arch != "decoder":
        raise ConfigError(f"model.gated_attention needs model.arch = 'decoder', not '{m.arch}'")


def _mean_over_tokens(gate: torch.Tensor) -> torch.Tensor:
    """G (B, H, T, D) -> its mean over batch and tokens, per head and dimension: the gate's
    average scale without its dependence on the token."""
    return gate.mean(dim=(0, 2), keepdim=True).expand_as(gate)


INTERVENTIONS.register(
    "gated_attention",
    {
        i.name: i
        for i in (
            Intervention(
                "gate_one",
                "output gate G forced to 1 (the attention without its gate)",
                {"hook_gate": constant(torch.ones_like)},
                owner=OutputGate,
            ),
            Intervention(
                "gate_mean",
                "G replaced by its mean over tokens (its scale kept, its input dependence removed)",
                {"hook_gate": constant(_mean_over_tokens)},
                owner=OutputGate,
            ),
        )
    },
)


def naive_reference(attn, h: torch.Tensor, positions: torch.Tensor) -> torch.Tensor | None:
    """W_o concat(G ⊙ softmax(QK^T/sqrt(D) + M) V) with an explicit (T, T) mask, for a
    layer whose one extension is this gate, full or block-local (else None)."""
    allowed = naive.allowed_keys(attn.pattern, h.shape[1], h.device)  # (T, T): j <= i, within the window if block-local
    if allowed is None or [type(e) for e in attn.extensions] != [OutputGate]:
        return None
    B, T, C = h.shape
    H, D = attn.n_head, attn.head_dim
    q, k, v = attn.qkv(h).view(B, T, 3, H, D).permute(2, 0, 3, 1, 4)
    q, k = attn._positions[0].rotate(q, k, positions)
    logits = q @ k.transpose(-1, -2) / math.sqrt(D)
    y = logits.masked_fill(~allowed, float("-inf")).softmax(-1) @ v
    y = y * attn.extensions[0].gate(h)
    return attn.proj(y.transpose(1, 2).reshape(B, T, C))


NAIVE_REFERENCES.register("gated_attention", naive_reference)
