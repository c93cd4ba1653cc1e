"""Experiment trackers: TensorBoard, wandb (offline) and trackio receive the same scalars as
metrics.jsonl, the resolved config, and a sweep's group and tags, read back from what each wrote."""

from __future__ import annotations

import glob
import json
import struct
import sys
import uuid
from pathlib import Path

import pytest

from slmlab.config import ConfigError, config_from_dict
from slmlab.training import train
from slmlab.training.trackers import scalars_of


@pytest.fixture
def make_config(make_config, text_corpus):
    """The shared tiny-config factory, with the corpus it trains on at hand."""
    make_config.corpus = text_corpus
    return make_config


def metrics_of(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def expected_series(run_dir, key: str) -> list[tuple[int, float]]:
    return [(r["step"], r[key]) for r in metrics_of(run_dir) if key in r]


def assert_series(logged: list[tuple[int, float]], expected: list[tuple[int, float]], rel: float = 1e-6) -> None:
    assert expected and [step for step, _ in logged] == [step for step, _ in expected]
    assert [value for _, value in logged] == pytest.approx([value for _, value in expected], rel=rel)


def item_key(item) -> str:
    return item.key or "/".join(item.nested_key)


def wandb_records(run_dir) -> list:
    """The protobuf records of wandb's offline run file (a LevelDB-style log of 32 KiB blocks
    after a 7-byte ':W&B' header; record header: crc32, length, type FULL/FIRST/MIDDLE/LAST)."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = glob.glob(str(run_dir / "wandb" / "*run-*" / "run-*.wandb"))
    data, pos, block, parts, records = Path(path).read_bytes(), 7, 32768, [], []
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, n, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + n], pos + 7 + n
        if kind == 0:
            break
        parts = [chunk] if kind in (1, 2) else [*parts, chunk]
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(b"".join(parts))
            records.append(record)
    return records


def test_tensorboard_holds_every_metric_and_the_config(make_config):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = train(make_config(make_config.corpus, train={"trackers": ["tensorboard"]}), progress=False)
    events = EventAccumulator(str(result.run_dir / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0}).Reload()
    for key in ("loss", "lr", "grad_norm", "val_loss", "val_bpb", "tokens_per_s"):
        logged = [(e.step, e.value) for e in events.Scalars(key)]
        assert_series(logged, expected_series(result.run_dir, key))
    text = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert '"n_layer": 2' in text


@pytest.mark.slow
def test_wandb_offline_run_holds_metrics_config_group_and_tags(make_config, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = make_config(
        make_config.corpus, train={"trackers": ["wandb"], "tracker_group": "grp", "tracker_tags": ["baseline", "seed0"]}
    )
    result = train(cfg, progress=False)
    wandb.teardown()  # the service closes the run file in the background; wait for it (CI lost this race)
    records = wandb_records(result.run_dir)
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run.display_name == "tiny" and run.run_group == "grp" and list(run.tags) == ["baseline", "seed0"]
    config = {item_key(item): json.loads(item.value_json) for item in run.config.update}
    assert config["model"]["n_layer"] == 2 and config["train"]["trackers"] == ["wandb"]
    history = [
        {item_key(i): json.loads(i.value_json) for i in r.history.item}
        for r in records
        if r.WhichOneof("record_type") == "history"
    ]
    assert_series([(h["_step"], h["loss"]) for h in history], expected_series(result.run_dir, "loss"))
    assert_series([(h["_step"], h["val_loss"]) for h in history if "val_loss" in h], expected_series(result.run_dir, "val_loss"))


def test_trackio_local_store_holds_metrics_and_config(make_config):
    pytest.importorskip("trackio")
    from trackio.sqlite_storage import SQLiteStorage

    project = f"slmlab-test-{uuid.uuid4().hex[:8]}"
    cfg = make_config(make_config.corpus, train={"trackers": ["trackio"], "tracker_project": project, "tracker_group": "sweep1"})
    result = train(cfg, progress=False)
    logs = SQLiteStorage.get_logs(project, "tiny")
    assert_series([(r["step"], r["loss"]) for r in logs], expected_series(result.run_dir, "loss"))
    assert_series([(r["step"], r["val_bpb"]) for r in logs if "val_bpb" in r], expected_series(result.run_dir, "val_bpb"))
    config = SQLiteStorage.get_run_config(project, "tiny")
    assert config["model"]["n_layer"] == 2 and config["_Group"] == "sweep1"


def test_a_sweep_groups_its_runs_and_tags_variant_and_seed(micro_sweep):
    from slmlab.experiments.sweep_config import load_sweep

    _, jobs = load_sweep(micro_sweep, {"train.trackers": ["tensorboard"]})
    for job in jobs:
        assert job.config.train.tracker_group == "micro"
        assert job.config.train.tracker_tags == [job.variant, f"seed{job.seed}"]
    _, untracked = load_sweep(micro_sweep)  # no tracker reads them: the runs' configs stay as written
    assert {(job.config.train.tracker_group, tuple(job.config.train.tracker_tags)) for job in untracked} == {("", ())}


def test_a_curriculum_s_phases_are_grouped_under_it_and_tagged_with_its_name(make_config):
    """Each phase is a tracker run of its own, named phase1_A, phase2_B in every curriculum: they
    were neither grouped nor told apart (a sweep's group is kept, the curriculum's name a tag)."""
    values = make_config(make_config.corpus, train={"trackers": ["tensorboard"]}).to_dict()
    values["phases"] = [{"name": "A", "steps": 2}, {"name": "B", "steps": 2}]
    phases = config_from_dict(values).phase_configs()
    assert [(p.train.tracker_group, p.train.tracker_tags) for p in phases] == [("tiny", ["tiny"])] * 2
    values["train"] |= {"tracker_group": "sweep", "tracker_tags": ["baseline", "seed0"]}
    assert config_from_dict(values).phase(1).train.tracker_tags == ["baseline", "seed0", "tiny"]
    values["train"] |= {"trackers": [], "tracker_group": "", "tracker_tags": []}  # untracked: nothing set
    assert config_from_dict(values).phase(1).train.tracker_group == ""


def test_unknown_missing_or_repeated_trackers_are_one_line_errors(make_config, monkeypatch):
    with pytest.raises(ConfigError, match=r"train.trackers = 'tensorbord' is not one of .*did you mean 'tensorboard'"):
        make_config(make_config.corpus, train={"trackers": ["tensorbord"]})
    with pytest.raises(ConfigError, match="names a tracker twice"):
        make_config(make_config.corpus, train={"trackers": ["wandb", "wandb"]})
    # wandb not installed: its import fails, and no other (an import hook that passed every other
    # import on dropped import_module's package, and torch's lazy `._inductor` failed in later tests)
    monkeypatch.setitem(sys.modules, "wandb", None)
    cfg = make_config(make_config.corpus, train={"trackers": ["wandb"]})
    with pytest.raises(ConfigError, match=r"includes 'wandb' but it is not installed: pip install 'slmlab\[wandb\]'"):
        train(cfg, progress=False)
    assert not (cfg.out_dir and (make_config.corpus.parent / "runs" / "tiny").exists())  # nothing left to --overwrite


def test_scalars_are_the_finite_numbers_of_a_record():
    assert scalars_of({"step": 3, "loss": 1.5, "ok": True, "name": "x", "val_loss": float("nan"), "tokens": 10}) == {
        "loss": 1.5,
        "tokens": 10.0,
    }


def test_a_resumed_run_may_add_a_tracker_and_logs_only_the_steps_it_trains(make_config):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from slmlab.cli import main

    cfg = make_config(make_config.corpus)
    run = train(cfg, progress=False).run_dir
    assert (
        main(["train", "--resume", str(run), "--train.steps", "30", "--train.trackers", '["tensorboard"]', "--no-progress"]) == 0
    )
    events = EventAccumulator(str(run / "tensorboard")).Reload()
    assert [e.step for e in events.Scalars("loss")] == [25, 30]
    assert json.loads((run / "config.json").read_text())["train"]["trackers"] == ["tensorboard"]


def test_tracker_run_ids_persist_and_a_damaged_record_is_one_line(tmp_path):
    from slmlab.errors import RunFileError
    from slmlab.training.trackers import _run_id

    first = _run_id(tmp_path, "wandb")
    assert _run_id(tmp_path, "wandb") == first and _run_id(tmp_path, "other") != first
    (tmp_path / "trackers.json").write_text("{not json")
    with pytest.raises(RunFileError, match="trackers.json.*delete it"):
        _run_id(tmp_path, "wandb")
