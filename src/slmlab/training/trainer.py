"""The training loop: one config in, one run directory out.

Per optimizer step: the LR from the schedule, `grad_accum` micro-batches of random windows
(forward under autocast, backward of loss / grad_accum), gradient clipping, then AdamW. A step
whose loss or gradient norm is not finite is skipped (no update) and counted; `max_nan_skips`
consecutive ones abort the run. Every `eval_every` steps the model is scored on a fixed
validation sample; every `checkpoint_every` steps weights and full training state are saved, so
`resume` continues bit-exactly (same weights as an uninterrupted run on CPU).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from ..checkpoint import load_checkpoint, load_training_state, load_weights, save_checkpoint, save_weights
from ..config import RunConfig, resolve_vocab
from ..data import TokenSplit, WindowSampler, atomic_write_text, prepare_tokens, validation_batches
from ..metrics import MetricsLog
from ..model import build_model, model_stats
from ..runs import RunDir
from ..runtime import autocast, peak_memory_bytes, resolve_device, rng_state, seed_everything, set_rng_state
from ..tokenization import load_tokenizer
from .optim import build_optimizer, lr_at

log = logging.getLogger("slmlab")


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss keeps diverging); the message says what to try."""


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    val_loss: float
    val_ppl: float
    tokens_per_s: float
    sample: str


@torch.no_grad()
def evaluate(model: nn.Module, split: TokenSplit, seq_len: int, batch_size: int, n_batches: int,
             device: torch.device, dtype: str = "fp32") -> float:
    """Mean cross-entropy over the fixed validation sample (token-weighted)."""
    was_training = model.training
    model.eval()
    total, count = torch.zeros((), device=device), 0
    for x, y in validation_batches(split, seq_len, batch_size, n_batches):
        with autocast(device, dtype):
            _, loss = model(x.to(device), y.to(device))
        total += loss.float() * y.numel()
        count += y.numel()
    model.train(was_training)
    return (total / count).item()


