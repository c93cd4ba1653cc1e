"""The training loop: exact resume, crash-safe checkpoints, metrics, schedule (non-finite steps:
test_non_finite_steps.py; what it shows while running: test_training_progress.py)."""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from slmlab.config import ConfigError, TrainConfig
from slmlab.runs import checkpoints as checkpoint_module
from slmlab.runs.run_dir import RunDir, load_run
from slmlab.training import CheckpointError, Trainer, train
from slmlab.training.optim import lr_at, param_groups
from tests.conftest import kill_after_step


def test_resume_is_bit_exact(text_corpus, make_config, device):
    """Bit-exact on the CPU; on CUDA, where kernels may reduce in another order from one call to
    the next, equal to float32 rounding (dropout's masks included: the CUDA generator is resumed)."""
    settings = {"steps": 20, "checkpoint_every": 10, "device": device.type}
    straight = make_config(text_corpus, model={"dropout": 0.1}, train=settings)
    straight.name = "straight"
    train(straight, progress=False)

    halves = make_config(text_corpus, model={"dropout": 0.1}, train=settings)
    halves.name = "halves"
    kill_after_step(Trainer(halves, progress=False), 10)  # the process dies after the step-10 checkpoint
    assert not RunDir.for_config(halves).final_weights.exists()
    train(halves, resume=True, progress=False)

    a = load_file(RunDir.for_config(straight).final_weights)
    b = load_file(RunDir.for_config(halves).final_weights)
    steps = [r["step"] for r in RunDir.for_config(halves).read_metrics()]
    assert steps == sorted(set(steps)) and steps[-1] == 20  # no duplicated records after resume
    losses_a = [r["loss"] for r in RunDir.for_config(straight).read_metrics()]
    losses_b = [r["loss"] for r in RunDir.for_config(halves).read_metrics()]
    assert a.keys() == b.keys()
    if device.type == "cpu":
        assert all(torch.equal(a[k], b[k]) for k in a) and losses_a == losses_b
    else:
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=lambda m, k=k: f"{k}: {m}")
        torch.testing.assert_close(losses_a, losses_b, rtol=1e-4, atol=1e-5)


def test_a_run_killed_while_writing_its_first_checkpoint_says_so(text_corpus, make_config):
    """Killed after the weights of its first checkpoint were in place but before its training
    state and the `latest` pointer: nothing to resume from, and the error said the run "stopped
    before its first one" beside a step_000005.safetensors the user can see."""
    cfg = make_config(text_corpus, train={"steps": 10, "checkpoint_every": 5})
    kill_after_step(Trainer(cfg, progress=False), 5)
    checkpoints = RunDir.for_config(cfg).checkpoints
    for path in checkpoints.iterdir():
        if path.name != "step_000005.safetensors":
            path.unlink()
    with pytest.raises(CheckpointError, match=r"stopped while writing its first, step_000005, which is incomplete\); train it"):
        train(cfg, resume=True, progress=False)
    shutil.rmtree(checkpoints)
    with pytest.raises(CheckpointError, match=r"no checkpoint to resume from \(it stopped before its first one\)"):
        train(cfg, resume=True, progress=False)


def test_a_resume_leaves_nothing_of_the_end_it_moves_away_from(text_corpus, make_config):
    """Extending a finished run and dying on the way left its old final.safetensors and
    summary.json, so `eval` scored the old end as if the run had finished; branching from an
    older checkpoint to an earlier end left the later checkpoints of the end it left, which
    `--checkpoint` then loaded as this run's."""
    cfg = make_config(text_corpus, train={"steps": 8, "checkpoint_every": 2, "keep_checkpoints": 4})
    train(cfg, progress=False)
    run = RunDir.for_config(cfg)
    longer = replace(cfg, train=replace(cfg.train, steps=16))
    kill_after_step(Trainer(longer, resume=True, progress=False), 12)
    assert not run.final_weights.exists() and not run.summary.exists()
    _, model, _ = load_run(run.path)  # the latest checkpoint, step 12: not the old end's weights
    step_12 = load_file(run.checkpoints / "step_000012.safetensors")
    assert all(torch.equal(value, step_12[name]) for name, value in model.state_dict().items() if name in step_12)

    train(cfg, resume=True, from_checkpoint="step_000006", progress=False)  # back to an end at step 8
    assert checkpoint_module.checkpoint_names(run.checkpoints) == ["step_000008", "step_000006"]
    assert [r["step"] for r in run.read_metrics()][-1] == 8 and run.read_summary()["step"] == 8
    with pytest.raises(CheckpointError, match="no checkpoint 'step_000012'"):
        load_run(run.path, checkpoint="step_000012")


