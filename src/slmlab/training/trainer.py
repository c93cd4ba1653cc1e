"""The training loop: one config in, one run directory out.

Each optimizer step (step.py) may be skipped for a loss or gradient that is not finite, and
`max_nan_skips` consecutive skipped ones abort the run. Every `eval_every` steps the model is
scored on a fixed validation sample; every `checkpoint_every` steps weights and full training
state are saved, so `resume` continues bit-exactly (same weights as an uninterrupted run on CPU).
What watches the run without changing it (the trackers, attention frames, a user's own code) is a
callback (callbacks.py).

Under torchrun the same loop runs data-parallel (see distributed.py): every rank draws the same
global batch and computes its own rows, DDP or FSDP2 averages the gradients, validation batches
are split across ranks and the losses summed, and only rank 0 writes the run directory.

The host never waits for the device inside a step: the skip counts are read with the loss at log
steps, so an abort for too many consecutive skipped steps comes at the next log step.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable

import torch
from torch import nn

from ..config import DataConfig, RunConfig, check_config, resolve_vocab
from ..config.ignored import unread_settings
from ..config.plugin_use import unrecorded_code_warning
from ..data.corpora import check_outside_source
from ..data.sampling import WindowSampler, check_windows
from ..data.tokenizers import Tokenizer
from ..data.tokens import TokenData, prepare_tokens
from ..errors import TrainingError
from ..model import build_model, model_stats
from ..model.block_local import trains_as_full_warning
from ..model.positions import untrained_positions_warning
from ..runs.checkpoints import (
    existing_checkpoint,
    latest_checkpoint,
    load_checkpoint,
    load_training_state,
    load_weights,
    save_checkpoint,
)
from ..runs.metrics import MetricsLog, perplexity
from ..runs.run_dir import RunDir, final_weights_intact
from . import stopping
from .callbacks import TrainingCallback, checked_callbacks
from .distributed import (
    World,
    check_batch,
    full_model_state,
    load_optimizer_state,
    parallelize,
    tied_aliases,
    weights_finite,
    whole_copy,
)
from .frames import AttentionFrames
from .kernel_choice import check_local_kernel, choose_local_kernel
from .memory_room import check_training_room
from .optim import build_optimizer, lr_at, schedule_warning, select_trainable
from .progress import TrainingProgress
from .results import TrainResult, write_results
from .resume import restore_state, resume_config, training_state
from .runtime import seed_everything, slow_bf16_warning, use_threads
from .step import OptimizerStep
from .tally import StepTally, check_skips
from .trackers import Trackers
from .validation import score_validation

log = logging.getLogger("slmlab")


def prepare_data(
    data: DataConfig, tokenizer: Tokenizer | None, world: World, progress: bool = True
) -> tuple[Tokenizer, TokenData]:
    """Tokenize (or reuse) the corpus: rank 0 builds the cache files (with a bar on a terminal
    unless `progress` is off, else log lines), the other ranks then read them."""
    if world.is_main:
        prepared = prepare_tokens(data, tokenizer, progress=None if progress else False)
    world.barrier()
    return prepared if world.is_main else prepare_tokens(data, tokenizer, progress=False)


class Trainer:
    def __init__(
        self,
        cfg: RunConfig,
        resume: bool = False,
        overwrite: bool = False,
        progress: bool = True,
        init_from: RunDir | None = None,
        carry_optimizer: bool = False,
        from_checkpoint: str | int | None = None,
        callbacks: Iterable[TrainingCallback] = (),
    ):
        """`init_from`: a finished run whose final weights and tokenizer this run starts from
        (a curriculum's previous phase); `carry_optimizer` also takes its AdamW state;
        `from_checkpoint`: with `resume`, the checkpoint to continue from (default: the latest);
        `callbacks`: the caller's own watchers (callbacks.py), called after the trainer's own.

        Rank 0 holds the run's writer lock from here until `close()`. A fresh run whose set-up
        fails (a corpus too short for the windows, a model that does not build) leaves no run
        directory behind, so the corrected command runs without --overwrite."""
        check_config(cfg)  # a config built or changed in code is held to the rules a loaded one meets
        callbacks = checked_callbacks(callbacks)
        self.run = RunDir.for_config(cfg)
        self.world, self.device = World.from_env(cfg.train.device)
        self._lock = self.run.lock() if self.world.is_main else None
        self._created = False
        self.callbacks = callbacks  # the trackers and frames go before them once set up
        self._threads = torch.get_num_threads()  # train.threads applies to this run only
        try:
            self._set_up(cfg, resume, overwrite, progress, init_from, carry_optimizer, from_checkpoint)
        except BaseException:
            self._remove_if_empty()
            self.close()
            raise

    def _remove_if_empty(self) -> None:
        """Remove the directory of a fresh run that failed before it recorded anything (no metrics,
        no checkpoint): the config and tokenizer it holds are the failed command's own."""
        if self._created and self.world.is_main and not self.run.metrics.exists() and not self.run.checkpoints.exists():
            self._close_callbacks()  # before removing what the trackers wrote
            self.run.remove_owned()
            if not any(self.run.path.iterdir()):
                self.run.path.rmdir()

    def close(self) -> None:
        """Close the callbacks (the trackers finish), give up the run's writer lock and give the
        process back the thread count it had (`train.threads` sets it for the run)."""
        if torch.get_num_threads() != self._threads:
            torch.set_num_threads(self._threads)
        try:
            self._close_callbacks()
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def _close_callbacks(self) -> None:
        """Each callback's close, once (a later call finds none left). A failure to close is
        logged, not raised: the run's own record is written, and the others still close."""
        callbacks, self.callbacks = self.callbacks, []
        for callback in callbacks:
            try:
                callback.close()
            except Exception as err:
                log.warning("callback %s did not close cleanly: %s", type(callback).__name__, err)

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _set_up(self, cfg, resume, overwrite, progress, init_from, carry_optimizer, from_checkpoint) -> None:
        """Data, run directory, model, sampler, optimizer and (resuming) the checkpoint's state."""
        self.checkpoint = None
        if resume:
            self.checkpoint = (
                latest_checkpoint(self.run.checkpoints)
                if from_checkpoint is None
                else existing_checkpoint(self.run.checkpoints, from_checkpoint)
            )
            cfg = resume_config(self.run, self.checkpoint, cfg)
        train = cfg.train
        check_batch(train.batch_size, self.world)
        warnings = [use_threads(train.threads), slow_bf16_warning(self.device, train.dtype)]
        seed_everything(train.seed)
        tokenizer = None
        if resume:
            tokenizer = self.run.read_tokenizer(cfg.model.vocab_size, cfg.data.tokenizer)
        elif init_from:
            tokenizer = init_from.read_tokenizer(0)
        self.tokenizer, self.data = prepare_data(cfg.data, tokenizer, self.world, progress)
        resolve_vocab(cfg, self.tokenizer.vocab_size)
        check_windows(self.data.train, self.data.val, cfg.data.seq_len, train.batch_size, cfg.data.mixture)
        self.token_bytes = torch.from_numpy(self.tokenizer.token_bytes())
        check_local_kernel(cfg.model, self.device)
        check_training_room(cfg, self.device, self.world)  # before the run folder is made or replaced
        if not (resume or init_from):  # a model whose weights come from a run: its positions were trained there
            warnings.append(untrained_positions_warning(cfg.model, cfg.data.seq_len))
        warnings += [schedule_warning(train), trains_as_full_warning(cfg.model, cfg.data.seq_len), *unread_settings(cfg)]
        warnings.append(unrecorded_code_warning(cfg))
        for warning in warnings:
            if warning and self.world.is_main:
                log.warning("%s", warning)
        self.cfg, self.progress = cfg, progress and self.world.is_main
        if not resume:
            check_outside_source(cfg.data, self.run.path, "the run folder")
            self.run.ensure_free(overwrite, init_from.path if init_from is not None else None)
            self.world.barrier()  # every rank has checked before rank 0 replaces anything
            if self.world.is_main:
                self.run.create(cfg, overwrite)
                self._created = True
                self.tokenizer.save(self.run.tokenizer)
        self.model = build_model(cfg.model).to(self.device)
        self.aliases = tied_aliases(self.model)
        self.stats = model_stats(self.model, cfg.model)
        self.sampler = WindowSampler(
            self.data.train,
            cfg.data.seq_len,
            train.batch_size,
            train.seed,
            cfg.data.mixture or None,
            rows=self.world.rows(train.batch_size),
        )
        self.metrics = MetricsLog(self.run.metrics)
        self.step, self.tokens, self.nan_skips = 0, 0, 0
        self.seconds_before, self.peak_before, self.started = 0.0, 0, None
        state = None
        if resume:
            state = load_checkpoint(self.run.checkpoints, self.model, self.checkpoint, cfg.model)
        elif init_from is not None:
            load_weights(self.model, init_from.final_weights)
            if carry_optimizer:
                state = {"optimizer": load_training_state(init_from.checkpoints)["optimizer"]}
        rows = len(range(train.batch_size)[self.world.rows(train.batch_size)])
        self.local_kernel = choose_local_kernel(
            self.model,
            cfg.model,
            rows,
            cfg.data.seq_len,
            self.device,
            train.dtype,
            vote=self.world.mean,
            earlier=state.get("local_kernel") if resume else None,
        )
        if self.local_kernel:
            log.info("block-local kernel: %s (%s)", self.local_kernel["kernel"], self.local_kernel["chosen_by"])
        trainable = select_trainable(self.model, train.trainable)
        if train.trainable != "all":
            log.info("training %s only: %d of %d parameters", train.trainable, trainable, self.stats.params)
        self.wrapped = parallelize(self.model, self.world, train.parallel, self.device)
        self.optimizer = build_optimizer(self.model, train, self.device)
        if state is not None:
            load_optimizer_state(self.model, self.optimizer, state["optimizer"])
        if resume:
            restore_state(self, state)
        self.forward = torch.compile(self.wrapped) if train.compile else self.wrapped
        self.optimizer_step = self.stepper = OptimizerStep(  # `stepper` keeps it where a caller wraps optimizer_step
            self.model, self.wrapped, self.forward, self.optimizer, self.sampler, train, self.world, self.device
        )
        watchers = [Trackers(cfg, self.run.path, resume)] if self.world.is_main else []
        self.callbacks[:0] = watchers + ([AttentionFrames(train.viz_every, self.model)] if train.viz_every else [])
        self.world.barrier()

    def _save_checkpoint(self, weights: dict[str, torch.Tensor] | None = None) -> None:
        """Gather full weights and optimizer state (every rank takes part); rank 0 writes them.
        Weights that are no longer finite are never written: they would rotate out the last good
        checkpoint (an update from finite gradients can still overflow them at a huge lr)."""
        if not weights_finite(self.model, self.world):
            raise TrainingError(
                f"the weights are no longer finite at step {self.step} (an update overflowed them): lower train.lr "
                "or set train.grad_clip; the checkpoints saved before are kept"
            )
        weights = weights if weights is not None else full_model_state(self.model, self.aliases)
        state = training_state(self)  # every rank gathers the optimizer's
        if self.world.is_main:
            save_checkpoint(self.run.checkpoints, self.step, weights, state, self.cfg.train.keep_checkpoints, self.cfg)

    def evaluate(self) -> tuple[float, float]:
        """(validation loss, its bits per byte)."""
        t = self.cfg.train
        return score_validation(
            self.forward, self.data.val, self.cfg.data.seq_len, t.batch_size, t.eval_batches, self.device, t.dtype, self.world,
            self.token_bytes,
        )  # fmt: skip

    def fit(self) -> TrainResult:
        """Train to train.steps and write the results (a resumed run that had already finished
        changes nothing and returns its recorded result). However it ends, the lock is released; a
        fresh run that fails or is interrupted (a second Ctrl-C) before its first record leaves no
        directory, as a failed set-up does: its config alone could not be resumed."""
        try:
            with stopping.armed():  # a stop signal ends the loop at a step's end (training/stopping.py)
                return self._fit()
        except BaseException:
            self._remove_if_empty()
            raise
        finally:
            self.close()

    def _fit(self) -> TrainResult:
        t, d = self.cfg.train, self.cfg.data
        if self.step >= t.steps and self.run.summary.is_file():
            summary = self.run.read_summary()
            if summary["step"] == self.step and final_weights_intact(self.run, summary):
                log.info("%s finished at step %d already; raise --train.steps to train longer", self.run.path, self.step)
                return TrainResult.from_summary(self.run.path, summary)
            if summary["step"] == self.step:  # the checkpoint of that step holds the same weights
                log.warning("%s is missing or damaged: writing it again from step %d", self.run.final_weights, self.step)
        tokens_per_step = t.batch_size * d.seq_len * t.grad_accum
        progress = TrainingProgress(
            self.cfg.name, t.steps, self.step, bar=self.progress, log_lines=not self.progress and self.world.is_main
        )
        self.model.train()
        tally, timed_steps = StepTally(self.device), 0
        window_start = self.started = time.perf_counter()
        scores, compile_seconds = (math.nan, math.nan), 0.0  # the last (validation loss, bits per byte)
        vote = stopping.StopVote(self.world.distributed)  # whether a signal stops training at a step's end
        while self.step < t.steps:
            first_compiled = t.compile and not compile_seconds
            if first_compiled:  # else the bar (or, without one, the log) stays silent while it compiles
                log.info("torch.compile: compiling the training step (the first step takes seconds to minutes)")
            loss, grad_norm, skip = self.optimizer_step(self.step)
            tally.add(loss, skip)
            if first_compiled:  # the first step compiles the graph: time it apart from the throughput
                loss.item()
                compile_seconds = time.perf_counter() - window_start
                window_start = time.perf_counter()
                log.info("torch.compile: first step took %.1f s", compile_seconds)
            else:
                timed_steps += 1
            self.step += 1
            self.tokens += tokens_per_step
            progress.step()
            evaluating = self.step % t.eval_every == 0 or self.step == t.steps
            stop_signal = vote()  # every step, in every process
            stopping_now = stop_signal is not None and self.step < t.steps
            checkpointing = stopping_now or (t.checkpoint_every and self.step % t.checkpoint_every == 0 and self.step < t.steps)
            if self.step % t.log_every == 0 or evaluating or checkpointing:
                window = tally.read(grad_norm)
                self._account_skips(window)
                dt = (time.perf_counter() - window_start) / timed_steps if timed_steps else 0.0
                record = {
                    "step": self.step,
                    "tokens": self.tokens,
                    "loss": window["loss"],
                    "lr": lr_at(self.step - 1, t),
                    "grad_norm": window["grad_norm"],
                    "nan_skips": self.nan_skips,
                }
                if self.stepper.auxiliary is not None:  # the last step's auxiliary terms
                    record["aux_loss"] = self.stepper.auxiliary.item()
                if dt > 0:  # a window of the compiling step alone times nothing
                    record.update(dt_ms=1000 * dt, tokens_per_s=tokens_per_step / dt)
                if evaluating:
                    scores = self.evaluate()
                    record.update(val_loss=scores[0], val_ppl=perplexity(scores[0]), val_bpb=scores[1])
                if self.world.is_main:
                    self.metrics.append(record)
                progress.report(record)
                for callback in self.callbacks:
                    callback.on_record(self, record)
                timed_steps, window_start = 0, time.perf_counter()
            if checkpointing:
                self._save_checkpoint()
            for callback in self.callbacks:
                callback.on_step(self)
            if stopping_now:
                progress.close()
                vote.close()
                raise stopping.TrainingStopped(stop_signal, self.step, self.run.path, f"step_{self.step:06d}")
        progress.close()
        vote.close()
        elapsed = time.perf_counter() - self.started
        return self._finish(scores, elapsed, compile_seconds)

    def whole_model(self, weights: dict[str, torch.Tensor] | None = None) -> nn.Module | None:
        """The model for rank 0 to read on its own: the model itself, or, when FSDP shards it, a
        whole copy made from `weights` (gathered here when not given: a collective every rank
        joins, and the other ranks get None)."""
        if not (self.world.distributed and self.cfg.train.parallel == "fsdp"):
            return self.model
        weights = weights if weights is not None else full_model_state(self.model, self.aliases)
        return whole_copy(self.cfg.model, self.device, weights, self.aliases) if self.world.is_main else None

    def _account_skips(self, window: dict) -> None:
        self.nan_skips += window["skipped"]
        check_skips(window, self.step, self.cfg.train.max_nan_skips, last=self.step >= self.cfg.train.steps)

    def _finish(self, scores: tuple[float, float], elapsed: float, compile_seconds: float) -> TrainResult:
        if math.isnan(scores[0]):
            scores = self.evaluate()
        val_loss, val_bpb = scores
        weights = full_model_state(self.model, self.aliases)
        self._save_checkpoint(weights)
        if self.world.is_main:
            result = write_results(self, weights, val_loss, val_bpb, elapsed, compile_seconds)
        self.world.barrier()  # the other ranks go on only once the run's files exist
        if not self.world.is_main:
            result = TrainResult(self.run.path, self.step, val_loss, perplexity(val_loss), 0.0, "", compile_seconds, val_bpb)
        return result


def train(
    cfg: RunConfig,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    from_checkpoint: str | None = None,
    callbacks: Iterable[TrainingCallback] = (),
) -> TrainResult:
    with Trainer(cfg, resume, overwrite, progress, from_checkpoint=from_checkpoint, callbacks=callbacks) as trainer:
        return trainer.fit()
