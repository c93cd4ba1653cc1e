"""SMT's Self Area (seed 000): a learned persona state whose guidance enters every layer.

    p ∈ R^self_dim                            the persona state (learned)
    g = p + W_2 GELU(W_1 p)                   refined by a small residual MLP
    Δ_l = α_l · W_l g                         one W_l (d_model x self_dim) and one α_l per layer
    token-dependent:  Δ_l,t = α_l · W_l (g ⊙ σ(U_l x_t))    gated per token by the hidden state

    target "residual":          x_l ← x_l + Δ_l before block l (the residual stream carries it on)
    target "sublayer_inputs":   Attn(LN_1(x) + Δ_l) and MLP(LN_2(x) + Δ_l); the stream itself does not
    guidance_mode "input_once": only Δ_0, added to the embeddings: what the original SMT code did
                                (one learned constant vector added once), for comparison

With `surgery_safe` α_l starts at 0, so a freshly inserted module changes nothing; p starts at
N(0, 1) and W_l at N(0, 1/self_dim), so W_l g has unit scale per feature (the size of a normed
hidden state): α_l's gradient is not zero and a small α_l already steers every layer. The same
`SelfArea` module serves the native decoder (as its residual conditioning) and model surgery on
Hugging Face models (slmlab/persona/surgery.py). Hook points: `hook_persona` sees g,
`hook_guidance.<l>` sees Δ_l.

Surgical ablations (`slmlab ablate RUN`): `self_area_off` sets g = 0, so no layer receives
anything (the host model alone); `random_persona` replaces g by a random vector of the same norm
(fixed seed), which asks whether the learned persona matters or any shift of that size would do.


Stage 2 trains only the Self Area (train.trainable = "self_area"), optionally with every norm
("self_area+norms"): those selections are registered here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ..config import ModelConfig
from ..config.checks import check_parameters
from ..errors import ConfigError
from ..model.hooks import HookPoint
from ..model.interventions import Intervention, Replace, constant
from ..registry import CONDITIONING, INTERVENTIONS, TRAINABLE, register_check, register_model_check, register_section


@dataclass
class SelfAreaConfig:
    """SMT's Self Area (seed 000); the equations are in this module's docstring.

    A learned persona state refined by an MLP into a guidance signal g (self_dim); layer l adds
    alpha_l * W_l g. `target`: into the residual stream before the block ("residual") or only into
    the attention and MLP inputs after their norms ("sublayer_inputs"). `token_dependent`: g is
    gated per token by the hidden state. `guidance_mode = "input_once"` is what the original
    code did (one constant vector added to the embeddings). `surgery_safe`: alpha starts at 0, so
    inserting the module changes nothing."""

    enabled: bool = False  # build the Self Area
    self_dim: int = 128  # width of the persona state and of the guidance signal g
    hidden: int = 0  # the refining MLP's width; 0 -> 2 * self_dim
    guidance_mode: Literal["every_layer", "input_once"] = (
        "every_layer"  # g enters every layer, or the embeddings once (the original code)
    )
    target: Literal["residual", "sublayer_inputs"] = (
        "residual"  # where alpha_l W_l g is added: the block's input, or the attention and MLP inputs after their norms
    )
    token_dependent: bool = False  # gate g per token by the hidden state
    surgery_safe: bool = True  # alpha_l = 0 at init; else 1


class SelfArea(nn.Module):
    def __init__(self, cfg: SelfAreaConfig, d_model: int, n_layer: int, init_std: float = 0.02):
        """init_std: the token gate's U_l (the MLP's layers take the host model's init)."""
        super().__init__()
        self.cfg = cfg
        self.slots = 1 if cfg.guidance_mode == "input_once" else n_layer
        hidden = cfg.hidden or 2 * cfg.self_dim
        self.state = nn.Parameter(torch.randn(cfg.self_dim))
        self.refine = nn.Sequential(nn.Linear(cfg.self_dim, hidden), nn.GELU(), nn.Linear(hidden, cfg.self_dim))
        self.proj = nn.Parameter(torch.randn(self.slots, d_model, cfg.self_dim) / cfg.self_dim**0.5)
        self.alpha = nn.Parameter(torch.full((self.slots,), 0.0 if cfg.surgery_safe else 1.0))
        self.gate = nn.Parameter(torch.randn(self.slots, cfg.self_dim, d_model) * init_std) if cfg.token_dependent else None
        self.hook_persona = HookPoint()
        self.hook_guidance = nn.ModuleList(HookPoint() for _ in range(self.slots))

    def guidance(self) -> torch.Tensor:
        """g = p + MLP(p), (self_dim,)."""
        return self.hook_persona(self.state + self.refine(self.state))

    def delta(self, layer: int, x: torch.Tensor) -> torch.Tensor | None:
        """Δ_layer for hidden states x (B, T, d_model) -> (d_model,) or, token-dependent,
        (B, T, d_model); None for a layer the guidance does not enter."""
        if layer >= self.slots:
            return None
        g = self.guidance().to(x.dtype)
        if self.gate is not None:
            g = g * torch.sigmoid(x @ self.gate[layer].to(x.dtype).T)
        delta = self.alpha[layer].to(x.dtype) * (g @ self.proj[layer].to(x.dtype).T)
        return self.hook_guidance[layer](delta)