class Trainer:
    def __init__(self, cfg: RunConfig, resume: bool = False, overwrite: bool = False, progress: bool = True,
                 init_from: RunDir | None = None, carry_optimizer: bool = False):
        """`init_from`: a finished run whose final weights and tokenizer this run starts from
        (a curriculum's previous phase); `carry_optimizer` also takes its AdamW state."""
        self.run = RunDir.for_config(cfg)
        if resume:
            cfg = self._resume_config(cfg)
        train = cfg.train
        if train.threads:
            torch.set_num_threads(train.threads)
        self.device = resolve_device(train.device)
        seed_everything(train.seed)
        source = self.run if resume else init_from
        tokenizer = load_tokenizer(source.tokenizer) if source else None
        self.tokenizer, self.data = prepare_tokens(cfg.data, tokenizer)
        resolve_vocab(cfg, self.tokenizer.vocab_size)
        self.cfg, self.progress = cfg, progress
        if not resume:
            self.run.create(cfg, overwrite)
            self.tokenizer.save(self.run.tokenizer)
        self.model = build_model(cfg.model).to(self.device)
        self.stats = model_stats(self.model, cfg.model)
        self.optimizer = build_optimizer(self.model, train, self.device)
        self.sampler = WindowSampler(self.data.train, cfg.data.seq_len, train.batch_size, train.seed, cfg.data.mixture or None)
        self.metrics = MetricsLog(self.run.metrics)
        self.step, self.tokens, self.nan_skips = 0, 0, 0
        if resume:
            self._load_state()
        elif init_from is not None:
            load_weights(self.model, init_from.final_weights)
            if carry_optimizer:
                self.optimizer.load_state_dict(load_training_state(init_from.checkpoints)["optimizer"])
        self.forward = torch.compile(self.model) if train.compile else self.model

    def _resume_config(self, requested: RunConfig) -> RunConfig:
        """The run's own config; only train.steps may be raised (to train longer)."""
        cfg = self.run.read_config()
        if requested.train.steps > cfg.train.steps:
            cfg.train.steps = requested.train.steps
            self.run.write_config(cfg)
        return cfg

    def _load_state(self) -> None:
        state = load_checkpoint(self.run.checkpoints, self.model)
        self.optimizer.load_state_dict(state["optimizer"])
        self.sampler.load_state_dict(state["sampler"])
        set_rng_state(state["rng"])
        self.step, self.tokens, self.nan_skips = state["step"], state["tokens"], state["nan_skips"]
        self.metrics.truncate_after(self.step)
        log.info("resumed %s at step %d", self.run.path, self.step)

    def _state(self) -> dict:
        return {
            "step": self.step, "tokens": self.tokens, "nan_skips": self.nan_skips,
            "optimizer": self.optimizer.state_dict(), "sampler": self.sampler.state_dict(), "rng": rng_state(),
        }

    def evaluate(self) -> float:
        t = self.cfg.train
        return evaluate(self.forward, self.data.val, self.cfg.data.seq_len, t.batch_size, t.eval_batches, self.device, t.dtype)

    def _train_step(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step (or a skip); returns the step's loss and gradient norm as tensors."""
        t = self.cfg.train
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.step, t)
        loss_sum = torch.zeros((), device=self.device)
        for _ in range(t.grad_accum):
            x, y = self.sampler.next_batch()
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            with autocast(self.device, t.dtype):
                _, loss = self.forward(x, y)
            (loss / t.grad_accum).backward()
            loss_sum += loss.detach().float()
        grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip if t.grad_clip > 0 else math.inf)
        return loss_sum / t.grad_accum, grad_norm

    def fit(self) -> TrainResult:
        t, d = self.cfg.train, self.cfg.data
        tokens_per_step = t.batch_size * d.seq_len * t.grad_accum
        bar = tqdm(total=t.steps, initial=self.step, desc=self.cfg.name, disable=not self.progress, unit="step", dynamic_ncols=True)
        self.model.train()
        consecutive, window_loss, window_steps = 0, 0.0, 0
        window_start, started = time.perf_counter(), time.perf_counter()
        val_loss = math.nan
        while self.step < t.steps:
            loss, grad_norm = self._train_step()
            loss_value, norm_value = loss.item(), grad_norm.item()
            self.step += 1
            self.tokens += tokens_per_step
            if not (math.isfinite(loss_value) and math.isfinite(norm_value)):
                self.optimizer.zero_grad(set_to_none=True)
                self.nan_skips += 1
                consecutive += 1
                log.warning("step %d: non-finite loss or gradient, update skipped", self.step)
                if consecutive >= t.max_nan_skips:
                    raise TrainingError(
                        f"{consecutive} consecutive non-finite steps at step {self.step}; "
                        "lower train.lr, raise train.warmup_steps or set train.grad_clip"
                    )
            else:
                consecutive = 0
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                window_loss += loss_value
                window_steps += 1
            bar.update(1)
            evaluating = self.step % t.eval_every == 0 or self.step == t.steps
            if self.step % t.log_every == 0 or evaluating:
                dt = (time.perf_counter() - window_start) / max(1, window_steps)
                record = {
                    "step": self.step, "tokens": self.tokens, "loss": window_loss / max(1, window_steps),
                    "lr": lr_at(self.step - 1, t), "grad_norm": norm_value, "dt_ms": 1000 * dt,
                    "tokens_per_s": tokens_per_step / dt if dt > 0 else 0.0, "nan_skips": self.nan_skips,
                }
                if evaluating:
                    val_loss = self.evaluate()
                    record.update(val_loss=val_loss, val_ppl=math.exp(min(val_loss, 50.0)))
                self.metrics.append(record)
                bar.set_postfix(loss=f"{record['loss']:.3f}", val=f"{val_loss:.3f}", tok_s=f"{record['tokens_per_s']:.0f}")
                window_loss, window_steps, window_start = 0.0, 0, time.perf_counter()
            if t.checkpoint_every and self.step % t.checkpoint_every == 0 and self.step < t.steps:
                save_checkpoint(self.run.checkpoints, self.step, self.model, self._state(), t.keep_checkpoints)
        bar.close()
        elapsed = time.perf_counter() - started
        return self._finish(val_loss, elapsed)

    def _finish(self, val_loss: float, elapsed: float) -> TrainResult:
        t = self.cfg.train
        if math.isnan(val_loss):
            val_loss = self.evaluate()
        save_weights(self.model, self.run.final_weights, metadata={"config": json.dumps(self.cfg.to_dict())})
        save_checkpoint(self.run.checkpoints, self.step, self.model, self._state(), t.keep_checkpoints)
        history = [r for r in self.metrics.read() if "tokens_per_s" in r]
        tokens_per_s = sum(r["tokens_per_s"] for r in history) / max(1, len(history))
        sample = self.sample(t.sample_tokens) if t.sample_tokens else ""
        summary = {
            "step": self.step, "tokens": self.tokens, "val_loss": val_loss, "val_ppl": math.exp(min(val_loss, 50.0)),
            "nan_skips": self.nan_skips, "tokens_per_s": tokens_per_s, "train_seconds": elapsed,
            "peak_memory_bytes": peak_memory_bytes(self.device), "params": self.stats.params,
            "non_embedding_params": self.stats.non_embedding_params, "vocab_size": self.cfg.model.vocab_size,
            "sample": sample,
        }
        atomic_write_text(self.run.summary, json.dumps(summary, indent=2) + "\n")
        return TrainResult(self.run.path, self.step, val_loss, summary["val_ppl"], tokens_per_s, sample)

    def sample(self, n_tokens: int, seed: int = 0) -> str:
        """Generate n_tokens from the start of a validation document (fixed seed)."""
        prompt = torch.as_tensor(self.data.val.tokens[:8].astype("int64"), device=self.device)[None]
        generator = torch.Generator(device=self.device).manual_seed(seed)
        out = self.model.generate(prompt, n_tokens, temperature=0.8, top_k=50, generator=generator)
        return self.tokenizer.decode(out[0].tolist())


def train(cfg: RunConfig, resume: bool = False, overwrite: bool = False, progress: bool = True) -> TrainResult:
    return Trainer(cfg, resume=resume, overwrite=overwrite, progress=progress).fit()
