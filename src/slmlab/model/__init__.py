"""Models: the one decoder and the registry that maps `model.arch` to a model class."""

from __future__ import annotations

from torch import nn

from ..config import ModelConfig
from .accounting import ModelStats, model_stats
from .attention import ATTENTION_PATTERNS, KVCache
from .block_local import BlockLocal
from .decoder import Decoder

ATTENTION_PATTERNS["block_local"] = BlockLocal

ARCHITECTURES: dict[str, type[nn.Module]] = {"decoder": Decoder}


def _register_variant_architectures() -> None:
    from ..variants.tape import TapeTransformer

    ARCHITECTURES["tape"] = TapeTransformer


def build_model(cfg: ModelConfig) -> nn.Module:
    """A fresh, initialised model for `cfg` (vocab_size must be resolved)."""
    if cfg.arch not in ARCHITECTURES:
        _register_variant_architectures()
    return ARCHITECTURES[cfg.arch](cfg)


__all__ = ["ARCHITECTURES", "Decoder", "KVCache", "ModelStats", "build_model", "model_stats"]
