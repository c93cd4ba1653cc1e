"""Shared fixtures: tiny configs and small corpora written to a temp directory."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time

import pytest
import torch

from slmlab.config import RunConfig, config_from_dict

# Two CPU threads per test process, shared out between pytest-xdist's workers (`pytest -n 2`: one each)
torch.set_num_threads(max(1, 2 // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    """Every device this machine has: the CPU, and CUDA where present. A test that takes it runs
    once per device (ids `cpu`, `cuda`: `pytest -k cuda` runs the CUDA half on a GPU machine)."""
    return torch.device(request.param)


LINES = [
    "ROMEO:\nBut soft, what light through yonder window breaks?",
    "JULIET:\nO Romeo, Romeo, wherefore art thou Romeo?",
    "HAMLET:\nTo be, or not to be, that is the question.",
    "MACBETH:\nTomorrow, and tomorrow, and tomorrow, creeps in this petty pace.",
]


@pytest.fixture
def text_corpus(tmp_path):
    """A directory of 12 small text documents in two genre folders."""
    root = tmp_path / "corpus"
    for i in range(12):
        folder = root / ("verse" if i % 2 else "prose")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"doc{i:02d}.txt").write_text("\n\n".join(LINES[(i + j) % 4] for j in range(40)) + f"\nEnd {i}.\n")
    return root


@pytest.fixture
def jsonl_corpus(tmp_path):
    path = tmp_path / "docs.jsonl"
    records = [{"id": f"d{i}", "text": f"Document {i}. " + LINES[i % 4] * 20, "year": 1900 + 10 * i} for i in range(10)]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return path


def tiny_config(source, tmp_path, **sections) -> RunConfig:
    """A 2-layer, 32-wide model on `source`, training a few steps; sections override fields."""
    values = {
        "name": "tiny",
        "out_dir": str(tmp_path / "runs"),
        "model": {"n_layer": 2, "n_head": 2, "d_model": 32, "block_size": 64},
        "data": {"source": str(source), "tokenizer": "char", "seq_len": 32, "cache_dir": str(tmp_path / "cache")},
        "train": {
            "steps": 20,
            "batch_size": 8,
            "lr": 3e-3,
            "warmup_steps": 2,
            "eval_every": 10,
            "eval_batches": 2,
            "log_every": 5,
            "checkpoint_every": 10,
            "sample_tokens": 0,
        },
    }
    for section, fields in sections.items():
        values[section].update(fields)
    return config_from_dict(values)


@pytest.fixture
def make_config(tmp_path):
    return lambda source, **sections: tiny_config(source, tmp_path, **sections)


def write_micro_toml(path, corpus, root, steps: int = 12, every: int = 6):
    """A run config file for a 1-layer, 16-wide char model (runs under root/runs, cache root/cache)."""
    path.write_text(f"""
out_dir = "{root / "runs"}"
[model]
n_layer = 1
n_head = 2
d_model = 16
block_size = 32
[data]
source = "{corpus}"
tokenizer = "char"
seq_len = 32
cache_dir = "{root / "cache"}"
[train]
steps = {steps}
batch_size = 4
warmup_steps = 2
eval_every = {every}
eval_batches = 2
log_every = 3
checkpoint_every = {every}
sample_tokens = 0
""")
    return path


@pytest.fixture
def micro_toml(tmp_path, text_corpus):
    """A run config file for a 1-layer, 16-wide char model training 12 steps (runs go to tmp/runs)."""
    return write_micro_toml(tmp_path / "base.toml", text_corpus, tmp_path)


@pytest.fixture
def micro_sweep(tmp_path, micro_toml):
    sweep = tmp_path / "micro.toml"
    sweep.write_text(f"""
name = "micro"
base = "base.toml"
out_dir = "{tmp_path / "runs"}"
seeds = [1, 2]
[variants.baseline]
[variants.full]
"model.smat.use_S" = true
"model.smat.use_G" = true
""")
    return sweep


def one_line_error(capsys, *names: str) -> str:
    """The captured stderr, asserted to be one `slmlab: error:` line with no traceback that names one of names."""
    err = capsys.readouterr().err.strip()
    assert err.startswith("slmlab: error:") and "\n" not in err and "Traceback" not in err, err
    assert any(name in err for name in names), err
    return err


def kill_after_step(trainer, step: int) -> None:
    """Run `trainer.fit()` and die (KeyboardInterrupt, as a kill would) once it has finished
    `step`, i.e. right after that step's checkpoint: what a resume test then recovers from."""
    real_next_batch = trainer.sampler.next_batch

    def next_batch():
        if trainer.step == step:
            raise KeyboardInterrupt
        return real_next_batch()

    trainer.sampler.next_batch = next_batch
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()


def _sigint_by_default() -> None:
    """In a child process before it starts: SIGINT at its default, so a Python child installs its
    KeyboardInterrupt handler whatever this process inherited (`make test &` starts with it ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def stop_once_training(command: list[str], metrics, how: str, records: int = 1) -> subprocess.Popen:
    """Start `command` in a session of its own, wait until its `metrics` (a metrics.jsonl) holds
    `records` records, then stop it as a user would: "ctrl-c" (SIGINT to its whole process group,
    as a terminal sends it) or "kill" (SIGTERM to the process alone). -> the finished process, its
    stderr read into `.stderr_text`; anything of it still running afterwards is killed."""
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, start_new_session=True, preexec_fn=_sigint_by_default)
    try:
        deadline = time.time() + 120
        while not (metrics.exists() and metrics.read_text().count("\n") >= records):
            assert time.time() < deadline and process.poll() is None, "it did not start training"
            time.sleep(0.2)
        if how == "ctrl-c":
            os.killpg(process.pid, signal.SIGINT)
        else:
            process.send_signal(signal.SIGTERM)
        _, process.stderr_text = process.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    return process
