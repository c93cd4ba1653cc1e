"""Training callbacks: a watcher sees every step and every logged record, on single runs and on each
phase of a curriculum, and is closed once however the run ends."""

from __future__ import annotations

import pytest

from slmlab.config import config_from_dict
from slmlab.data.corpora import CorpusError
from slmlab.errors import TrainingError
from slmlab.runs.metrics import MetricsLog
from slmlab.runs.run_dir import RunDir
from slmlab.training import Trainer, TrainingCallback, train


class Recorder(TrainingCallback):
    def __init__(self):
        self.steps, self.records, self.closed = [], [], []

    def on_step(self, trainer):
        self.steps.append((trainer.cfg.name, trainer.step))

    def on_record(self, trainer, record):
        self.records.append(dict(record))

    def close(self):
        self.closed.append(len(self.steps))


def test_a_callback_sees_every_step_and_the_records_metrics_jsonl_holds_then_is_closed_once(text_corpus, make_config):
    cfg = make_config(text_corpus, train={"steps": 7, "log_every": 2, "eval_every": 3})
    recorder = Recorder()
    train(cfg, progress=False, callbacks=[recorder])
    assert recorder.steps == [(cfg.name, step) for step in range(1, 8)]
    written = MetricsLog(RunDir.for_config(cfg).metrics).read()
    assert [r["step"] for r in written] == [2, 3, 4, 6, 7]  # log steps, evaluations and the last
    assert recorder.records == written
    assert "val_loss" in recorder.records[1] and "val_loss" not in recorder.records[0]
    assert recorder.closed == [7]


def test_a_callback_is_closed_when_the_set_up_or_a_step_fails(text_corpus, make_config, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    recorder = Recorder()
    with pytest.raises(CorpusError):
        Trainer(make_config(empty), progress=False, callbacks=[recorder])
    assert recorder.closed == [0]

    class Failing(Recorder):
        def on_step(self, trainer):
            super().on_step(trainer)
            if trainer.step == 3:
                raise TrainingError("the watcher gave up")

    failing = Failing()
    cfg = make_config(text_corpus, train={"steps": 6})
    with pytest.raises(TrainingError, match="the watcher gave up"):
        train(cfg, progress=False, callbacks=[failing])
    assert failing.closed == [3]
    with Trainer(cfg, resume=False, overwrite=True, progress=False) as trainer:  # the run's lock was given back
        assert trainer.step == 0


def test_a_curricula_phases_each_call_and_close_the_callbacks(text_corpus, make_config):
    values = make_config(text_corpus, train={"steps": 4}).to_dict()
    values["name"] = "phased"
    values["phases"] = [{"name": "A", "steps": 2}, {"name": "B", "steps": 4}]
    recorder = Recorder()
    train(config_from_dict(values), progress=False, callbacks=[recorder])
    assert recorder.steps == [("phase1_A", 1), ("phase1_A", 2), *(("phase2_B", step) for step in range(1, 5))]
    assert recorder.closed == [2, 6]  # closed as each phase ends


def test_a_callback_that_fails_to_close_is_logged_and_the_others_still_close(text_corpus, make_config, caplog):
    class Unclosable(Recorder):
        def close(self):
            raise OSError("disk gone")

    first, last = Unclosable(), Recorder()
    result = train(make_config(text_corpus, train={"steps": 2}), progress=False, callbacks=[first, last])
    assert result.step == 2 and last.closed == [2]
    assert "callback Unclosable did not close cleanly: disk gone" in caplog.text


def test_something_that_is_not_a_callback_is_refused_before_the_run_begins(text_corpus, make_config):
    cfg = make_config(text_corpus)
    with pytest.raises(TypeError, match=r"callbacks\[1\] \(builtin_function_or_method\) has no on_step, on_record, close"):
        train(cfg, progress=False, callbacks=[Recorder(), print])
    values = cfg.to_dict()
    values["phases"] = [{"name": "A", "steps": 2}]
    with pytest.raises(TypeError, match=r"callbacks\[0\] \(str\) has no"):
        train(config_from_dict(values), progress=False, callbacks=["Recorder"])
    with pytest.raises(TypeError, match=r"callbacks is a Recorder, not a list of them: give \[callback, ...\]"):
        train(cfg, progress=False, callbacks=Recorder())  # 'Recorder' object is not iterable
    assert not RunDir.for_config(cfg).path.exists()
    assert train(cfg, progress=False, callbacks=None).step == cfg.train.steps  # None: no callbacks
