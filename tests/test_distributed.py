"""Data-parallel training on CPU with gloo and 2 processes (launched through `slmlab train --nproc`).

Proven: 2 processes with the global batch train exactly like 1 process (per-step loss, validation
loss, final weights), with gradient accumulation; FSDP2 agrees with DDP; a checkpoint written by 2
processes resumes in 1 and ends where the uninterrupted run ended; only rank 0 writes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

from slmlab.cli.train import without_option as _without_option
from slmlab.training.distributed import World

from .conftest import LINES

pytestmark = [
    pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="this PyTorch build has no gloo backend"),
    pytest.mark.distributed,
    pytest.mark.slow,
]

CONFIG = """
out_dir = "{root}/runs"
[model]
n_layer = 2
n_head = 2
d_model = 32
block_size = 64
[data]
source = "{root}/corpus"
tokenizer = "char"
seq_len = 32
cache_dir = "{root}/cache"
[train]
steps = 6
batch_size = 8
grad_accum = 2
lr = 3e-3
warmup_steps = 2
eval_every = 3
eval_batches = 2
log_every = 1
checkpoint_every = 3
sample_tokens = 8
device = "cpu"
threads = 1  # as torchrun gives each of its processes: one process's matmuls then sum in the same order under any load
"""


def slmlab_train(*args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "slmlab", "train", *args, "--no-progress"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def losses(run) -> tuple[list[float], list[float]]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records], [r["val_loss"] for r in records if "val_loss" in r]


def assert_same_weights(a, b, atol=1e-5):
    wa, wb = load_file(a), load_file(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], atol=atol, rtol=1e-4, msg=lambda details, name=name: f"{name}: {details}")


def tiny_setup(root: Path) -> Path:
    """root/corpus (8 small documents) and root/tiny.toml training on it (CONFIG) -> the config."""
    for i in range(8):
        folder = root / "corpus"
        folder.mkdir(exist_ok=True)
        (folder / f"doc{i}.txt").write_text("\n\n".join(LINES[(i + j) % 4] for j in range(40)))
    config = root / "tiny.toml"
    config.write_text(CONFIG.format(root=root))
    return config


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One config trained three ways: 1 process, 2 processes DDP, 2 processes FSDP2."""
    root = tmp_path_factory.mktemp("dist")
    config = tiny_setup(root)
    slmlab_train(str(config), "--name", "one")
    slmlab_train(str(config), "--name", "ddp", "--nproc", "2")
    slmlab_train(str(config), "--name", "fsdp", "--nproc", "2", "--train.parallel", "fsdp", "--viz-every", "3")
    return root / "runs"


