"""What every architecture offers the generic tools: the `LanguageModel` protocol.

An architecture is a class registered in registry.ARCHITECTURES and built as
`cls(cfg, attention_extensions=..., conditioning=...)`. The tools rely on nothing else:

| member | used by |
| --- | --- |
| `cfg` (ModelConfig) | generation (block_size), info, checkpoints |
| `forward(idx, targets=None, caches=None)` -> (logits (B,T,V) or None, mean loss over targets >= 0, or None) | training, eval, long context, diagnose, viz |
| optional: `forward(..., logits_to_keep=k)` -> the last k positions' logits (B,k,V) | generation: the prompt's forward computes the head for its last token only |
| `make_caches()` -> per-attention caches (first has `.length`); optional: `make_caches(max_len)`, sized to at most max_len positions | generation (GenerationMixin.generate): a short generation of a model of a vast context reserves no memory for the whole |
| `generate(idx, max_new_tokens, ...)` | generate, samples, lm-eval |
| `generate_many(prompts, max_new_tokens, ...)`, `decodes_padded()` | prompts, persona-eval (GenerationMixin: batches, left-padded where the model says it decodes padding exactly) |
| `shard_units()` -> modules FSDP2 shards one by one | training.distributed |
| `describe()` -> one line on the model's shape | info, report |
| `extension_points` (class) | config checks: "attention" (extensions handed in), "conditioning", "per_layer_attention" |
| optional: `repeated_blocks(cfg)` (classmethod) -> for each kind of block, (how many, a builder of one as each is at least, the settings that count them) | the memory checks, before the model is built (accounting.least_size): a mistyped count is refused rather than built |
| `head` with `.weight` (V, d) | accounting, the fused loss |

Attention maps (viz), the curriculum's pattern check and FLOPs find every `CausalSelfAttention`
among the model's modules (`attention_modules`), whatever the graph, so an architecture that
reuses the backbone's attention gets them for free. Trainable-parameter selections
(registry.TRAINABLE) and interventions (registry.INTERVENTIONS) address modules by name.
"""

from __future__ import annotations

from typing import ClassVar, Protocol, runtime_checkable

import torch
from torch import nn

from ..config import ModelConfig
from .attention import CausalSelfAttention


@runtime_checkable
class LanguageModel(Protocol):
    cfg: ModelConfig
    extension_points: ClassVar[frozenset[str]]

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, caches: list | None = None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]: ...

    def make_caches(self) -> list: ...

    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = 0,
        top_p: float | None = 1.0,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
        stop_token: int | None = None,
        until=None,
        sample=None,
        padding: torch.Tensor | None = None,
        compile=False,
        vocab_size: int | None = None,
    ) -> torch.Tensor: ...

    def generate_many(
        self,
        prompts: list[list[int]],
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = 0,
        top_p: float | None = 1.0,
        generators: list | None = None,
        stop_token: int | None = None,
        batch_size: int = 16,
        until=None,
        compile=False,
        vocab_size: int | None = None,
        progress: str = "",
    ) -> list[list[int]]: ...

    def decodes_padded(self) -> bool: ...

    def shard_units(self) -> list[nn.Module]: ...

    def describe(self) -> str: ...


def attention_modules(model: nn.Module) -> list[tuple[str, CausalSelfAttention]]:
    """(name, module) of every attention in `model`, in module order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, CausalSelfAttention)]
