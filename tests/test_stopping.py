"""Ctrl-C or SIGTERM during `slmlab train` ends the step under way, writes a checkpoint at it and
stops (exit 128 + the signal's number); resuming from it ends with the weights of a run that never
stopped. A second signal, or one outside the training loop, interrupts at once, as before."""

from __future__ import annotations

import json
import os
import shutil
import signal

import pytest
from safetensors.torch import load_file

from slmlab.cli import main
from slmlab.persona.gain import persona_gain
from slmlab.runs.run_dir import RunDir
from slmlab.training import Trainer, stopping, train
from tests.conftest import stop_once_training, write_micro_toml


@pytest.fixture(autouse=True)
def sigint_as_a_terminal_gives_it():
    """Ctrl-C handled as Python does by default, even when the test run was started as a
    background job (`make test &`), whose processes inherit SIGINT ignored."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def _signal_at(trainer: Trainer, step: int, number: int = signal.SIGINT, times: int = 1) -> None:
    """Send this process `number` (`times` times) while step `step` + 1 is being trained."""
    real_next_batch = trainer.sampler.next_batch

    def next_batch():
        if trainer.step == step:
            for _ in range(times):
                os.kill(os.getpid(), number)
        return real_next_batch()

    trainer.sampler.next_batch = next_batch


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_at_the_end_of_the_step_with_a_checkpoint_and_resume_is_exact(text_corpus, make_config, number):
    straight = make_config(text_corpus)
    straight.name = "straight"
    train(straight, progress=False)

    cfg = make_config(text_corpus)  # checkpoints every 10 steps: the signal comes in step 7
    trainer = Trainer(cfg, progress=False)
    _signal_at(trainer, 6, number)
    with stopping.stop_at_step_end(), pytest.raises(stopping.TrainingStopped) as caught:
        trainer.fit()
    assert caught.value.step == 7 and caught.value.exit_code == 128 + number
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handlers are put back
    run = RunDir.for_config(cfg)
    assert (run.checkpoints / "latest").read_text() == "step_000007" and not run.final_weights.exists()
    assert [r["step"] for r in run.read_metrics()][-1] == 7  # the loss of the steps since the last record

    train(cfg, resume=True, progress=False)
    a, b = load_file(RunDir.for_config(straight).final_weights), load_file(run.final_weights)
    assert all(a[k].equal(b[k]) for k in a)


def test_the_cli_says_where_to_resume_and_exits_as_the_signal_would(text_corpus, micro_toml, tmp_path, capsys, monkeypatch):
    real_fit = Trainer.fit

    def fit(trainer):
        _signal_at(trainer, 2)
        return real_fit(trainer)

    monkeypatch.setattr(Trainer, "fit", fit)
    assert main(["train", str(micro_toml), "--no-progress"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("slmlab: stopped by SIGINT at step 3; checkpoint step_000003 written in ")
    assert err[-1].endswith("; continue with: slmlab train --resume " + str(tmp_path / "runs" / micro_toml.stem))


def test_a_second_signal_or_one_before_the_loop_interrupts_at_once(text_corpus, make_config):
    trainer = Trainer(make_config(text_corpus), progress=False)
    _signal_at(trainer, 4, times=2)
    with stopping.stop_at_step_end(), pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert not (RunDir.for_config(trainer.cfg).checkpoints / "latest").exists()  # no checkpoint at step 5
    # nor a folder: before its first record the run left its config alone, which `train` refused to
    # replace ("resume it") and `train --resume` to resume ("no checkpoint")
    assert not RunDir.for_config(trainer.cfg).path.exists()
    with stopping.stop_at_step_end(), pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)  # reading the corpus, building the model: nothing to finish
    assert stopping.requested() is None


def test_under_torchrun_its_copy_of_a_signal_only_asks_and_a_later_one_stops_at_once(monkeypatch):
    """torchrun passes each signal it gets on to its processes, which a terminal's Ctrl-C reached
    already: that copy (within TORCHRUN_ECHO seconds) must not stop a process at once, mid-step,
    while the others end theirs. A Ctrl-C given later still does."""
    now = [100.0]
    monkeypatch.setattr(stopping.time, "monotonic", lambda: now[0])
    monkeypatch.setenv("WORLD_SIZE", "2")
    with stopping.stop_at_step_end(), stopping.armed():
        os.kill(os.getpid(), signal.SIGINT)  # the terminal's
        now[0] += 0.05
        os.kill(os.getpid(), signal.SIGINT)  # torchrun's copy
        assert stopping.requested() == "SIGINT"
        now[0] += stopping.TORCHRUN_ECHO
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    monkeypatch.setenv("WORLD_SIZE", "1")
    with stopping.stop_at_step_end(), stopping.armed():  # one process: a second signal stops at once
        os.kill(os.getpid(), signal.SIGTERM)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)


def test_a_signal_ignored_by_whoever_started_training_stays_ignored():
    """A job started with `&` from a script ignores SIGINT, so that Ctrl-C in the terminal leaves it
    running: the handlers must not catch it again."""
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with stopping.stop_at_step_end():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL  # SIGTERM is still taken
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["ctrl-c", "kill"])
def test_a_stopped_sweep_starts_no_queued_run_and_its_runs_under_way_keep_their_steps(tmp_path, micro_toml, how):
    """Ctrl-C (SIGINT to the terminal's process group) stopped the runs under way, then the pool
    trained every queued run to the end before the sweep exited. `kill SWEEP` (SIGTERM to the
    parent alone) is passed on to its workers."""
    import sys

    sweep = tmp_path / "sweep.toml"
    sweep.write_text(
        f'name = "s"\nout_dir = "{tmp_path / "runs"}"\nbase = "{micro_toml}"\nseeds = [0, 1]\n'
        '[overrides]\n"train.steps" = 100000\n"train.checkpoint_every" = 100000\n[variants.a]\n'
    )
    metrics = tmp_path / "runs" / "s" / "a_s0" / "metrics.jsonl"  # the first run is training
    command = [sys.executable, "-m", "slmlab", "sweep", str(sweep), "--jobs", "1"]
    process = stop_once_training(command, metrics, how, records=2)
    err = process.stderr_text
    assert process.returncode == 130, err
    assert "interrupted (run the same sweep again to continue its runs)" in err
    run = RunDir(tmp_path / "runs" / "s" / "a_s0")
    latest = (run.checkpoints / "latest").read_text()
    assert int(latest.removeprefix("step_")) == run.read_metrics()[-1]["step"] > 0  # its steps were kept
    assert not (tmp_path / "runs" / "s" / "a_s1").exists()  # the queued run never started


@pytest.mark.slow
@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_the_bpe_trainer_runs_stops_at_once(tmp_path, number):
    """The Rust BPE trainer held the main thread for the whole of its merges: slmlab's SIGTERM
    handler, and Ctrl-C, took effect only when it returned (56 s here, minutes on a large corpus).
    The trainer is made slow on purpose: a 300,000-letter genome read as one word."""
    import subprocess
    import sys
    import time

    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "genome.txt").write_text("".join("ACGT"[i * 7 % 13 % 4] for i in range(300_000)))
    child = (
        "import sys; from slmlab.data import pieces; pieces.trainable_pieces.__defaults__ = (10**9,); "
        "from slmlab.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    settings = ["--data.tokenizer", "bpe", "--data.vocab_size", "1000", "--data.cache_dir", str(tmp_path / "cache")]
    command = [sys.executable, "-c", child, "train", str(write_micro_toml(tmp_path / "c.toml", tmp_path / "corpus", tmp_path))]
    process = subprocess.Popen([*command, *settings], stderr=subprocess.PIPE, text=True)
    for line in process.stderr:
        if "training bpe tokenizer" in line:
            break
    time.sleep(2.0)  # the genome has been read: the trainer is merging, in Rust
    assert process.poll() is None
    process.send_signal(number)
    try:
        err = process.communicate(timeout=20)[1]
    finally:
        process.kill()
    assert (
        process.returncode == 130
        and err.strip() == "slmlab: interrupted (a run that wrote a checkpoint continues with slmlab train --resume RUN)"
    ), err


def test_a_persona_run_stops_with_a_checkpoint_and_resumed_ends_scored_against_its_base(
    text_corpus, micro_toml, tmp_path, capsys, monkeypatch
):
    """`slmlab persona` lost every step since its last checkpoint on Ctrl-C (it installed no
    handler), and a persona run finished by `train --resume` had no stage-2 gain: the run did not
    record its base. It stops as `train` does, and the resumed run ends scored against its base."""
    assert main(["train", str(micro_toml), "--no-progress", "--name", "base"]) == 0
    base = tmp_path / "runs" / "base"
    real_fit = Trainer.fit

    def fit(trainer):
        _signal_at(trainer, 2)
        return real_fit(trainer)

    monkeypatch.setattr(Trainer, "fit", fit)
    stage2 = ["persona", str(base), "--persona-data", str(text_corpus), "--train", "all", "--steps", "6", "--no-progress"]
    capsys.readouterr()
    assert main(stage2) == 130
    run = tmp_path / "runs" / "base_persona"
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith("; continue with: slmlab train --resume " + str(run))
    assert (run / "checkpoints" / "latest").read_text() == "step_000003" and not (run / "persona_gain.json").exists()
    monkeypatch.setattr(Trainer, "fit", real_fit)

    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    gain = json.loads((run / "persona_gain.json").read_text())
    assert gain["base"] == str(base) and gain["val_loss_after"] == pytest.approx(RunDir(run).read_summary()["val_loss"])
    assert f"against {base} on the same {gain['batches']} batches of persona text" in capsys.readouterr().out
    assert main([*stage2, "--name", "straight"]) == 0  # the same stage 2, never stopped: the same weights
    straight = load_file(tmp_path / "runs" / "straight" / "final.safetensors")
    assert all(tensor.equal(straight[name]) for name, tensor in load_file(run / "final.safetensors").items())
    assert persona_gain(base, run)["val_loss_before"] == gain["val_loss_before"]  # the base as it is

    # resumed again for more steps after its base was trained anew: no figure against other weights
    assert main(["train", str(micro_toml), "--no-progress", "--name", "base", "--overwrite", "--train.seed", "7"]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--no-progress", "--train.steps", "8"]) == 0
    assert f"no stage-2 gain: its base run {base} holds other weights than the ones it started from" in capsys.readouterr().out
    shutil.rmtree(base)
    assert main(["train", "--resume", str(run), "--no-progress", "--train.steps", "10"]) == 0
    assert f"no stage-2 gain: its base run {base} is gone or cannot be read" in capsys.readouterr().out
    (run / "stage2.json").write_text("[1, 2]")  # damaged: refused before any step, the run untouched
    before = (run / "final.safetensors").read_bytes()
    assert main(["train", "--resume", str(run), "--no-progress", "--train.steps", "12"]) == 2
    err = capsys.readouterr().err.strip()
    assert "stage2.json" in err and "\n" not in err
    assert (run / "final.safetensors").read_bytes() == before and RunDir(run).read_summary()["step"] == 10


def test_a_second_signal_stops_persona_at_once_and_says_how_a_run_goes_on(text_corpus, micro_toml, tmp_path, capsys, monkeypatch):
    """`train` said how a run that wrote a checkpoint goes on; `persona`, whose runs go on the same
    way, said only "interrupted"."""
    assert main(["train", str(micro_toml), "--no-progress", "--name", "base"]) == 0
    real_fit = Trainer.fit

    def fit(trainer):
        _signal_at(trainer, 2, times=2)
        return real_fit(trainer)

    monkeypatch.setattr(Trainer, "fit", fit)
    capsys.readouterr()
    base = tmp_path / "runs" / "base"
    assert main(["persona", str(base), "--persona-data", str(text_corpus), "--train", "all", "--no-progress"]) == 130
    err = capsys.readouterr().err.strip()
    assert err.endswith("slmlab: interrupted (a run that wrote a checkpoint continues with slmlab train --resume RUN)")
    assert not (tmp_path / "runs" / "base_persona").exists()  # stopped before its first record: nothing to go on from
