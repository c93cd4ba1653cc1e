"""What a training run shows while it runs: the bar's loss, validation loss and speed, and without
a bar one log line per evaluation (or per long stretch) with the speed as a median and an ETA."""

from __future__ import annotations

from slmlab.training import train
from slmlab.training.progress import TrainingProgress, clock


def test_without_a_bar_each_evaluation_logs_one_line_with_an_eta(text_corpus, make_config, caplog):
    cfg = make_config(text_corpus, train={"steps": 20, "eval_every": 10})
    with caplog.at_level("INFO", logger="slmlab"):
        train(cfg, progress=False)
    lines = [r.getMessage() for r in caplog.records if "ETA" in r.getMessage()]
    assert len(lines) == 2 and lines[0].startswith("tiny step 10/20: loss ") and "val loss" in lines[0]
    assert "nan" not in " ".join(lines)


def test_the_bar_shows_a_validation_loss_only_once_one_was_measured(caplog):
    progress = TrainingProgress("run", 30, 0, bar=False, log_lines=False)
    window = {"step": 10, "loss": 2.5, "tokens_per_s": 1000.0, "dt_ms": 10.0}
    progress.report(window)
    assert "val" not in progress.bar.postfix and "loss=2.500" in progress.bar.postfix
    progress.report({**window, "step": 20, "val_loss": 2.25, "val_bpb": 1.5})
    progress.report({**window, "step": 30})
    assert "val=2.250" in progress.bar.postfix  # the last measured one, kept between evaluations
    assert not [r for r in caplog.records if "ETA" in r.getMessage()]  # log lines only without a bar
    progress.close()


def test_the_speed_shown_is_the_median_of_the_windows_and_the_eta_follows_it(caplog):
    progress = TrainingProgress("run", 100, 0, bar=False, log_lines=True)
    for step, rate in ((10, 1000.0), (20, 10.0), (30, 1200.0)):  # one window met other work
        record = {"step": step, "loss": 2.0, "tokens_per_s": rate, "dt_ms": 1000 * 640 / rate}
        with caplog.at_level("INFO", logger="slmlab"):
            progress.report({**record, **({"val_loss": 1.9, "val_bpb": 1.0} if step == 30 else {})})
    assert "tok_s=1,000" in progress.bar.postfix
    (line,) = [r.getMessage() for r in caplog.records if "ETA" in r.getMessage()]
    assert "1,000 tokens/s (median of 3 windows)" in line and line.endswith("ETA 0:00:45")  # 70 steps x 0.64 s
    progress.close()


def test_a_window_that_timed_no_step_shows_no_speed_and_long_etas_keep_their_hours(caplog):
    progress = TrainingProgress("run", 10, 0, bar=False, log_lines=True)
    with caplog.at_level("INFO", logger="slmlab"):  # the compiling step alone, evaluated: nothing timed yet
        progress.report({"step": 1, "loss": 2.0, "val_loss": 1.9, "val_bpb": 1.0})
    assert progress.bar.postfix.startswith("loss=2.000, tok_s=–")
    (line,) = [r.getMessage() for r in caplog.records if "ETA" in r.getMessage()]
    assert "– tokens/s (no step timed yet), ETA –" in line
    assert clock(30 * 3600 + 61.4) == "30:01:01" and clock(59.6) == "0:01:00"
    progress.close()


def test_without_a_bar_a_long_stretch_between_evaluations_still_logs(caplog):
    progress = TrainingProgress("run", 100, 0, bar=False, log_lines=True, heartbeat=0.0)  # every window is "long"
    with caplog.at_level("INFO", logger="slmlab"):
        progress.report({"step": 10, "loss": 2.0, "tokens_per_s": 500.0, "dt_ms": 100.0})
        progress.report({"step": 20, "loss": 1.5, "tokens_per_s": 500.0, "dt_ms": 100.0, "val_loss": 1.4, "val_bpb": 0.9})
    first, second = [r.getMessage() for r in caplog.records if "ETA" in r.getMessage()]
    assert first == "run step 10/100: loss 2.0000, 500 tokens/s (one window), ETA 0:00:09"
    assert "loss 1.5000, val loss 1.4000 (0.9000 bits/byte), 500 tokens/s" in second
    progress.close()
