"""The backbone: one decoder and the pieces every architecture shares (attention and its patterns,
positions, norms, heads, the fused loss, hook points, generation, accounting), registered under
their config names when this package is imported. Never imports slmlab.variants."""

from __future__ import annotations

from ..registry import ARCHITECTURES, build_model
from .accounting import ModelStats, model_stats
from .activations import run_with_cache, run_with_hooks
from .attention import KVCache
from .block_local import BlockLocal
from .decoder import Decoder
from .heads import build_head
from .layers import build_norm
from .positions import build_positions
from .protocol import LanguageModel

ARCHITECTURES.register("decoder", Decoder)

__all__ = [
    "BlockLocal",
    "Decoder",
    "KVCache",
    "LanguageModel",
    "ModelStats",
    "build_head",
    "build_model",
    "build_norm",
    "build_positions",
    "model_stats",
    "run_with_cache",
    "run_with_hooks",
]
