"""The one decoder every slmlab architecture extends.

    x_0 = wte[idx] + positions.embed(t)                 (B, T, d_model)
    x, shift = conditioning(l, x); x = Block_l(x, shift)  pre-norm blocks, l = 1..n_layer
    logits = head(norm_f(x_L))                          (B, T, V), head tied to wte by default

Extension points (docs/architecture.md): `positions` (registry.POSITIONS), the attention pattern
(registry.ATTENTION_PATTERNS), attention extensions (score terms and value gates: the modules
`attention_extensions(layer)` returns for each block's attention) and residual conditioning
(`conditioning(layer, x) -> (x, shift)`: a change of the residual stream and/or a shift added to
the block's attention and MLP inputs). The decoder is handed its extensions and conditioning
(registry.build_model builds them from the registered builders); it never looks them up.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ..config import ModelConfig
from ..config.checks import check_model
from ..tables import counted
from .attention import KVCache
from .block import Block
from .generation import GenerationMixin
from .heads import StudentTHead, build_head
from .hooks import HookPoint
from .initialization import init_by_name
from .inputs import check_inputs
from .layers import build_dropout, build_norm
from .positions import build_positions, embed_tokens, token_positions


class NoConditioning(nn.Module):
    """Residual conditioning that adds nothing: x -> (x, no shift) for every layer."""

    padding_safe = True  # nothing mixes tokens: a left-padded batch decodes exactly (decodes_padded)

    def forward(self, layer: int, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return x, None


class Decoder(GenerationMixin, nn.Module):
    """The backbone (model.arch = "decoder"); implements protocol.LanguageModel."""

    extension_points = frozenset({"attention", "conditioning", "per_layer_attention"})

    def __init__(
        self,
        cfg: ModelConfig,
        attention_extensions: Callable[[int], list[nn.Module]] | None = None,
        conditioning: nn.Module | None = None,
    ):
        """`attention_extensions(layer)`: the extension modules of layer `layer`'s attention;
        `conditioning`: the residual conditioning (None: none)."""
        super().__init__()
        check_model(cfg, building=True)
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.positions = build_positions(cfg)
        self.drop = build_dropout(cfg.dropout)
        self.conditioning = conditioning if conditioning is not None else NoConditioning()
        extensions = attention_extensions or (lambda layer: [])
        self.blocks = nn.ModuleList(
            Block(cfg, layer, self.positions, extensions=extensions(layer)) for layer in range(cfg.n_layer)
        )
        self.norm_f = build_norm(cfg)
        self.head = build_head(cfg)
        if cfg.tie_embeddings:
            self.head.weight = self.wte.weight
        self.hook_embed, self.hook_pos_embed = HookPoint(), HookPoint()
        own_init = {id(m) for handed in self._handed_in() if not getattr(handed, "host_init", False) for m in handed.modules()}
        init_by_name(self, self._init_weights, skip=own_init)

    @classmethod
    def repeated_blocks(cls, cfg: ModelConfig) -> list[tuple[int, Callable[[], nn.Module], str]]:
        """For each kind of block `cfg` repeats, (how many, a builder of one as each is at least,
        the settings that count them): n_layer blocks, each at least itself without extensions.
        What accounting sizes a model by before building it (least_size, check_buildable)."""
        return [(cfg.n_layer, lambda: Block(cfg, 0, build_positions(cfg)), f"model.n_layer = {cfg.n_layer}")]

    # ---- model --------------------------------------------------------------------------
    def _handed_in(self) -> list[nn.Module]:
        """The modules the registries built for this model: its residual conditioning and every
        layer's attention extensions. Each keeps the init its own constructor gave it (a gate's
        bias_init, say), unless its class sets `host_init = True` to take the backbone's."""
        return [self.conditioning, *(e for block in self.blocks for e in block.attn.extensions)]

    def _init_weights(self, module: nn.Module, generator: torch.Generator) -> None:
        """GPT-2 init: N(0, 0.02); residual projections N(0, 0.02 / sqrt(2 n_layer)); biases 0.
        Applied to the backbone's modules and to the handed-in ones that ask for it (_handed_in),
        each drawn with its own name's generator (initialization.py: shared across variants)."""
        std = self.cfg.init_std
        if isinstance(module, nn.Linear):
            scale = 1 / math.sqrt(2 * self.cfg.n_layer) if getattr(module, "residual_projection", False) else 1.0
            nn.init.normal_(module.weight, mean=0.0, std=std * scale, generator=generator)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.Embedding, StudentTHead)):  # (V, d) tables
            nn.init.normal_(module.weight, mean=0.0, std=std, generator=generator)

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        caches: list[KVCache] | None = None,
        logits_to_keep: int = 0,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """idx (B, T) token ids -> (logits (B, T, V), None); given targets (B, T) -> (None, mean
        cross-entropy over the targets that are not negative: -100 and -1 mask a position out),
        computed by the head (heads.py; the linear head's fused chunked loss never materialises
        the logits). `logits_to_keep` = k > 0: the logits of the last k positions only, (B, k, V),
        as Hugging Face's argument of that name (generation reads the prompt for its last one)."""
        start = caches[0].length if caches else 0
        check_inputs(idx, targets, vocab_size=self.cfg.vocab_size, start=start, max_positions=self.positions.max_positions)
        B, T = idx.shape
        padding = getattr(caches[0], "padding", None) if caches else None  # a pattern's own cache class may have none
        positions, _ = token_positions(start, T, padding, idx.device)  # (B, T) in a left-padded batch
        x = self.drop(embed_tokens(self, idx, positions))
        for layer, block in enumerate(self.blocks):
            x, shift = self.conditioning(layer, x)
            x = block(x, positions, caches[layer] if caches else None, shift)
        x = self.norm_f(x)
        if targets is None:
            return self.head(x[:, -logits_to_keep:] if logits_to_keep else x), None
        return None, self.head.loss(x.reshape(B * T, -1), targets.reshape(-1))

    def make_caches(self, max_len: int | None = None) -> list[KVCache]:
        """One KV cache per layer, of the kind its attention pattern needs, for at most `max_len`
        positions (default block_size; a window keeps its own size)."""
        return [block.attn.make_cache(max_len or self.cfg.block_size) for block in self.blocks]

    def decodes_padded(self) -> bool:
        """Whether a left-padded batch decodes exactly as each row alone: attention patterns that
        declare `padding_safe` (their forward takes `padding` and masks it: full, block-local), and
        a position scheme, extensions and conditioning that declare it too (they take per-row
        positions, mix no tokens, or mask the padding themselves). Otherwise generate_many batches
        only prompts of equal length."""
        safe = (getattr(self.positions, "padding_safe", False), getattr(self.conditioning, "padding_safe", False))
        return all(safe) and all(block.attn.decodes_padded() for block in self.blocks)

    def shard_units(self) -> list[nn.Module]:
        """The blocks: FSDP2 shards each on its own, then the rest with the root."""
        return list(self.blocks)

    def describe(self) -> str:
        """One line: the shape, then what varies between configs of one shape (positions and their
        RoPE scaling, each layer's attention pattern, norm, MLP, extensions, head)."""
        m = self.cfg
        patterns = m.layer_patterns
        positions = f"{m.pos} positions" + (f" (scale {m.rope_scale:g})" if m.pos == "rope" and m.rope_scale != 1 else "")
        attention = (patterns[0] if len(set(patterns)) == 1 else "/".join(patterns)) + " attention"
        if "block_local" in patterns:
            attention += f" (block {m.local_block})"
        extras = sorted({type(e).__name__ for block in self.blocks for e in block.attn.extensions})
        if not isinstance(self.conditioning, NoConditioning):
            extras.append(type(self.conditioning).__name__)
        parts = [
            f"{counted(m.n_layer, 'layers')} x {m.d_model} d_model x {counted(m.n_head, 'heads')}", f"d_ff {m.ff_dim}", f"block {m.block_size}",
            positions, attention, m.norm, f"{m.mlp} MLP", *extras,
            f"vocab {m.vocab_size}", f"{'tied' if m.tie_embeddings else 'untied'} {m.head} head",
        ]  # fmt: skip
        return f"{m.arch}: " + ", ".join(parts)
