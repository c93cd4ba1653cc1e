"""What a finished run hands back: the TrainResult its summary.json records, and the sample of
text it ends with."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.tokenizers import Tokenizer


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    val_loss: float
    val_ppl: float
    tokens_per_s: float
    sample: str
    compile_seconds: float = 0.0
    val_bpb: float = math.nan  # bits per byte of the validation text

    @classmethod
    def from_summary(cls, run_dir: Path, summary: dict) -> TrainResult:
        """The result a run's summary.json records."""
        return cls(
            run_dir, summary["step"], summary["val_loss"], summary["val_ppl"], summary.get("tokens_per_s", 0.0),
            summary.get("sample", ""), summary.get("compile_seconds", 0.0), summary.get("val_bpb") or math.nan,
        )  # fmt: skip


def final_sample(model, tokenizer: Tokenizer, val_tokens: np.ndarray, n_tokens: int, device: torch.device, seed: int = 0) -> str:
    """n_tokens generated after the validation text's first 8 tokens (fewer for a context shorter
    than 8; temperature 0.8, top-k 50, a fixed seed): the same sample for the same weights."""
    prompt = torch.as_tensor(val_tokens[: min(8, model.cfg.block_size)].astype("int64"), device=device)[None]
    generator = torch.Generator(device=device).manual_seed(seed)
    out = model.generate(prompt, n_tokens, temperature=0.8, top_k=50, generator=generator, vocab_size=tokenizer.vocab_size)
    return tokenizer.decode(out[0].tolist())