def test_run_directory_layout_and_metrics(text_corpus, make_config):
    cfg = make_config(text_corpus)
    result = train(cfg, progress=False)
    run = RunDir.for_config(cfg)
    for path in (run.config, run.metrics, run.tokenizer, run.final_weights, run.summary):
        assert path.is_file(), path
    assert json.loads(run.config.read_text())["model"]["vocab_size"] == cfg.model.vocab_size > 0
    records = run.read_metrics()
    assert [r["step"] for r in records] == [5, 10, 15, 20]
    for key in ("step", "tokens", "loss", "lr", "grad_norm", "dt_ms", "tokens_per_s", "nan_skips"):
        assert all(key in r for r in records), key
    evaluated = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in evaluated] == [10, 20]
    assert all(r["val_ppl"] == pytest.approx(math.exp(r["val_loss"])) for r in evaluated)
    assert records[-1]["tokens"] == 20 * 8 * 32
    assert result.val_loss == pytest.approx(evaluated[-1]["val_loss"])
    summary = json.loads(run.summary.read_text())
    assert summary["params"] > 0 and summary["peak_memory_bytes"] > 0
    _, model, tokenizer = load_run(run.path)
    assert model.cfg.vocab_size == tokenizer.vocab_size


def test_a_context_shorter_than_the_sample_prompt_still_finishes_with_a_sample(text_corpus, make_config):
    """The end-of-run sample continued the validation text's first 8 tokens: with model.block_size
    below 8 the finished run failed there, after training, and wrote no summary."""
    cfg = make_config(text_corpus, model={"block_size": 4}, data={"seq_len": 4}, train={"steps": 4, "sample_tokens": 6})
    result = train(cfg, progress=False)
    summary = RunDir.for_config(cfg).read_summary()
    assert summary["step"] == 4 and len(summary["sample"]) > 0 and result.sample == summary["sample"]


def test_train_threads_apply_to_the_run_only(text_corpus, make_config):
    """train.threads sets torch's thread count for the run; the process gets its own back after it,
    also when the set-up fails."""
    from slmlab.config import ConfigError

    before = torch.get_num_threads()
    threads = 1 if before != 1 else 2
    train(make_config(text_corpus, train={"steps": 2, "eval_every": 2, "threads": threads}), progress=False)
    assert torch.get_num_threads() == before
    with pytest.raises(ConfigError):
        train(make_config(text_corpus, train={"steps": 2, "eval_every": 2, "threads": threads}), progress=False)
    assert torch.get_num_threads() == before


