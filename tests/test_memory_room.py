"""A training run the machine's memory cannot hold is refused with one line before anything is
written (Linux lends memory it does not have, and the out-of-memory killer ended such a run with no
message, after --overwrite had cleared the old one); a run that fits trains as before."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from slmlab.cli import main
from slmlab.config import ConfigError, RunConfig, config_from_dict
from slmlab.host_memory import host_memory_bytes
from slmlab.model import accounting, build_model
from slmlab.model.accounting import least_size, traced_activation_bytes
from slmlab.training import memory_room, train
from slmlab.training.memory_room import training_need
from slmlab.training.optim import build_optimizer, select_trainable

ARCHITECTURES = {
    "decoder": {},
    "smat": {"smat": {"use_S": True, "use_G": True}},
    "self_area": {"self_area": {"enabled": True}},
    "tape": {"arch": "tape", "tape": {"n_critics": 2, "coda_layers": 1, "critic_layers": 1, "rnn_dim": 16}},
}


def run_config(model: dict, train: dict | None = None, seq_len: int = 16) -> RunConfig:
    base = {"n_layer": 2, "n_head": 2, "d_model": 32, "block_size": 32, "vocab_size": 50}
    return config_from_dict(
        {"model": base | model, "data": {"seq_len": seq_len}, "train": {"batch_size": 3, "device": "cpu"} | (train or {})}
    )


@pytest.mark.parametrize("arch, trainable", [*((arch, "all") for arch in ARCHITECTURES), ("self_area", "self_area")])
def test_the_count_is_the_real_tensors_bytes(arch, trainable):
    """Weights and buffers, gradients after a backward, AdamW's state after a step: byte for
    byte those of the model the trainer builds (SMT's stage 2 training its Self Area only);
    activations as traced."""
    cfg = run_config(ARCHITECTURES[arch], {"trainable": trainable})
    need = training_need(cfg, rows=3)
    torch.manual_seed(0)
    model = build_model(cfg.model)
    select_trainable(model, trainable)
    optimizer = build_optimizer(model, cfg.train, torch.device("cpu"))
    x = torch.randint(0, 50, (3, 16))
    _, loss = model(x, x)
    loss.backward()
    optimizer.step()
    tensors = {id(t): t for t in (*model.parameters(), *model.buffers())}
    assert need["weights"] == sum(t.numel() * t.element_size() for t in tensors.values())
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert need["gradients"] == sum(g.numel() * g.element_size() for g in grads) > 0
    state = [v for s in optimizer.state.values() for k, v in s.items() if k != "step"]  # the moments
    assert need["optimizer"] == sum(v.numel() * v.element_size() for v in state)
    with torch.device("meta"):
        meta = build_model(cfg.model)
    select_trainable(meta, trainable)  # frozen weights keep no inputs for their gradients
    assert need["activations"] == traced_activation_bytes(meta, 3, 16) > 0
    assert need["need"] == need["weights"] + need["optimizer"] + max(need["gradients"], need["activations"])


def test_fsdp_shards_the_model_s_state_but_not_the_activations():
    cfg = run_config({})
    whole, sharded = training_need(cfg, rows=3), training_need(cfg, rows=3, shards=4)
    for key in ("weights", "optimizer", "gradients"):
        assert sharded[key] == whole[key] // 4
    assert sharded["activations"] == whole["activations"]


def test_activations_are_traced_only_where_they_might_not_fit():
    cfg = run_config({})
    assert training_need(cfg, rows=3, room=2**40)["activations"] is None  # 1 TiB: a tiny model fits whatever it keeps
    fits = training_need(cfg, rows=3)["need"]  # the least it holds fits; GENEROUS times its activations do not
    assert training_need(cfg, rows=3, room=fits)["activations"] > 0
    assert training_need(cfg, rows=3, room=2**10)["largest"] is None  # not even the least fits: not built


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_counting_draws_nothing_from_the_run_s_random_stream(arch):
    """Building on the meta device advanced torch's generator, so every checked run trained
    other weights than the same run unchecked (the quickstart's README figures among them)."""
    cfg = run_config(ARCHITECTURES[arch] | {"dropout": 0.1})
    torch.manual_seed(0)
    expected = torch.rand(4)
    torch.manual_seed(0)
    training_need(cfg, rows=3)  # activations traced too
    assert torch.equal(torch.rand(4), expected)


def test_this_machine_s_memory_is_read():
    if not sys.platform.startswith("linux"):
        pytest.skip("read on Linux only")
    assert host_memory_bytes() > 2**28  # more than 256 MiB


def test_memory_is_not_read_off_linux(monkeypatch):
    """The checks guard against Linux's out-of-memory killer; elsewhere they do not refuse."""
    from slmlab import host_memory

    monkeypatch.setattr(host_memory.sys, "platform", "darwin")
    assert host_memory_bytes() is None


def test_a_model_larger_than_any_machine_is_refused_before_anything_is_written(make_config, text_corpus, tmp_path):
    """A typo'd block_size with learned positions: a 3.2T-value position table, refused in one
    line that names it, with no run folder made."""
    if not sys.platform.startswith("linux"):
        pytest.skip("checked on Linux only, where the kernel kills rather than refuses")
    cfg = make_config(text_corpus, model={"block_size": 10**11, "pos": "learned"})
    with pytest.raises(ConfigError) as refused:
        train(cfg, progress=False)
    message = str(refused.value)
    assert "\n" not in message and "needs at least" in message and "positions.wpe.weight" in message
    assert not (tmp_path / "runs" / "tiny").exists()


def test_a_batch_larger_than_any_machine_is_counted_at_once_and_refused(make_config, text_corpus, tmp_path):
    """A typo'd batch of 2**40 rows: counting its activations on the meta device looped over the
    loss's chunks of logits, 2**35 of them, and the run hung instead of being refused. The meta
    device computes every row's logits at once (the same saved tensors and FLOPs)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("checked on Linux only, where the kernel kills rather than refuses")
    cfg = make_config(text_corpus, train={"batch_size": 2**40})
    with pytest.raises(ConfigError, match="needs at least .* PiB of memory .* activations .* PiB"):
        train(cfg, progress=False)
    assert not (tmp_path / "runs" / "tiny").exists()


def test_overwrite_keeps_the_old_run_when_the_new_one_cannot_fit(micro_toml, tmp_path, capsys, monkeypatch):
    """--overwrite used to clear the old run before the new model was built (and killed)."""
    assert main(["train", str(micro_toml), "--no-progress", "--name", "mine"]) == 0
    run = tmp_path / "runs" / "mine"
    before = {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    monkeypatch.setattr(memory_room, "host_memory_bytes", lambda: 2**10)  # a machine of 1 KiB
    assert main(["train", str(micro_toml), "--no-progress", "--name", "mine", "--overwrite"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "needs at least" in err and "this machine has 1.0 KiB" in err
    assert {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    assert main(["diagnose", str(micro_toml), "--steps", "1"]) == 2  # diagnose trains a model too
    assert "needs at least" in capsys.readouterr().err


def test_the_count_needs_no_compiler_import():
    """Random initial values are skipped on the meta device: meta's normal_ imported torch._dynamo
    (~2 s) at the start of every run."""
    script = (
        "import sys\n"
        "from slmlab.config import config_from_dict\n"
        "from slmlab.training.memory_room import training_need\n"
        "cfg = config_from_dict({'model': {'n_layer': 2, 'n_head': 2, 'd_model': 32, 'vocab_size': 50}})\n"
        "assert training_need(cfg, 2, room=2**40)['weights'] > 0\n"
        "assert 'torch._dynamo' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)


def test_a_sweep_runs_side_by_side_only_as_many_runs_as_the_memory_holds(micro_sweep, tmp_path, monkeypatch, caplog):
    """`--jobs 4` on a machine that holds three of the largest run: three workers (a worker the
    out-of-memory killer ends breaks the whole pool)."""
    small, large = run_config({}), run_config({"d_model": 64, "n_layer": 3})
    largest = training_need(large, 3)["need"]
    monkeypatch.setattr(memory_room, "host_memory_bytes", lambda: 3 * largest + 1)
    assert memory_room.runs_that_fit([small, large, small], 4) == (3, largest)
    assert memory_room.runs_that_fit([small, small], 2)[0] == 2
    monkeypatch.setattr(memory_room, "host_memory_bytes", lambda: 1)  # not even one: each run refuses itself
    assert memory_room.runs_that_fit([small], 2)[0] == 1
    caplog.set_level("INFO", logger="slmlab")
    assert main(["sweep", str(micro_sweep), "--jobs", "2"]) == 0  # the workers see the real memory
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("this machine's memory holds 1 of these runs at a time") for line in lines)
    assert any(line.endswith("1 parallel job, 2 threads each") for line in lines)


@pytest.mark.parametrize(
    "model",
    [
        {"n_layer": 10**9, "d_model": 16},  # narrow blocks: 10**9 of them passed the any-machine count
        {"arch": "tape", "tape": {"n_critics": 10**7}},
        {"arch": "tape", "tape": {"critic_layers": 10**7}},
        {"arch": "tape", "tape": {"rnn_layers": 10**9}},
    ],
    ids=["n_layer", "n_critics", "critic_layers", "rnn_layers"],
)
def test_a_mistyped_count_of_blocks_is_refused_before_one_is_built(model, monkeypatch):
    """model.n_layer = 10**9 built its blocks on the meta device one by one to count them (and
    asked each layer's attention pattern of a list of all n_layer): it ran for hours, holding
    ~50 KB per block, instead of being refused. The least it holds, one block times the blocks,
    is counted first."""
    if not sys.platform.startswith("linux"):
        pytest.skip("checked on Linux only, where the kernel kills rather than refuses")
    monkeypatch.setattr(memory_room, "meta_model", lambda cfg: pytest.fail("the model was built"))
    cfg = run_config(model)
    with pytest.raises(ConfigError, match=r"^training this model needs at least .* TiB of memory \(weights .*modules") as refused:
        memory_room.check_training_room(cfg, torch.device("cpu"), memory_room.World())
    assert "\n" not in str(refused.value)


MORE_MODELS = [
    {"mlp": "swiglu", "norm": "rmsnorm", "bias": False, "pos": "rope"},
    {"arch": "tape", "tape": {**ARCHITECTURES["tape"]["tape"], "moderator": "last"}},
]


@pytest.mark.parametrize("model", [*ARCHITECTURES.values(), *MORE_MODELS])
def test_the_least_size_is_at_most_what_the_model_holds(model):
    """least_size's parameters (its blocks, each without extensions) never exceed the model's:
    a bound that refuses only what cannot fit."""
    cfg = run_config(model)
    parameters, modules = least_size(cfg.model)
    assert 0 < parameters <= sum(p.numel() for p in build_model(cfg.model).parameters()) and modules == 0


def test_describing_a_model_of_a_billion_blocks_is_refused_before_building_it(micro_toml, monkeypatch, capsys):
    """`slmlab info` builds the model on the meta device to count it: 10**9 blocks of Python
    objects would fill any machine first."""
    monkeypatch.setattr(accounting, "host_memory_bytes", lambda: 2**35)  # 32 GiB, on any system
    assert main(["info", str(micro_toml), "--model.n_layer", str(10**9)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "model.n_layer = 1000000000: this model's 1,000,000,000 blocks would hold" in err
    assert "more than this machine's 32.0 GiB" in err
