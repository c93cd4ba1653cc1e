"""Nothing lost, nothing silently wrong (reliability issue, classes 2, 3 and 6): one writer per run
directory, temp files of killed writes cleaned up, checksummed checkpoints with the intact older
one offered, resume that means what it says (sweep workers: test_sweep_workers.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from slmlab.cli import main
from slmlab.errors import CheckpointError, ConfigError, RunInUseError
from slmlab.files import remove_stale_temps
from slmlab.locks import DirectoryLock
from slmlab.runs import RunDir
from slmlab.training import train

HOLD = "import sys, time; from slmlab.locks import DirectoryLock; DirectoryLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(600)"


@pytest.fixture
def holder():
    """Start a process that takes a directory's lock and keeps it; kill it (-9) afterwards."""
    started = []

    def start(directory: Path) -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, "-c", HOLD, str(directory)], stdout=subprocess.PIPE, text=True)
        assert process.stdout.readline().strip() == "held"
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()
        process.wait()


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_a_second_writer_gets_one_line_naming_the_holder_and_changes_nothing(micro_toml, tmp_path, capsys, holder):
    assert main(["train", str(micro_toml), "--no-progress", "--name", "busy"]) == 0
    run = tmp_path / "runs" / "busy"
    before = _snapshot(run)
    process = holder(run)
    capsys.readouterr()
    for argv in (["--resume", str(run), "--train.steps", "20"], [str(micro_toml), "--name", "busy", "--overwrite"]):
        assert main(["train", *argv, "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert f"in use by process {process.pid}" in err and "\n" not in err
        assert _snapshot(run) == before
    process.kill()  # kill -9: the OS drops the lock with the process, nothing stale remains
    process.wait()
    assert main(["train", "--resume", str(run), "--train.steps", "14", "--no-progress"]) == 0
    assert RunDir(run).read_summary()["step"] == 14


def test_the_lock_is_exclusive_in_one_process_too_and_released_on_exit(tmp_path):
    with DirectoryLock(tmp_path / "run"), pytest.raises(RunInUseError, match=f"in use by process {os.getpid()}"):
        DirectoryLock(tmp_path / "run").acquire()
    DirectoryLock(tmp_path / "run").acquire().release()
    assert not (tmp_path / "run").exists()  # taking the lock creates nothing inside the run


def test_temp_files_of_killed_writes_are_removed_on_the_next_start(text_corpus, make_config):
    cfg = make_config(text_corpus, train={"steps": 10, "checkpoint_every": 5})
    train(cfg, progress=False)
    run = RunDir.for_config(cfg)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    leftovers = [run.path / f".metrics.jsonl.{pid}.x1y2z3.tmp", run.checkpoints / f".step_000010.safetensors.{pid}.ab_cd.tmp"]
    leftovers += [run.path / ".summary.json.k2j3h4", run.checkpoints / ".latest.q9w8e7"]  # named as before PIDs were
    for path in leftovers:
        path.write_bytes(b"half a file")
    keep = run.path / ".notes.tmp"  # not slmlab's temp name: left alone
    keep.write_text("mine")
    train(cfg, resume=True, progress=False)
    assert not any(path.exists() for path in leftovers) and keep.exists()


def test_a_temp_file_of_a_live_writer_is_kept_outside_a_locked_directory(tmp_path):
    live, dead = tmp_path / f".a.{os.getppid()}.q.tmp", tmp_path / ".b.999999999.q.tmp"
    for path in (live, dead):
        path.write_text("x")
    build = tmp_path / ".build.999999999.r.tmp"
    (build / "out").mkdir(parents=True)
    assert sorted(remove_stale_temps(tmp_path)) == sorted([dead, build])
    assert live.exists()


def test_every_file_a_run_writes_gets_the_mode_the_umask_says(text_corpus, make_config):
    """A run shared on a cluster's file system: weights and checkpoints get the mode open() would
    give them (0o666 less the umask), not mkstemp's or safetensors' private 0o600."""
    umask = os.umask(0o022)
    os.umask(umask)
    out = Path(train(make_config(text_corpus, train={"steps": 4, "checkpoint_every": 2})).run_dir)
    modes = {path.relative_to(out).as_posix(): path.stat().st_mode & 0o777 for path in out.rglob("*") if path.is_file()}
    assert "final.safetensors" in modes and any(name.startswith("checkpoints/step_") for name in modes)
    assert {name: oct(mode) for name, mode in modes.items() if mode != 0o666 & ~umask} == {}


def test_a_damaged_checkpoint_names_the_file_and_offers_the_intact_older_one(text_corpus, make_config, capsys):
    cfg = make_config(text_corpus, train={"steps": 20, "checkpoint_every": 5, "keep_checkpoints": 3})
    train(cfg, progress=False)
    run = RunDir.for_config(cfg)
    (run.checkpoints / "latest").write_text("step_000015")  # as if the run stopped after step 15
    run.summary.unlink()
    state = run.checkpoints / "step_000015.state.pt"
    data = bytearray(state.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit
    state.write_bytes(bytes(data))
    assert main(["train", "--resume", str(run.path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "step_000015.state.pt is damaged" in err and "--from-checkpoint step_000010" in err and "\n" not in err
    for wrong in ("latest", "../step_000010", "", "step_000012"):  # a ValueError traceback, or '' silently the latest
        assert main(["train", "--resume", str(run.path), "--from-checkpoint", wrong, "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        if not wrong:  # refused as an empty argument is, before the run is read
            assert "--from-checkpoint is empty: give a checkpoint, e.g. 200 or step_000200" in err, err
            continue
        assert f"no checkpoint {wrong!r} in" in err and "checkpoints there: step_000020, step_000015" in err, err
    assert main(["train", "--resume", str(run.path), "--from-checkpoint", "step_000010", "--no-progress"]) == 0
    assert RunDir(run.path).read_summary()["step"] == 20
    steps = [r["step"] for r in run.read_metrics()]
    assert steps == sorted(set(steps))


def test_zeroed_final_weights_are_detected_when_loaded(text_corpus, make_config):
    from slmlab.runs import load_run

    cfg = make_config(text_corpus, train={"steps": 5})
    train(cfg, progress=False)
    run = RunDir.for_config(cfg)
    run.final_weights.write_bytes(bytes(len(run.final_weights.read_bytes())))
    with pytest.raises(CheckpointError, match="final.safetensors is damaged"):
        load_run(run.path)


@pytest.mark.parametrize("text", ["garbage", "step_000999", "../../etc/passwd", "\xff\xfe"])
def test_a_damaged_latest_pointer_is_one_line_with_what_to_do(text_corpus, make_config, text, capsys):
    cfg = make_config(text_corpus, train={"steps": 10, "checkpoint_every": 5})
    train(cfg, progress=False)
    run = RunDir.for_config(cfg)
    (run.checkpoints / "latest").write_bytes(text.encode("latin-1"))
    run.summary.unlink()
    assert main(["train", "--resume", str(run.path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "latest" in err and "\n" not in err and "--from-checkpoint step_000010" in err


def test_resume_to_fewer_steps_than_trained_is_refused(text_corpus, make_config):
    cfg = make_config(text_corpus, train={"steps": 10, "checkpoint_every": 5})
    train(cfg, progress=False)
    cfg.train.steps = 4
    with pytest.raises(ConfigError, match="has trained 10 steps .* give --train.steps 10 or more"):
        train(cfg, resume=True, progress=False)


def test_resume_on_a_corpus_that_changed_since_is_refused(text_corpus, make_config):
    """An edited corpus file gave other token streams, and the resumed run trained the rest of
    its steps on them and scored its final numbers on another validation split, silently."""
    cfg = make_config(text_corpus, train={"steps": 10, "checkpoint_every": 5})
    train(cfg, progress=False)
    doc = text_corpus / "prose" / "doc00.txt"
    original = doc.read_text()
    doc.write_text(original + original[:80])  # an edit in characters the tokenizer knows
    cfg.train.steps = 15
    with pytest.raises(ConfigError, match="trained on other data than data.source .* restore the corpus"):
        train(cfg, resume=True, progress=False)
    doc.write_text(original)
    assert train(cfg, resume=True, progress=False).step == 15


def test_scoring_a_run_on_its_own_corpus_after_that_corpus_changed_is_refused(text_corpus, make_config, capsys):
    """eval, ablate and quantize tokenized the corpus as it is now (a file edited or added since,
    or a relative data.source naming another corpus from the working folder) and reported its
    validation loss as the run's, in silence."""
    cfg = make_config(text_corpus, train={"steps": 4, "checkpoint_every": 0})
    run = str(train(cfg, progress=False).run_dir)
    assert main(["eval", run]) == 0
    (text_corpus / "prose" / "added.txt").write_text("A new document, written after the run trained.\n")
    for verb in (["eval", run], ["eval", run, "--by-position"], ["ablate", run, "--layers"], ["quantize", run, "--int8"]):
        capsys.readouterr()
        assert main([*verb, "--batches" if verb[0] != "ablate" else "--n-batches", "1"]) == 2
        assert "trained on other text than data.source" in capsys.readouterr().err
    assert main(["eval", run, "--data.source", str(text_corpus)]) == 0  # scored as another corpus, when asked
    (text_corpus / "prose" / "added.txt").unlink()
    assert main(["eval", run]) == 0


def test_a_run_whose_corpus_moved_resumes_from_where_it_lies_now(text_corpus, make_config, tmp_path, capsys):
    """`--resume RUN --data.source NEW` was refused (only train.* could change), so a run whose
    corpus moved, or was named relative to another folder, could never be finished. Where the data
    lies may now change: the token streams are checked, the run ends on the weights of a run that
    never moved, and its config records the new place (only once the check has passed)."""
    from safetensors.torch import load_file

    from slmlab.training import Trainer
    from tests.conftest import kill_after_step

    straight = make_config(text_corpus, train={"steps": 10, "checkpoint_every": 5})
    straight.name = "straight"
    train(straight, progress=False)
    cfg = make_config(text_corpus, train={"steps": 10, "checkpoint_every": 5})
    kill_after_step(Trainer(cfg, progress=False), 5)
    run = RunDir.for_config(cfg)
    moved = text_corpus.rename(tmp_path / "moved")
    other = tmp_path / "other"
    (other / "prose").mkdir(parents=True)
    (other / "prose" / "a.txt").write_text((moved / "prose" / "doc00.txt").read_text() * 3)
    recorded = run.config.read_bytes()
    capsys.readouterr()
    assert main(["train", "--resume", str(run.path), "--data.source", str(other), "--no-progress"]) == 2
    assert "trained on other data than data.source" in capsys.readouterr().err and run.config.read_bytes() == recorded

    state_file, sums = run.checkpoints / "step_000005.state.pt", run.checkpoints / "step_000005.sha256.json"
    recorded_state, recorded_sums = state_file.read_bytes(), sums.read_bytes()
    state = torch.load(state_file, weights_only=True)
    torch.save({k: v for k, v in state.items() if k != "data_sha256"}, state_file)  # as an older slmlab wrote it
    sums.unlink()
    assert main(["train", "--resume", str(run.path), "--data.source", str(moved), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "did not record the token streams it trained on" in err and f"its own data.source '{text_corpus}'" in err
    state_file.write_bytes(recorded_state)
    sums.write_bytes(recorded_sums)

    assert main(["train", "--resume", str(run.path), "--data.source", str(moved), "--no-progress"]) == 0
    a, b = load_file(RunDir.for_config(straight).final_weights), load_file(run.final_weights)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads(run.config.read_text())["data"]["source"] == str(moved)
    assert main(["eval", str(run.path), "--batches", "1"]) == 0  # later commands find the corpus too


def test_a_run_resumes_on_another_machine_with_the_kernel_and_device_it_has(text_corpus, make_config, capsys):
    """A run trained on a GPU with model.local_kernel = 'flex' (or train.device = 'cuda') could not
    be finished on a CPU: training there said "use 'auto' or 'windows'", and --resume refused
    --model.local_kernel (and --train.device) as changes to the run. Where it runs may change;
    what it trains may not."""
    from slmlab.training import Trainer
    from tests.conftest import kill_after_step

    model = {"pos": "rope", "attention": "block_local", "local_block": 8}
    on_cpu = {"steps": 10, "checkpoint_every": 5, "device": "cpu"}  # the run it is compared with, bit for bit
    straight = make_config(text_corpus, model=model, train=on_cpu)
    straight.name = "straight"
    train(straight, progress=False)
    cfg = make_config(text_corpus, model=model, train=on_cpu)
    kill_after_step(Trainer(cfg, progress=False), 5)
    run = RunDir.for_config(cfg)
    recorded = json.loads(run.config.read_text())
    recorded["model"]["local_kernel"], recorded["train"]["device"] = "flex", "cuda:7"  # as a GPU machine wrote it
    run.config.write_text(json.dumps(recorded))
    capsys.readouterr()
    assert main(["train", "--resume", str(run.path), "--no-progress"]) == 2
    assert "device 'cuda:7' was asked for" in capsys.readouterr().err
    assert main(["train", "--resume", str(run.path), "--train.device", "cpu", "--no-progress"]) == 2
    assert "model.local_kernel = 'flex' cannot train here" in capsys.readouterr().err
    argv = ["train", "--resume", str(run.path), "--train.device", "cpu", "--model.local_kernel", "windows", "--no-progress"]
    assert main([*argv, "--model.local_block", "16"]) == 2
    assert "can change, not ['model.local_block']" in capsys.readouterr().err
    assert main(argv) == 0
    assert (
        json.loads(run.summary.read_text())["val_loss"] == json.loads(RunDir.for_config(straight).summary.read_text())["val_loss"]
    )


def test_resuming_a_finished_run_changes_nothing(text_corpus, make_config):
    cfg = make_config(text_corpus, train={"steps": 10, "checkpoint_every": 5})
    train(cfg, progress=False)
    run = RunDir.for_config(cfg)
    before = _snapshot(run.path)
    result = train(cfg, resume=True, progress=False)
    assert _snapshot(run.path) == before
    assert result.step == 10 and result.val_loss == json.loads(run.summary.read_text())["val_loss"]


def test_training_time_and_peak_memory_accumulate_across_resumed_sessions(text_corpus, make_config, monkeypatch):
    import slmlab.training.results as results_module
    import slmlab.training.resume as resume_module
    import slmlab.training.trainer as trainer_module

    cfg = make_config(text_corpus, train={"steps": 10, "checkpoint_every": 5})
    train(cfg, progress=False)
    run = RunDir.for_config(cfg)
    state_at_5 = torch.load(run.checkpoints / "step_000005.state.pt", weights_only=True)
    (run.checkpoints / "latest").write_text("step_000005")
    run.summary.unlink()
    for module in (results_module, resume_module):  # this session's peak is tiny
        monkeypatch.setattr(module, "peak_memory_bytes", lambda device: 1)
    monkeypatch.setattr(trainer_module.time, "perf_counter", _slow_clock())  # this session takes 1000 s a call
    train(cfg, resume=True, progress=False)
    second = run.read_summary()
    assert second["peak_memory_bytes"] == state_at_5["peak_memory_bytes"] > 1
    assert second["train_seconds"] > state_at_5["train_seconds"] + 1000  # the first session's time carried over
    assert state_at_5["train_seconds"] > 0


def _slow_clock():
    ticks = iter(range(0, 10**9, 1000))
    return lambda: float(next(ticks))


def test_a_run_rejected_during_set_up_leaves_no_directory_behind(micro_toml, tmp_path, capsys):
    argv = ["train", str(micro_toml), "--no-progress", "--name", "long"]
    assert main([*argv, "--data.seq_len", "100000", "--model.block_size", "100000"]) == 2
    assert "the training split has" in (err := capsys.readouterr().err) and "fewer than data.seq_len" in err
    assert not (tmp_path / "runs" / "long").exists()
    assert main(argv) == 0  # the corrected command needs no --overwrite
    short = tmp_path / "short.txt"  # training windows fit, the validation tail (10%: 31 tokens) holds none
    short.write_text("the quick brown fox jumps " * 12)
    assert main(["train", str(micro_toml), "--no-progress", "--name", "short", "--data.source", str(short)]) == 2
    assert "the validation split has" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "short").exists()


def test_a_second_sweep_of_the_same_name_is_refused_while_one_runs(micro_sweep, tmp_path, capsys, holder):
    process = holder(tmp_path / "runs" / "micro")
    assert main(["sweep", str(micro_sweep)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"the sweep {tmp_path / 'runs' / 'micro'} is in use by process {process.pid}" in err and "\n" not in err
    assert not (tmp_path / "runs" / "micro").exists()


def test_reading_an_unfinished_run_says_which_checkpoint_it_uses(text_corpus, make_config, caplog):
    from slmlab.runs.run_dir import load_run

    out = Path(train(make_config(text_corpus, train={"steps": 4, "checkpoint_every": 2})).run_dir)
    (out / "final.safetensors").unlink()
    (out / "summary.json").unlink()  # as if killed after its last checkpoint
    with caplog.at_level("INFO", logger="slmlab"):
        load_run(out)
    assert f"{out} has not finished training: using its latest checkpoint, step_000004" in caplog.text
