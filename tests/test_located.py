"""A run's relative data.source not found from the working directory is read from the folder the
run was trained in (runs/located.py): `slmlab eval ~/project/runs/r` from another folder failed with
"run from the folder it is relative to"."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slmlab.cli import main
from slmlab.config import config_from_dict
from slmlab.runs.located import located, training_folder
from slmlab.runs.run_dir import RunDir

from .conftest import write_micro_toml


def _config(name: str, out_dir: str, source: str = "c.txt", cache_dir: str = ""):
    return config_from_dict({"name": name, "out_dir": out_dir, "data": {"source": source, "cache_dir": cache_dir}})


@pytest.mark.parametrize(
    ("out_dir", "name", "run", "folder"),
    [
        ("runs", "r", "p/runs/r", "p"),
        ("./runs", "r", "p/runs/r", "p"),
        ("runs/sweep", "full_s1", "p/runs/sweep/full_s1", "p"),  # a sweep's run
        ("runs/cur", "phase2_long", "p/runs/cur/phase2_long", "p"),  # a curriculum's phase
        ("out/deep/runs", "r", "p/out/deep/runs/r", "p"),
        ("runs", "r", "p/elsewhere/r", None),  # moved out of its out_dir
        ("runs", "r", "p/runs/renamed", None),
        ("../runs", "r", "p/runs/r", None),
    ],
)
def test_the_training_folder_is_the_runs_path_less_out_dir_and_name(tmp_path, out_dir, name, run, folder):
    found = training_folder(_config(name, out_dir), tmp_path / run)
    assert found == (None if folder is None else tmp_path.resolve() / folder)


def test_an_absolute_out_dir_names_no_training_folder(tmp_path):
    assert training_folder(_config("r", str(tmp_path / "runs")), tmp_path / "runs" / "r") is None


def test_relative_paths_are_read_from_the_training_folder_when_they_are_there(tmp_path, monkeypatch):
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    (project / "data").mkdir(parents=True)
    (project / "data" / "c.txt").write_text("text")
    (project / "cache").mkdir()
    elsewhere.mkdir()
    run = project / "runs" / "r"
    cfg = _config("r", "runs", "data/c.txt", "cache")
    monkeypatch.chdir(project)  # where it trained: recorded as typed, read as typed
    assert located(cfg, run) is cfg
    monkeypatch.chdir(elsewhere)
    moved = located(cfg, run)
    assert (moved.data.source, moved.data.cache_dir) == (str(project / "data" / "c.txt"), str(project / "cache"))
    assert moved.model == cfg.model and moved.train == cfg.train and moved.data.seq_len == cfg.data.seq_len
    for source in ("shakespeare", "brown", str(project / "data" / "c.txt")):  # built-in names and absolute paths stay
        assert located(_config("r", "runs", source), run).data.source == source
    assert located(_config("r", "runs", "data/*.txt"), run).data.source == str(project / "data" / "*.txt")
    assert located(_config("r", "runs", "data/*.md"), run).data.source == "data/*.md"  # a glob matching nothing there
    assert located(_config("r", "runs", "only_here.txt"), run).data.source == "only_here.txt"  # not in the training folder
    (elsewhere / "data").mkdir()
    (elsewhere / "data" / "c.txt").write_text("another text")
    assert located(cfg, run).data.source == "data/c.txt"  # found from here: read as typed, as before


def _train_in(project: Path, monkeypatch, text: str) -> Path:
    """A micro run trained from `project` on its c.txt, with out_dir and data.source relative."""
    project.mkdir()
    (project / "c.txt").write_text(text)
    toml = write_micro_toml(project / "micro.toml", "c.txt", project)
    toml.write_text(toml.read_text().replace(f'out_dir = "{project / "runs"}"', 'out_dir = "runs"'))
    monkeypatch.chdir(project)
    assert main(["train", "micro.toml", "--no-progress", "--name", "r"]) == 0
    return project / "runs" / "r"


def _eval(run: Path, capsys, *overrides: str) -> dict:
    capsys.readouterr()
    assert main(["eval", str(run), "--batches", "1", "--json", *overrides]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_run_is_scored_on_its_own_corpus_from_any_folder(tmp_path, monkeypatch, capsys):
    """From another folder, on the text it trained on; where that folder has a c.txt of its own,
    that one is read as typed (as before), and the refusal names the training folder's."""
    run = _train_in(tmp_path / "project", monkeypatch, "Some text to train on, line by line.\n" * 200)
    at_home = _eval(run, capsys)
    assert RunDir(run).read_config().data.source == "c.txt"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    away = _eval(run, capsys)
    assert away["loss"] == at_home["loss"] and away["train_overlap"] == 0
    assert json.loads((run / "config.json").read_text())["data"]["source"] == "c.txt"  # the record is as typed
    (elsewhere / "c.txt").write_text("Some line to text on, train by line.\n" * 200)  # its characters, other text
    assert main(["eval", str(run), "--batches", "1"]) == 2
    own = tmp_path / "project" / "c.txt"
    assert (
        f"; the folder it was trained in has its own: give --data.source {own} or run from {own.parent}"
        in capsys.readouterr().err
    )
    assert _eval(run, capsys, "--data.source", str(own))["loss"] == at_home["loss"]


def test_a_run_copied_without_its_corpus_reads_the_path_as_typed(tmp_path, monkeypatch, capsys):
    """Copied elsewhere, its training folder holds no c.txt: the working directory's is read, and
    checked against the fingerprint of the text the run trained on."""
    run = _train_in(tmp_path / "project", monkeypatch, "Some text to train on, line by line.\n" * 200)
    (run.parent.parent / "c.txt").unlink()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.txt").write_text("Some text to train on, line by line.\n" * 200)
    assert _eval(run, capsys)["train_overlap"] == 0
    (tmp_path / "c.txt").write_text("Some line to text on, train by line.\n" * 200)  # its characters, other text
    assert main(["eval", str(run), "--batches", "1"]) == 2
    assert "trained on other text than data.source 'c.txt' gives now" in capsys.readouterr().err


def test_a_runs_folder_that_is_a_link_is_read_as_given(tmp_path):
    """project/runs -> /elsewhere/store: the training folder is project, not the link's target's parent."""
    store = tmp_path / "store"
    (store / "r").mkdir(parents=True)
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "runs").symlink_to(store)
    assert training_folder(_config("r", "runs"), tmp_path / "project" / "runs" / "r") == tmp_path / "project"
    assert training_folder(_config("r", "store"), tmp_path / "project" / "runs" / "r") == tmp_path  # its real path
