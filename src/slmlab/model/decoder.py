"""The one decoder every slmlab architecture extends.

    x_0 = wte[idx] + positions.embed(t)                 (B, T, d_model)
    x, shift = conditioning(l, x); x = Block_l(x, shift)  pre-norm blocks, l = 1..n_layer
    logits = head(norm_f(x_L))                          (B, T, V), head tied to wte by default

Extension points (DESIGN.md section 1): `positions` (a scheme from positions.POSITIONS),
the attention pattern (attention.ATTENTION_PATTERNS), score terms and value gates (attention
extensions handed to every block's attention through `attention_extensions(layer)`), and residual conditioning
(`conditioning(layer, x) -> (x, shift)`: a change of the residual stream and/or a shift added to the
block's attention and MLP inputs; the identity here, SMT's Self Area in slmlab/variants). A variant subclasses `Decoder` and overrides those
factories; it never copies the forward pass.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import ModelConfig
from .attention import KVCache
from .block import Block
from .generation import GenerationMixin
from .heads import build_head
from .hooks import HookPoint
from .layers import build_norm
from .positions import build_positions


class NoConditioning(nn.Module):
    """Residual conditioning that adds nothing: x -> (x, no shift) for every layer."""

    def forward(self, layer: int, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return x, None


class Decoder(GenerationMixin, nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.vocab_size <= 0:
            raise ValueError("model.vocab_size must be set (it comes from the tokenizer)")
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.positions = build_positions(cfg)
        self.drop = nn.Dropout(cfg.dropout)
        self.conditioning = self.build_conditioning()
        self.blocks = nn.ModuleList(
            Block(cfg, layer, self.positions, **self.attention_extensions(layer)) for layer in range(cfg.n_layer)
        )
        self.norm_f = build_norm(cfg)
        self.head = build_head(cfg)
        if cfg.tie_embeddings:
            self.head.weight = self.wte.weight
        self.hook_embed = HookPoint()
        self.apply(self._init_weights)

    # ---- extension points, overridden by variants --------------------------------------
    def attention_extensions(self, layer: int) -> dict:
        """Keyword arguments for layer `layer`'s attention: the extensions the variant registry
        builds for this config (slmlab/variants), e.g. SMAT's score term and value gate."""
        from ..variants import ATTENTION_EXTENSION_BUILDERS

        built = (build(self.cfg, layer) for build in ATTENTION_EXTENSION_BUILDERS)
        return {"extensions": [module for module in built if module is not None]}

    def build_conditioning(self) -> nn.Module:
        """The first module a builder in variants.CONDITIONING_BUILDERS returns for this config."""
        from ..variants import CONDITIONING_BUILDERS

        built = (build(self.cfg) for build in CONDITIONING_BUILDERS)
        return next((module for module in built if module is not None), NoConditioning())

    # ---- model --------------------------------------------------------------------------
    def _init_weights(self, module: nn.Module) -> None:
        """GPT-2 init: N(0, 0.02); residual projections N(0, 0.02 / sqrt(2 n_layer)); biases 0."""
        std = self.cfg.init_std
        if isinstance(module, nn.Linear):
            scale = 1 / math.sqrt(2 * self.cfg.n_layer) if getattr(module, "residual_projection", False) else 1.0
            nn.init.normal_(module.weight, mean=0.0, std=std * scale)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                caches: list[KVCache] | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """idx (B, T) token ids -> (logits (B, T, V), None); given targets (B, T) -> (None, mean
        cross-entropy), computed by the head (heads.py; the linear head's fused chunked loss never
        materialises the logits)."""
        B, T = idx.shape
        start = caches[0].length if caches else 0
        limit = self.positions.max_positions
        if limit and start + T > limit:
            raise ValueError(f"sequence of {start + T} tokens exceeds the {limit} positions this model knows (model.block_size)")
        positions = torch.arange(start, start + T, device=idx.device)
        x = self.wte(idx)
        pos_emb = self.positions.embed(positions)
        if pos_emb is not None:
            x = x + pos_emb
        x = self.drop(self.hook_embed(x))
        for layer, block in enumerate(self.blocks):
            x, shift = self.conditioning(layer, x)
            x = block(x, positions, caches[layer] if caches else None, shift)
        x = self.norm_f(x)
        if targets is None:
            return self.head(x), None
        return None, self.head.loss(x.reshape(B * T, -1), targets.reshape(-1))

    def make_caches(self) -> list[KVCache]:
        """One KV cache per layer, of the kind its attention pattern needs."""
        return [block.attn.make_cache(self.cfg.block_size) for block in self.blocks]