class SelfAreaConditioning(nn.Module):
    """The decoder's residual conditioning: (layer, x) -> (x, shift of the sublayer inputs or None)."""

    padding_safe = True  # a shift per token (or one for all): no token sees another
    host_init = True  # the refining MLP's layers take the host model's init (N(0, init_std), biases 0)

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.area = SelfArea(cfg.self_area, cfg.d_model, cfg.n_layer, cfg.init_std)
        self.into_sublayers = cfg.self_area.target == "sublayer_inputs" and cfg.self_area.guidance_mode == "every_layer"

    def forward(self, layer: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        delta = self.area.delta(layer, x)
        if delta is None:
            return x, None
        return (x, delta) if self.into_sublayers else (x + delta, None)

    def naive(self, layer: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The module docstring's equations written out, for slmlab check's whole-model reference:
        g = p + W_2 GELU(W_1 p + b_1) + b_2 (GELU by erf), Δ_l = α_l Σ_s W_l[:, s] g_s (g_s gated by
        σ(Σ_d U_l[s, d] x_d) per token)."""
        area = self.area
        if layer >= area.slots:
            return x, None
        p, (first, _, second) = area.state, area.refine
        hidden = p @ first.weight.T + first.bias
        g = p + (hidden / 2 * (1 + torch.erf(hidden / 2**0.5))) @ second.weight.T + second.bias
        if area.gate is not None:
            g = g * torch.sigmoid((x[..., None, :] * area.gate[layer]).sum(-1))  # (B, T, self_dim)
        delta = area.alpha[layer] * (g[..., None, :] * area.proj[layer]).sum(-1)
        return (x, delta) if self.into_sublayers else (x + delta, None)


def build_self_area(cfg: ModelConfig) -> nn.Module | None:
    return SelfAreaConditioning(cfg) if cfg.self_area.enabled else None


def self_area_parameters(model: nn.Module) -> Iterable[nn.Parameter]:
    return model.get_submodule("conditioning").parameters()


def self_area_and_norm_parameters(model: nn.Module) -> Iterable[nn.Parameter]:
    norms = (m for m in model.modules() if isinstance(m, (nn.LayerNorm, nn.RMSNorm)))
    return [*self_area_parameters(model), *(p for m in norms for p in m.parameters())]


CONDITIONING.register("self_area", build_self_area)
register_section(
    "self_area",
    SelfAreaConfig,
    extends="conditioning",
    read_with={f.name: ("enabled",) for f in dataclasses.fields(SelfAreaConfig) if f.name != "enabled"},
)


def _random_same_norm(seed: int = 0) -> Replace:
    """Replace g (self_dim,) by r ||g|| / ||r||, r Gaussian drawn from `seed` at every call: every
    layer and every batch sees the same random persona, as they see the one learned."""

    def replace(g: torch.Tensor) -> torch.Tensor:
        r = torch.randn(g.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float32).to(g)
        return r * (g.norm() / r.norm())

    return replace


OFF = Intervention(
    "self_area_off",
    "g = 0: the Self Area adds nothing to any layer (the host model alone)",
    {"hook_persona": constant(torch.zeros_like)},
    owner=SelfArea,
)
RANDOM_PERSONA = Intervention(
    "random_persona",
    "g replaced by a random vector of the same norm: this persona, or any shift of its size?",
    {"hook_persona": _random_same_norm},
    owner=SelfArea,
)
INTERVENTIONS.register("self_area", {OFF.name: OFF, RANDOM_PERSONA.name: RANDOM_PERSONA})
TRAINABLE.register("self_area", self_area_parameters)
TRAINABLE.register("self_area+norms", self_area_and_norm_parameters)


@register_model_check
def check_self_area_sizes(m: ModelConfig) -> None:
    area = m.self_area
    if area.self_dim <= 0 or area.hidden < 0:
        raise ConfigError(f"model.self_area.self_dim must be > 0 and hidden >= 0, got {area.self_dim}, {area.hidden}")
    if area.enabled:  # the refining MLP, then W_l (and the token gate U_l) per layer
        hidden = area.hidden or 2 * area.self_dim
        check_parameters(
            2 * area.self_dim * hidden + 2 * m.n_layer * m.d_model * area.self_dim,
            f"model.self_area.self_dim = {area.self_dim}, hidden = {hidden}, model.n_layer = {m.n_layer}",
        )


@register_check
def check_self_area_training(cfg) -> None:
    area, trainable = cfg.model.self_area, cfg.train.trainable
    if trainable in ("self_area", "self_area+norms") and not area.enabled:
        raise ConfigError(f"train.trainable = '{trainable}' needs a Self Area; set model.self_area.enabled = true")