def test_two_processes_with_the_global_batch_train_like_one_process(runs):
    one_train, one_val = losses(runs / "one")
    ddp_train, ddp_val = losses(runs / "ddp")
    assert len(ddp_train) == 6  # logged once per step, by rank 0 only
    assert ddp_train == pytest.approx(one_train, abs=1e-5)
    assert ddp_val == pytest.approx(one_val, abs=1e-5)
    assert_same_weights(runs / "one" / "final.safetensors", runs / "ddp" / "final.safetensors")
    summary = json.loads((runs / "ddp" / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["tokens"] == 6 * 8 * 32 * 2


def test_fsdp2_agrees_with_ddp(runs):
    assert losses(runs / "fsdp") == (
        pytest.approx(losses(runs / "ddp")[0], abs=1e-5),
        pytest.approx(losses(runs / "ddp")[1], abs=1e-5),
    )
    assert_same_weights(runs / "ddp" / "final.safetensors", runs / "fsdp" / "final.safetensors")


def test_fsdp2_draws_attention_frames_from_the_whole_model(runs):
    """Frames were skipped in silence when FSDP sharded the weights; the closing sample is read from
    the same whole copy."""
    assert sorted(p.name for p in (runs / "fsdp" / "viz" / "frames").glob("*.png")) == ["frame_000003.png", "frame_000006.png"]
    assert json.loads((runs / "fsdp" / "summary.json").read_text())["sample"]


@pytest.mark.parametrize("written_by", ["fsdp", "ddp"])
def test_a_two_process_checkpoint_resumes_in_one_process(runs, written_by):
    resumed = runs / f"{written_by}_resumed"
    shutil.copytree(runs / written_by, resumed)
    (resumed / "checkpoints" / "latest").write_text("step_000003")  # as if it stopped at step 3
    (resumed / "summary.json").unlink()
    (resumed / "final.safetensors").unlink()
    slmlab_train("--resume", str(resumed))
    assert losses(resumed)[0] == pytest.approx(losses(runs / written_by)[0], abs=1e-5)
    assert_same_weights(runs / written_by / "final.safetensors", resumed / "final.safetensors")


def test_a_ddp_checkpoint_resumes_sharded_under_fsdp2(runs):
    """How the processes share the model may change on resume, as the device may: --resume refused
    --train.parallel, so a run that outgrew replicated weights could not go on sharded."""
    resumed = runs / "ddp_as_fsdp"
    shutil.copytree(runs / "ddp", resumed)
    (resumed / "checkpoints" / "latest").write_text("step_000003")
    (resumed / "summary.json").unlink()
    (resumed / "final.safetensors").unlink()
    slmlab_train("--resume", str(resumed), "--nproc", "2", "--train.parallel", "fsdp")
    assert losses(resumed)[0] == pytest.approx(losses(runs / "ddp")[0], abs=1e-5)
    assert_same_weights(runs / "ddp" / "final.safetensors", resumed / "final.safetensors")
    assert json.loads((resumed / "config.json").read_text())["train"]["parallel"] == "fsdp"


def test_tape_under_fsdp2_trains_like_one_process(runs):
    """The other architecture through FSDP2: its shard units (prelude, coda, critics, moderator)."""
    config = runs.parent / "tiny.toml"
    tape = ["--model.arch", "tape", "--model.pos", "sinusoidal", "--model.tape.n_critics", "2",
            "--model.tape.coda_layers", "1", "--model.tape.critic_layers", "1", "--model.tape.rnn_dim", "8"]  # fmt: skip
    slmlab_train(str(config), "--name", "tape_one", *tape)
    slmlab_train(str(config), "--name", "tape_fsdp", "--nproc", "2", "--train.parallel", "fsdp", *tape)
    one, fsdp = losses(runs / "tape_one"), losses(runs / "tape_fsdp")
    assert fsdp[0] == pytest.approx(one[0], abs=1e-4) and fsdp[1] == pytest.approx(one[1], abs=1e-4)
    assert_same_weights(runs / "tape_one" / "final.safetensors", runs / "tape_fsdp" / "final.safetensors", atol=1e-4)


def test_smat_under_fsdp2_trains_like_one_process(runs):
    """SMAT's similarity weight was a 0-dim parameter, which fully_shard refuses: the built-in
    variant could not train under FSDP2 at all."""
    config = runs.parent / "tiny.toml"
    smat = ["--model.smat.use_S", "true", "--model.smat.use_G", "true"]
    slmlab_train(str(config), "--name", "smat_one", *smat)
    slmlab_train(str(config), "--name", "smat_fsdp", "--nproc", "2", "--train.parallel", "fsdp", *smat)
    one, fsdp = losses(runs / "smat_one"), losses(runs / "smat_fsdp")
    assert fsdp[0] == pytest.approx(one[0], abs=1e-5) and fsdp[1] == pytest.approx(one[1], abs=1e-5)
    assert_same_weights(runs / "smat_one" / "final.safetensors", runs / "smat_fsdp" / "final.safetensors")


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_muon_under_two_processes_trains_like_one_process(runs, parallel):
    """Muon + AdamW stepped as one: DDP replicates it; under FSDP2 Newton-Schulz runs on the
    sharded matrices (DTensor) and must still orthogonalise the whole matrix, SMAT's one-row gate
    w_g (1, 32) too (sharded on its rows, rank 1 held none of it and Muon's update failed)."""
    config = runs.parent / "tiny.toml"
    modern = ["--train.optimizer", "muon", "--model.mlp", "swiglu", "--model.bias", "false", "--model.norm", "rmsnorm"]
    modern += ["--model.smat.use_G", "true"]
    if not (runs / "muon_one").is_dir():
        slmlab_train(str(config), "--name", "muon_one", *modern)
    slmlab_train(str(config), "--name", f"muon_{parallel}", "--nproc", "2", "--train.parallel", parallel, *modern)
    one, two = losses(runs / "muon_one"), losses(runs / f"muon_{parallel}")
    assert two[0] == pytest.approx(one[0], abs=1e-4) and two[1] == pytest.approx(one[1], abs=1e-3)
    assert_same_weights(runs / "muon_one" / "final.safetensors", runs / f"muon_{parallel}" / "final.safetensors", atol=1e-3)


EXPERTS = """
import torch
from torch import nn
from slmlab.registry import MLPS


class Experts(nn.Module):
    \"\"\"Top-1 of 128 small experts, each its own module: a step leaves most of them unused.
    ST-MoE's router z-loss, 0.001 s mean_t logsumexp(router logits_t)^2, is an auxiliary term (a
    mean over tokens, as the language-modelling loss is: 2 ranks' mean is one process's), with s a
    parameter only that term reaches.\"\"\"

    def __init__(self, cfg):
        super().__init__()
        self.router = nn.Linear(cfg.d_model, 128, bias=False)
        self.experts = nn.ModuleList(nn.Linear(cfg.d_model, cfg.d_model) for _ in range(128))
        self.scale = nn.Parameter(torch.ones(1))
        self.balance = None

    def auxiliary_loss(self):
        return self.balance

    def forward(self, x):
        flat = x.reshape(-1, x.shape[-1])
        logits = self.router(flat)
        gate, chosen = logits.softmax(-1).max(-1)
        self.balance = 0.001 * self.scale[0] * logits.logsumexp(-1).pow(2).mean()
        out = torch.zeros_like(flat)
        for e in chosen.unique().tolist():
            rows = (chosen == e).nonzero()[:, 0]
            out = out.index_add(0, rows, self.experts[e](flat[rows]) * gate[rows, None])
        return out.reshape(x.shape)


MLPS.register("experts_test", Experts)
"""


def test_a_model_whose_steps_leave_parameters_unused_trains_under_ddp_like_one_process(runs):
    """DDP waited for the gradients of parameters a step did not use (an MoE's unchosen experts)
    and failed at the next step with a traceback; and its search for them, from the outputs of
    the forward, missed what only an auxiliary term reaches. (FSDP2 cannot
    train such a model: its ranks reduce-scatter different sets of gradients; docs/scaling-out.md.)"""
    parallel = "ddp"
    root = runs.parent
    (root / "experts.py").write_text(EXPERTS)
    config = root / "experts.toml"
    config.write_text(
        'plugins = ["experts.py"]\n' + (root / "tiny.toml").read_text().replace("[model]\n", '[model]\nmlp = "experts_test"\n')
    )
    if not (runs / "experts_one").is_dir():
        slmlab_train(str(config), "--name", "experts_one")
    slmlab_train(str(config), "--name", f"experts_{parallel}", "--nproc", "2", "--train.parallel", parallel)
    one, two = losses(runs / "experts_one"), losses(runs / f"experts_{parallel}")
    aux = [[json.loads(line)["aux_loss"] for line in (runs / name / "metrics.jsonl").read_text().splitlines()]
           for name in ("experts_one", f"experts_{parallel}")]  # fmt: skip
    assert aux[1] == pytest.approx(aux[0], abs=1e-6) and all(a > 0 for a in aux[0])
    assert two[0] == pytest.approx(one[0], abs=1e-5) and two[1] == pytest.approx(one[1], abs=1e-5)
    assert_same_weights(runs / "experts_one" / "final.safetensors", runs / f"experts_{parallel}" / "final.safetensors")


PROBE = """
import os
import torch
from torch import nn
from slmlab.registry import MLPS


class Probe(nn.Module):
    \"\"\"The MLP slot as a gain, writing one draw of torch's generator per training forward (what
    dropout draws its masks from) to a file of this rank's.\"\"\"

    def __init__(self, cfg):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(1))

    def forward(self, x):
        if self.training:
            with open(os.path.join(os.environ["PROBE_DIR"], f"rank{os.environ.get('RANK', '0')}.txt"), "a") as f:
                f.write(f"{torch.rand(()).item()}\\n")
        return x * self.gain


MLPS.register("probe_test", Probe)
"""


def test_each_rank_draws_its_own_dropout_masks_and_a_rerun_draws_them_again(runs, tmp_path, monkeypatch):
    """Every rank was seeded alike, so rank 1 drew rank 0's dropout masks for its own rows: the
    global batch had half as many masks as rows. Each step is now seeded from (seed, step, rank)."""
    root = runs.parent
    (root / "probe.py").write_text(PROBE)
    config = root / "probe.toml"
    config.write_text(
        'plugins = ["probe.py"]\n' + (root / "tiny.toml").read_text().replace("[model]\n", '[model]\nmlp = "probe_test"\n')
    )
    draws = {}
    for name in ("probe_a", "probe_b"):
        monkeypatch.setenv("PROBE_DIR", str(tmp_path / name))
        (tmp_path / name).mkdir()
        slmlab_train(str(config), "--name", name, "--nproc", "2")
        draws[name] = [(tmp_path / name / f"rank{r}.txt").read_text().split() for r in (0, 1)]
    rank0, rank1 = draws["probe_a"]
    assert len(rank0) == len(rank1) == 6 * 2 * 2  # steps x micro-batches x layers
    assert not set(rank0) & set(rank1)  # no draw of one rank is the other's
    assert draws["probe_b"] == draws["probe_a"]  # a function of the seed, the step and the rank


def test_an_error_in_every_process_is_one_line(runs, tmp_path):
    """A corpus too small to train on, found by each process: the processes wrote the same line at
    once (interleaved), then torchrun its agent's log line and a 40-line traceback."""
    (tmp_path / "small").mkdir()
    (tmp_path / "small" / "a.txt").write_text("a few words only")
    done = subprocess.run(
        [sys.executable, "-m", "slmlab", "train", str(runs.parent / "tiny.toml"), "--nproc", "2", "--no-progress",
         "--name", "small", "--data.source", str(tmp_path / "small")],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    errors = [line for line in done.stderr.splitlines() if line.startswith("slmlab: error")]  # after rank 0's log lines
    assert done.returncode == 2 and len(errors) == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert errors[0].startswith("slmlab: error: the training split has") and errors[0].endswith("use more text")
    assert done.stderr.endswith(errors[0] + "\n")
    assert not (runs / "small").exists()


def test_muon_refuses_a_matrix_fsdp2_leaves_some_ranks_no_rows_of(runs, tmp_path):
    """SMAT's gate w_g (1, 33) on 2 processes: one row, and 33 columns that do not split in two."""
    narrow = ["--train.optimizer", "muon", "--model.smat.use_G", "true", "--model.d_model", "33", "--model.n_head", "1"]
    done = subprocess.run(
        [sys.executable, "-m", "slmlab", "train", str(runs.parent / "tiny.toml"), "--nproc", "2", "--no-progress",
         "--name", "narrow", "--train.parallel", "fsdp", *narrow],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    errors = [line for line in done.stderr.splitlines() if line.startswith("slmlab: error")]
    assert done.returncode == 2 and len(errors) == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "cannot update blocks.0.attn.extensions.0.w_g.weight (1, 33) under train.parallel = 'fsdp' on 2" in errors[0]


def test_fsdp2_shards_a_matrix_with_fewer_rows_than_processes_on_its_columns():
    from torch.distributed.tensor import Shard

    from slmlab.training.distributed import shard_placement

    def placed(*shape, processes=4):
        return shard_placement(torch.nn.Parameter(torch.zeros(shape)), processes)

    assert placed(1, 32) == Shard(1) and placed(3, 8) == Shard(1)
    assert placed(4, 32) is None and placed(5, 7) is None and placed(32) is None  # rows, the default
    assert placed(1, 33) is None and placed(2, 2, 4) is None  # columns that do not split evenly; not a matrix


def test_ddp_looks_for_unused_parameters_only_in_a_model_with_a_plugin_module():
    """DDP walked the autograd graph after every backward looking for parameters without a
    gradient, and every process warned that it found none, for models whose every parameter takes
    part in every step; a plugin's may not (the MoE test above trains one)."""
    from slmlab.config import ModelConfig
    from slmlab.model import build_model
    from slmlab.training.distributed import may_leave_parameters_unused

    shape = {"n_layer": 2, "n_head": 2, "d_model": 16, "vocab_size": 20, "block_size": 16}
    for extra in ({}, {"smat": {"use_S": True, "use_G": True}, "self_area": {"enabled": True}}, {"arch": "tape"}):
        assert not may_leave_parameters_unused(build_model(ModelConfig(**shape, **extra)))

    class Routed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.experts = torch.nn.ModuleList(torch.nn.Linear(4, 4) for _ in range(2))

    model = build_model(ModelConfig(**shape))
    model.blocks[0].mlp = Routed()
    assert may_leave_parameters_unused(model)


def test_fsdp2_refuses_a_0_dim_parameter_in_one_line():
    """fully_shard raised a ValueError traceback in every rank for a plugin's scalar parameter."""
    from slmlab.config import ConfigError
    from slmlab.training.distributed import parallelize

    model = torch.nn.Linear(2, 2)
    model.temperature = torch.nn.Parameter(torch.ones(()))
    with pytest.raises(ConfigError, match=r"cannot shard 0-dim parameters \(temperature\).*shape \(1,\)"):
        parallelize(model, World(rank=0, size=2), "fsdp", torch.device("cpu"))


def test_rank_rows_are_disjoint_and_cover_the_batch():
    for size in (1, 2, 3, 4):
        for batch in (1, 5, 8):
            rows = [World(rank, size).rows(batch) for rank in range(size)]
            covered = [i for part in rows for i in range(batch)[part]]
            assert covered == list(range(batch))


def test_the_launcher_drops_only_its_own_option():
    argv = ["c.toml", "--nproc", "2", "--train.steps", "5", "--nproc=3"]
    assert _without_option(argv, "--nproc") == ["c.toml", "--train.steps", "5"]
