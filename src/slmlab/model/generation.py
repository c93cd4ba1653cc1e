"""Sampling from any slmlab language model: the KV-cached generation loop shared by architectures.

A model that mixes this in provides `cfg.block_size`, `make_caches()` (whatever per-layer state
incremental decoding needs; the first entry has `.length`) and `forward(idx, caches=...)`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import ConfigError
from .sampling import sample_next


class GenerationMixin:
    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
        stop_token: int | None = None,
        until: Callable[[torch.Tensor], bool] | None = None,
    ) -> torch.Tensor:
        """Extend idx (B, T) by up to max_new_tokens sampled tokens -> (B, T + n). Generation
        stops early once every row has sampled `stop_token`, or once `until(idx)` is True.

        With the KV cache, each step runs only the new token. When the context reaches
        block_size, the cache is rebuilt from the last block_size // 2 tokens (a sliding window)."""
        if idx.shape[1] == 0:
            raise ConfigError("the prompt is empty: give at least one token")
        if idx.shape[1] > self.cfg.block_size:
            raise ConfigError(
                f"the prompt has {idx.shape[1]} tokens but the model's context is {self.cfg.block_size}; shorten it"
            )
        was_training = self.training
        self.eval()
        caches, pending = None, idx
        stopped = torch.zeros(idx.shape[0], dtype=torch.bool, device=idx.device)
        for _ in range(max_new_tokens):
            if use_cache:
                if caches is None or caches[0].length + pending.shape[1] > self.cfg.block_size:
                    window = idx[:, -(self.cfg.block_size // 2 or 1) :] if caches is not None else idx
                    caches = self.make_caches()
                    pending = window
                logits, _ = self(pending, caches=caches)
            else:
                logits, _ = self(idx[:, -self.cfg.block_size :])
            next_id = sample_next(logits[:, -1], temperature, top_k, top_p, generator)
            idx = torch.cat([idx, next_id], dim=1)
            pending = next_id
            if stop_token is not None:
                stopped |= next_id[:, 0] == stop_token
                if bool(stopped.all()):
                    break
            if until is not None and until(idx):
                break
        self.train(was_training)
        return idx