def test_more_threads_than_cores_are_warned_of(text_corpus, make_config, monkeypatch, caplog):
    """100 threads on this machine's 2 cores trained ~10x slower, in silence."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    before = torch.get_num_threads()
    with caplog.at_level("WARNING", logger="slmlab"):
        train(replace(make_config(text_corpus, train={"steps": 2, "eval_every": 2, "threads": 2}), name="two"), progress=False)
        assert "CPU core" not in caplog.text
        train(replace(make_config(text_corpus, train={"steps": 2, "eval_every": 2, "threads": 3}), name="three"), progress=False)
    assert "train.threads = 3 is more than the 2 CPU cores this process may use" in caplog.text
    assert torch.get_num_threads() == before


def test_settings_a_choice_does_not_read_are_warned_of(text_corpus, make_config, caplog):
    """A decoder config trained as the TapeTransformer keeps its n_layer (the Tape's depth is
    model.tape's), and a config's weight_decay under the wolf optimizer (it reads only lr): each
    run trains, and says which setting changed nothing."""
    tape = {"arch": "tape", "pos": "sinusoidal", "tape": {"n_critics": 1, "coda_layers": 1, "critic_layers": 1}}
    runs = {
        "tape": make_config(text_corpus, model=tape, train={"steps": 2, "eval_every": 2}),
        "wolf": make_config(text_corpus, train={"steps": 2, "eval_every": 2, "optimizer": "wolf", "weight_decay": 0.0}),
    }
    with caplog.at_level("WARNING", logger="slmlab"):
        for name, cfg in runs.items():
            assert train(replace(cfg, name=name), progress=False).step == 2
    assert 'model.n_layer = 2 is not read with model.arch = "tape" (its depth is model.tape\'s coda_layers' in caplog.text
    assert 'train.weight_decay = 0.0 is not read with train.optimizer = "wolf"' in caplog.text
    with caplog.at_level("WARNING", logger="slmlab"):
        caplog.clear()
        train(replace(make_config(text_corpus, train={"steps": 2, "eval_every": 2}), name="decoder"), progress=False)
    assert "is not read with" not in caplog.text


@pytest.mark.parametrize("bf16_matmul", [True, False])
def test_bf16_on_a_cpu_without_bf16_products_is_warned_of(text_corpus, make_config, monkeypatch, caplog, bf16_matmul):
    """On an AVX2 CPU the quickstart trained 17x slower in bf16 than in fp32, in silence."""
    from slmlab.training import runtime

    monkeypatch.setattr(runtime, "_cpu_has_bf16_matmul", lambda: bf16_matmul)
    with caplog.at_level("WARNING", logger="slmlab"):
        train(make_config(text_corpus, train={"steps": 2, "eval_every": 2, "dtype": "bf16"}), progress=False)
    warned = "train.dtype = 'bf16' on a CPU without bf16 matrix instructions (AVX512-BF16 or AMX)" in caplog.text
    assert warned is not bf16_matmul


def test_an_existing_run_is_never_overwritten_silently(text_corpus, make_config):
    from slmlab.config import ConfigError

    cfg = make_config(text_corpus, train={"steps": 5, "eval_every": 5})
    train(cfg, progress=False)
    with pytest.raises(ConfigError, match="already holds a run; resume it with slmlab train --resume"):
        train(cfg, progress=False)
    train(cfg, overwrite=True, progress=False)


def test_a_crash_while_writing_a_checkpoint_keeps_the_previous_one(text_corpus, make_config, monkeypatch):
    cfg = make_config(text_corpus, train={"steps": 20, "checkpoint_every": 10})
    trainer = Trainer(cfg, progress=False)
    real_save = checkpoint_module.save_file
    calls = {"n": 0}

    def crash_on_second(weights, path, metadata=None):
        calls["n"] += 1
        if calls["n"] == 2:
            with open(path, "wb") as handle:
                handle.write(b"half a file")
            raise OSError("disk full (simulated)")
        return real_save(weights, path, metadata=metadata)

    monkeypatch.setattr(checkpoint_module, "save_file", crash_on_second)
    with pytest.raises(CheckpointError, match=r"checkpoint step_000020 could not be written .*\(disk full \(simulated\)\)"):
        trainer.fit()
    run = RunDir.for_config(cfg)
    assert checkpoint_module.latest_checkpoint(run.checkpoints) == "step_000010"
    assert not list(run.checkpoints.glob("step_000020*")) and not list(run.checkpoints.glob(".*"))
    monkeypatch.setattr(checkpoint_module, "save_file", real_save)
    resumed = Trainer(cfg, resume=True, progress=False)
    assert resumed.step == 10
    assert resumed.fit().step == 20


def test_corrupt_or_mismatched_checkpoints_are_clear_errors(text_corpus, make_config, tmp_path):
    cfg = make_config(text_corpus, train={"steps": 10})
    train(cfg, progress=False)
    run = RunDir.for_config(cfg)
    weights = run.checkpoints / "step_000010.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="step_000010.safetensors is damaged .*no intact older checkpoint"):
        Trainer(cfg, resume=True, progress=False)
    (run.checkpoints / "step_000010.sha256.json").unlink()  # unverified: safetensors itself refuses it
    with pytest.raises(CheckpointError, match="is corrupt or not a safetensors file"):
        Trainer(cfg, resume=True, progress=False)
    (run.checkpoints / "step_000010.state.pt").write_bytes(b"garbage")
    bigger = make_config(text_corpus, model={"d_model": 64})
    from slmlab.model import build_model
    from slmlab.runs.checkpoints import load_weights

    bigger.model.vocab_size = cfg.model.vocab_size or 40
    with pytest.raises(CheckpointError, match="does not fit this model"):
        load_weights(build_model(bigger.model), run.final_weights)
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        checkpoint_module.load_checkpoint(tmp_path, build_model(bigger.model))


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    cfg = TrainConfig(steps=100, warmup_steps=10, lr=1.0, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(10, cfg) == pytest.approx(1.0) and lr_at(55, cfg) == pytest.approx(0.55)
    assert lr_at(100, cfg) == pytest.approx(0.1) and lr_at(500, cfg) == pytest.approx(0.1)
    values = [lr_at(s, cfg) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_a_warmup_that_leaves_no_schedule_is_warned_of(text_corpus, make_config, caplog):
    from slmlab.training.optim import schedule_warning

    assert schedule_warning(TrainConfig(steps=100, warmup_steps=10)) is None
    assert schedule_warning(TrainConfig(steps=100, warmup_steps=75, schedule="wsd", decay_fraction=0.2)) is None
    too_long = schedule_warning(TrainConfig(steps=20, warmup_steps=100, lr=1e-3))
    assert "peaks at 0.0002 instead of train.lr = 0.001" in too_long  # lr_at(19) = 1e-3 * 20 / 100
    just_as_long = schedule_warning(TrainConfig(steps=20, warmup_steps=20, lr=1e-3))  # it read "peaks at 0.001 instead of 0.001"
    assert "the learning rate reaches train.lr = 0.001 only at the last step and never decays" in just_as_long
    assert "no stable phase" in schedule_warning(TrainConfig(steps=100, warmup_steps=90, schedule="wsd", decay_fraction=0.2))
    with caplog.at_level("WARNING", logger="slmlab"):
        train(make_config(text_corpus, train={"steps": 4, "warmup_steps": 10}), progress=False)
    assert "train.warmup_steps = 10 is not below train.steps = 4" in caplog.text


def test_no_weight_decay_on_norms_biases_and_embeddings():
    from slmlab.config import ModelConfig
    from slmlab.model import build_model

    model = build_model(ModelConfig(vocab_size=50, n_layer=1, d_model=16, n_head=2, block_size=8))
    decay, no_decay = param_groups(model, 0.1)
    decayed = {id(p) for p in decay["params"]}
    names = {n for n, p in model.named_parameters() if id(p) in decayed}
    assert names == {
        "blocks.0.attn.qkv.weight",
        "blocks.0.attn.proj.weight",
        "blocks.0.mlp.fc.weight",
        "blocks.0.mlp.proj.weight",
    }
    assert no_decay["weight_decay"] == 0.0 and len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def _has_cpp_compiler() -> bool:
    return any(shutil.which(name) for name in (os.environ.get("CXX", ""), "g++", "clang++") if name)


@pytest.mark.skipif(not _has_cpp_compiler(), reason="torch.compile on CPU needs a C++ compiler")
@pytest.mark.slow
def test_compiled_training_gives_the_eager_losses_and_times_compilation_apart(text_corpus, make_config, caplog):
    train_cfg = {"steps": 3, "log_every": 1, "eval_every": 3, "checkpoint_every": 0}
    eager = train(replace(make_config(text_corpus, train=train_cfg), name="eager"), progress=False)
    with caplog.at_level("INFO", logger="slmlab"):
        compiled = train(replace(make_config(text_corpus, train={**train_cfg, "compile": True}), name="compiled"), progress=False)
    announced, timed = (caplog.text.index(line) for line in ("compiling the training step", "first step took"))
    assert announced < timed  # said before the silent seconds of compiling, and their length after
    losses = [[r["loss"] for r in RunDir(result.run_dir).read_metrics()] for result in (eager, compiled)]
    assert losses[1] == pytest.approx(losses[0], abs=2e-4)
    assert compiled.val_loss == pytest.approx(eager.val_loss, abs=2e-4)
    assert compiled.compile_seconds > 0 and eager.compile_seconds == 0
    assert RunDir(compiled.run_dir).read_summary()["compile_seconds"] == compiled.compile_seconds


@pytest.mark.parametrize(
    "section, key, value, message",
    [
        ("model", "n_head", 3, r"model.d_model = 32 is not divisible by model.n_head = 3"),
        ("train", "lr", -1.0, r"train.lr must be > 0, got -1.0"),
        ("train", "lr", "3e-4", r"train.lr: write 3e-4, not '3e-4' \(text, not a number\)"),
        ("train", "steps", 0, r"train.steps must be > 0, got 0"),
        ("data", "seq_len", 1000, r"data.seq_len = 1000 exceeds model.block_size = 64"),
    ],
)
def test_a_config_changed_in_code_is_held_to_the_rules_a_loaded_one_meets(text_corpus, make_config, section, key, value, message):
    """An API caller who sets a field after loading got a RuntimeError from a reshape, a ValueError
    from the optimizer, or a run of 0 steps; every entry point that trains now refuses it before
    writing anything."""
    from slmlab.evals.diagnose import diagnose
    from slmlab.training import train_curriculum

    cfg = make_config(text_corpus)
    setattr(getattr(cfg, section), key, value)
    for entry in (train, train_curriculum, diagnose):
        with pytest.raises(ConfigError, match=message):
            entry(cfg, progress=False)
    assert not Path(cfg.out_dir).exists()


def test_learned_positions_past_the_training_window_are_warned_of(text_corpus, make_config, caplog):
    """block_size 64 with seq_len 32: wpe[32:] never got a gradient, and generating past 32 tokens
    read random embeddings, in silence. A run that starts from trained weights is not warned."""
    from slmlab.model.positions import untrained_positions_warning

    cfg = make_config(text_corpus, model={"block_size": 64}, data={"seq_len": 32}, train={"steps": 2, "eval_every": 2})
    assert untrained_positions_warning(replace(cfg.model, pos="rope"), 32) is None
    assert untrained_positions_warning(cfg.model, 64) is None
    with caplog.at_level("WARNING", logger="slmlab"):
        result = train(cfg, progress=False)
    assert "model.block_size = 64 with learned positions, but data.seq_len = 32: positions 32-63 get no gradient" in caplog.text
    _, model, _ = load_run(result.run_dir)
    idx = torch.randint(0, model.cfg.vocab_size, (2, 32))
    model.train()
    model(idx, idx)[1].backward()
    grad = model.positions.wpe.weight.grad
    assert grad[32:].abs().sum() == 0 and grad[:32].abs().sum() > 0  # what the warning says
    caplog.clear()
    with caplog.at_level("WARNING", logger="slmlab"):
        train(replace(cfg, train=replace(cfg.train, steps=4)), progress=False, resume=True)  # trained on
    assert "learned positions" not in caplog.text


def test_a_sample_the_machine_cannot_hold_leaves_the_run_whole(text_corpus, make_config, monkeypatch, caplog):
    """The sample at the end of training ran out of memory after the final weights were written and
    before the summary: the run was left unfinished, and a resume sampled again. It ends with its
    summary and says why it has no sample; any other failure of the sample still stops it."""
    from slmlab.training import results

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 64000000000 bytes.")

    monkeypatch.setattr(results, "final_sample", out_of_memory)
    cfg = make_config(text_corpus, train={"steps": 4, "sample_tokens": 5})
    caplog.set_level("WARNING", logger="slmlab")
    train(cfg, progress=False)
    assert json.loads(RunDir.for_config(cfg).summary.read_text())["sample"] == ""
    assert "no sample at the end of training (out of memory (one allocation of 59.6 GiB)" in caplog.text
    monkeypatch.setattr(results, "final_sample", lambda *args, **kwargs: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        train(replace(cfg, name="other"), progress=False)
