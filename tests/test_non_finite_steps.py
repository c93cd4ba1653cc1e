"""Non-finite steps: skipped, counted and aborted after train.max_nan_skips; a model non-finite from
its first step named as the cause; overflowing weights never checkpointed over good ones."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from slmlab.runs.run_dir import RunDir
from slmlab.training import Trainer, TrainingError


def test_non_finite_steps_are_skipped_counted_and_abort_after_k(text_corpus, make_config, monkeypatch):
    cfg = make_config(text_corpus, train={"steps": 12, "max_nan_skips": 3, "log_every": 1})
    trainer = Trainer(cfg, progress=False)
    real_forward_backward, real_train_step = trainer.optimizer_step.forward_backward, trainer.optimizer_step
    poisoned, changed = {3, 6, 7}, {}

    def sometimes_nan():  # step numbers count from 1
        loss, norm = real_forward_backward()
        return (loss * math.nan, norm) if trainer.step + 1 in poisoned else (loss, norm)

    def watched_step(step):
        before = [p.detach().clone() for p in trainer.model.parameters()]
        out = real_train_step(step)
        changed[trainer.step + 1] = any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
        return out

    monkeypatch.setattr(trainer.optimizer_step, "forward_backward", sometimes_nan)
    monkeypatch.setattr(trainer, "optimizer_step", watched_step)
    trainer.fit()
    records = trainer.metrics.read()
    assert records[-1]["nan_skips"] == 3
    assert [r["step"] for r in records if r["loss"] is None] == [3, 6, 7]  # a window of one skipped step has no loss
    assert {step for step, moved in changed.items() if not moved} == poisoned  # skipped steps change no weight
    assert trainer.optimizer.state_dict()["state"][0]["step"].item() == 12 - 3  # ... nor the step count

    always = make_config(text_corpus, train={"steps": 12, "max_nan_skips": 3})
    always.name = "diverging"
    trainer = Trainer(always, progress=False)
    real_forward_backward = trainer.optimizer_step.forward_backward

    def diverging_after_two():
        loss, norm = real_forward_backward()
        return (loss, norm) if trainer.step < 2 else (torch.tensor(math.nan), norm)

    monkeypatch.setattr(trainer.optimizer_step, "forward_backward", diverging_after_two)
    with pytest.raises(TrainingError, match="3 consecutive non-finite steps by step 5; lower train.lr"):  # first log step
        trainer.fit()


@pytest.mark.parametrize(("steps", "most", "skipped"), [(12, 3, 5), (3, 5, 3)])
def test_a_model_non_finite_from_its_first_step_is_named_as_the_cause_not_the_learning_rate(
    text_corpus, make_config, steps, most, skipped
):
    """init_std = 1e30 overflows the initial model: no update is ever made, so 'lower train.lr' would mislead.
    A run shorter than max_nan_skips finished such steps as if trained, with NaN scores, then failed
    at its closing sample blaming 'damaged weights' and wrote no summary."""
    cfg = make_config(text_corpus, model={"init_std": 1e30}, train={"steps": steps, "max_nan_skips": most, "log_every": 5})
    with pytest.raises(
        TrainingError, match=rf"initial model's loss or gradient is not finite \({skipped} steps skipped.*init_std"
    ):
        Trainer(cfg, progress=False).fit()
    assert not (Path(cfg.out_dir) / cfg.name).exists()  # nothing was recorded: no run folder is left


def test_weights_that_overflow_are_never_checkpointed_over_the_last_good_ones(text_corpus, make_config, monkeypatch):
    """A finite gradient at a huge lr can still overflow the weights; every later step is then
    skipped, and the run used to finish and write the inf weights as its final ones."""
    cfg = make_config(text_corpus, train={"steps": 10, "checkpoint_every": 5, "max_nan_skips": 50})
    trainer = Trainer(cfg, progress=False)
    real_train_step = trainer.optimizer_step

    def overflowing_at_step_seven(step):
        out = real_train_step(step)
        if trainer.step + 1 == 7:
            with torch.no_grad():
                next(trainer.model.parameters()).fill_(math.inf)
        return out

    monkeypatch.setattr(trainer, "optimizer_step", overflowing_at_step_seven)
    with pytest.raises(TrainingError, match="the weights are no longer finite at step 10"):
        trainer.fit()
    run = RunDir.for_config(cfg)
    assert (run.checkpoints / "latest").read_text().strip() == "step_000005"
    assert not run.final_weights.exists() and not run.summary.exists()
