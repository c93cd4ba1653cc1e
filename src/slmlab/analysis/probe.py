"""What every `slmlab check` property shares: the model under test, built seeded at its tiny
shapes (Probe), the inputs it is probed with, and the verdict a property returns (Result)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import ModelConfig
from ..registry import build_model

EXACT = 1e-9  # every comparison but the trained ones runs in float64: a real fault moves far more


def agrees(difference: float, *references: torch.Tensor) -> bool:
    """Float64 agreement: max |Δ| <= EXACT · max(1, max |reference|). Rounding grows with the
    size of the values compared (a model with large weights has logits and gradients of 10^3 and
    more), so the bound scales with them; values of order one or less are held to EXACT itself."""
    scale = max([1.0, *(r.abs().max().item() for r in references if r.numel())])
    return difference <= EXACT * scale


@dataclass
class Result:
    """One property's verdict: passed is None when it does not apply; reason says why it failed."""

    passed: bool | None
    figure: str
    reason: str = ""


class Probe:
    """Builds the model under test (seeded) on `device` and holds the shared inputs there. Every
    value is drawn on the CPU, so a model and its inputs are the same on every device."""

    def __init__(self, cfg: ModelConfig, seed: int = 0, device: torch.device | str = "cpu"):
        self.cfg, self.seed, self.device = cfg, seed, torch.device(device)
        self.T = min(cfg.block_size, 40)
        generator = torch.Generator().manual_seed(seed)
        self.tokens = torch.randint(0, cfg.vocab_size, (3, self.T), generator=generator).to(self.device)
        self.targets = torch.randint(0, cfg.vocab_size, (3, self.T), generator=generator).to(self.device)

    def randn(self, *shape: int, generator: torch.Generator, requires_grad: bool = False) -> torch.Tensor:
        """Float64 Gaussian values drawn on the CPU from `generator`, on the probe's device."""
        return torch.randn(shape, dtype=torch.float64, generator=generator).to(self.device).requires_grad_(requires_grad)

    def build(self, dtype: torch.dtype = torch.float32, moved: bool = False) -> torch.nn.Module:
        """The model at its init (seeded); `moved`: with every parameter then shifted off it, by
        Gaussian noise of half its spread (0.1 for a tensor of one value: a zero-initialised gate,
        a norm's ones), so that paths an init switches off (a gate's input at μ = 0, a Self Area
        at α = 0) are probed too. The properties that compare two ways of computing one thing
        (causality, batches, caches, padding, compiling, references) run on a moved model."""
        torch.manual_seed(self.seed)
        model = build_model(self.cfg).to(dtype)
        if moved:
            generator = torch.Generator().manual_seed(self.seed)
            with torch.no_grad():
                for parameter in (p for p in model.parameters() if p.is_floating_point()):  # an index table stays
                    spread = parameter.std().item() if parameter.numel() > 1 else 0.0
                    noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
                    parameter.add_(noise.to(parameter.device) * (0.5 * spread if spread > 0 else 0.1))
        return model.to(self.device)

    def logits(self, model, tokens, seed: int | None = None) -> torch.Tensor:
        if seed is not None:
            torch.manual_seed(seed)  # the same dropout masks for both inputs in train mode
        return model(tokens)[0]
