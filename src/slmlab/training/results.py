"""What a finished run hands back: its final weights, the summary.json it records (read back as a
TrainResult), and the sample of text it ends with."""

from __future__ import annotations

import logging
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..data.tokenizers import Tokenizer
from ..errors import SlmlabError, out_of_memory
from ..files import atomic_write_text, json_text, sha256_file
from ..runs.checkpoints import config_metadata, save_weights
from ..runs.metrics import perplexity
from .runtime import peak_memory_bytes

if TYPE_CHECKING:
    from .trainer import Trainer

log = logging.getLogger("slmlab")


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


def write_results(
    trainer: Trainer, weights: dict[str, torch.Tensor], val_loss: float, val_bpb: float, elapsed: float, compile_seconds: float
) -> TrainResult:
    """On rank 0, once the last step is taken: the final weights (`weights`, whole) and the run's
    summary.json. Its tokens/s is the median over the logging windows (robust to a slow one);
    `elapsed`: this process's training seconds, added to those before a resume."""
    t = trainer.cfg.train
    final_sha256 = save_weights(weights, trainer.run.final_weights, config_metadata(trainer.cfg))
    history = [r for r in trainer.metrics.read() if "tokens_per_s" in r]
    sample = ""
    if t.sample_tokens:  # on this rank alone: a sharded model is read whole, from the final weights
        model = trainer.whole_model(weights)
        try:
            sample = final_sample(model, trainer.tokenizer, trainer.data.val.tokens, t.sample_tokens, trainer.device)
        except (SlmlabError, MemoryError, RuntimeError) as err:  # the run is trained: it ends, with its summary, unsampled
            reason = err if isinstance(err, SlmlabError) else out_of_memory(err)
            if reason is None:
                raise
            log.warning("%s: no sample at the end of training (%s); the run is whole", trainer.run.path, reason)
    summary = {
        "step": trainer.step,
        "tokens": trainer.tokens,
        "val_loss": val_loss,
        "val_ppl": perplexity(val_loss),
        "val_bpb": val_bpb,
        "nan_skips": trainer.nan_skips,
        "tokens_per_s": statistics.median(r["tokens_per_s"] for r in history) if history else 0.0,
        "train_seconds": trainer.seconds_before + elapsed,
        "compile_seconds": compile_seconds,
        "processes": trainer.world.size,
        "peak_memory_bytes": max(trainer.peak_before, peak_memory_bytes(trainer.device)),
        "params": trainer.stats.params,
        "non_embedding_params": trainer.stats.non_embedding_params,
        "vocab_size": trainer.cfg.model.vocab_size,
        "sample": sample,
        "final_sha256": final_sha256,
        "tokenizer_sha256": sha256_file(trainer.run.tokenizer),  # a tokenizer.json edited or damaged into other valid JSON
        "data_sha256": trainer.data.manifest["sha256"],  # the token streams trained on (sweeps compare them)
    }
    if trainer.local_kernel:
        summary["local_kernel"] = trainer.local_kernel
    atomic_write_text(trainer.run.summary, json_text(summary, indent=2) + "\n")
    warn_if_diverged(trainer.run.path, val_loss, trainer.tokenizer.vocab_size)
    return TrainResult.from_summary(trainer.run.path, summary)


def warn_if_diverged(run: Path, val_loss: float, vocab_size: int) -> None:
    """Say so when a run ends at a validation loss above twice ln V (guessing every token
    uniformly scores ln V, and a model at init about that): it diverged to finite numbers, which
    no non-finite-step guard catches, and its figures would otherwise read like any other run's."""
    uniform = math.log(max(vocab_size, 1))
    if uniform > 0 and val_loss > 2 * uniform:
        log.warning(
            "%s: validation loss %.4g nats per token is more than twice the %.3f (ln V) that guessing every token "
            "uniformly scores: the run diverged; lower train.lr, raise train.warmup_steps or set train.grad_clip",
            run, val_loss, uniform,
        )  # fmt: skip
