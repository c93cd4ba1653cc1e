"""Nothing is deleted or written outside a run directory, whatever name or out_dir is given, and
--overwrite removes only what slmlab itself wrote (reliability issue, class 1)."""

from __future__ import annotations

import os

import pytest

from slmlab.cli import main


@pytest.fixture
def bystanders(tmp_path):
    """Files a careless --overwrite could destroy: beside the runs, in the runs folder, elsewhere."""
    victim = tmp_path / "elsewhere"
    victim.mkdir()
    files = [tmp_path / "notes.txt", tmp_path / "runs" / "other_run" / "config.json", victim / "thesis.tex"]
    for path in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("precious")
    return files


def _train(micro_toml, *argv) -> int:
    return main(["train", str(micro_toml), "--no-progress", "--train.steps", "3", *argv])


@pytest.mark.parametrize("name", [".", "..", "../elsewhere", "a/b", "a\\b", "", "ABSOLUTE", "a\x00b", "a\nb", "a\x1bb"])
def test_a_run_name_that_is_not_a_plain_name_is_refused_and_nothing_is_touched(
    name, micro_toml, bystanders, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    if name == "ABSOLUTE":
        name = str(tmp_path / "elsewhere")
    assert _train(micro_toml, "--name", name, "--overwrite") == 2
    err = capsys.readouterr().err.strip()
    # a NUL can come only from a caller of main()
    says = "holds a NUL character" if "\x00" in name else "--name is empty" if not name else "is not a name"
    assert says in err  # a NUL and '' are refused in any argument
    assert "\n" not in err and "--overwrite" not in err
    assert all(path.read_text() == "precious" for path in bystanders)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["other_run"]


def test_a_name_longer_than_a_folder_name_can_be_is_refused_before_anything_is_written(micro_toml, tmp_path, capsys):
    """It ended in "[Errno 36] File name too long" from the lock file, after the config loaded."""
    assert _train(micro_toml, "--name", "é" * 121) == 2  # 242 bytes in UTF-8
    assert "name is 242 bytes long; a folder name holds at most 240" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    assert _train(micro_toml, "--name", "é" * 120) == 0


@pytest.mark.parametrize("name", [" ", "run ", " run"])
def test_a_name_with_white_space_at_an_end_is_refused(name, micro_toml, tmp_path, capsys):
    """A name of spaces made a folder ' '; 'run ' made one beside 'run' that no listing tells apart."""
    assert _train(micro_toml, "--name", name) == 2
    assert "begins or ends with white space" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_sweep_or_phase_name_that_is_a_path_is_refused(micro_toml, micro_sweep, bystanders, tmp_path, capsys):
    text = micro_sweep.read_text().replace('name = "micro"', 'name = ".."')
    micro_sweep.write_text(text)
    assert main(["sweep", str(micro_sweep)]) == 2
    assert "is not a name" in capsys.readouterr().err
    curriculum = tmp_path / "curriculum.toml"
    curriculum.write_text(micro_toml.read_text().replace("[model]", '[[phases]]\nname = "../../x"\nsteps = 2\n\n[model]', 1))
    assert _train(curriculum, "--overwrite") == 2
    assert "is not a name" in capsys.readouterr().err
    assert all(path.read_text() == "precious" for path in bystanders)


def test_overwrite_removes_only_what_slmlab_wrote(micro_toml, tmp_path, capsys, caplog):
    assert _train(micro_toml, "--name", "mine") == 0
    run = tmp_path / "runs" / "mine"
    (run / "my_notes.md").write_text("keep me")
    (run / "data").mkdir()
    (run / "data" / "corpus.txt").write_text("keep me too")
    assert _train(micro_toml, "--name", "mine") == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--overwrite" not in err
    assert main(["report", str(run)]) == 0  # training.png
    assert main(["eval", str(run), "--by-position", "--batches", "1"]) == 0  # derived.json and its lock
    caplog.clear()
    assert _train(micro_toml, "--name", "mine", "--overwrite") == 0
    assert "kept 2 files slmlab did not write: data, my_notes.md" in caplog.text
    assert (run / "my_notes.md").read_text() == "keep me" and (run / "data" / "corpus.txt").read_text() == "keep me too"
    assert (run / "final.safetensors").is_file() and (run / "summary.json").is_file()


def test_a_folder_that_is_not_a_run_is_never_overwritten(micro_toml, tmp_path, capsys):
    folder = tmp_path / "runs" / "photos"
    folder.mkdir(parents=True)
    (folder / "holiday.jpg").write_text("precious")
    assert _train(micro_toml, "--name", "photos", "--overwrite") == 2
    err = capsys.readouterr().err
    assert "not a slmlab run" in err and "--overwrite" not in err
    assert (folder / "holiday.jpg").read_text() == "precious"


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symbolic links")
def test_a_run_directory_that_links_elsewhere_is_refused(micro_toml, bystanders, tmp_path, capsys):
    (tmp_path / "elsewhere" / "config.json").write_text("{}")  # looks like a run, but lies outside out_dir
    (tmp_path / "runs" / "linked").symlink_to(tmp_path / "elsewhere")
    assert _train(micro_toml, "--name", "linked", "--overwrite") == 2
    assert "leads outside" in capsys.readouterr().err
    assert all(path.read_text() == "precious" for path in bystanders)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symbolic links")
def test_a_link_to_a_run_beside_it_names_the_run_and_writes_nothing(micro_toml, tmp_path, capsys):
    """`runs/latest -> a` was said to lead outside runs; a run is written and locked under one name,
    so a resume through the link is refused with the name to give."""
    assert _train(micro_toml, "--name", "a") == 0
    (tmp_path / "runs" / "latest").symlink_to("a")
    before = sorted((tmp_path / "runs" / "a").rglob("*"))
    for argv in (
        ["train", "--resume", str(tmp_path / "runs" / "latest"), "--train.steps", "20"],
        ["train", str(micro_toml), "--name", "latest", "--overwrite"],
    ):
        assert main([*argv, "--no-progress"]) == 2
        assert f"latest is a link to {tmp_path / 'runs' / 'a'}: give that name" in capsys.readouterr().err
    assert sorted((tmp_path / "runs" / "a").rglob("*")) == before
    assert main(["eval", str(tmp_path / "runs" / "latest")]) == 0  # reading through it is fine


def test_out_dir_naming_a_file_is_one_line(micro_toml, tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    assert _train(micro_toml, "--out_dir", str(tmp_path / "a_file")) == 2
    err = capsys.readouterr().err.strip()
    assert "is a file, not a folder" in err and "\n" not in err


def test_a_persona_run_named_after_the_run_it_starts_from_never_deletes_it(micro_toml, text_corpus, tmp_path, capsys):
    """`persona RUN --name <RUN's own name> --overwrite` removed the base run, weights and all,
    before loading them."""
    assert _train(micro_toml, "--name", "base") == 0
    base = tmp_path / "runs" / "base"
    before = sorted(p.relative_to(base) for p in base.rglob("*"))
    argv = ["persona", str(base), "--persona-data", str(text_corpus), "--train", "all", "--steps", "2", "--no-progress"]
    assert main([*argv, "--name", "base", "--overwrite"]) == 2
    err = capsys.readouterr().err.strip()
    assert "holds the run this one starts from" in err and "\n" not in err
    assert sorted(p.relative_to(base) for p in base.rglob("*")) == before
    assert main([*argv, "--name", "tuned"]) == 0
    assert (tmp_path / "runs" / "tuned" / "persona_gain.json").is_file()
    assert _train(micro_toml, "--name", "tuned", "--overwrite") == 0  # a persona run's own files are slmlab's to remove
    assert not (tmp_path / "runs" / "tuned" / "persona_gain.json").exists()


def test_an_output_path_that_is_the_command_s_own_input_is_refused(micro_toml, text_corpus, tmp_path, capsys):
    """`tokenizer train --out corpus.txt` replaced the corpus it had just read with JSON; `prompts
    --out SUITE` and `persona-eval --out TEXT` would replace their inputs the same way."""
    corpus_file = sorted(text_corpus.rglob("*.txt"))[0]
    before = corpus_file.read_bytes()
    assert main(["tokenizer", "train", str(micro_toml), "--out", str(corpus_file)]) == 2
    assert "is a file of data.source" in capsys.readouterr().err
    assert _train(micro_toml, "--name", "r") == 0
    run = tmp_path / "runs" / "r"
    suite = tmp_path / "suite.jsonl"
    suite.write_text('{"id": "a", "prompt": "the"}\n')
    assert main(["prompts", str(run), "--suite", str(suite), "--out", str(suite)]) == 2
    assert "is the prompt suite itself" in capsys.readouterr().err
    assert main(["persona-eval", str(run), "--persona-data", str(corpus_file), "--out", str(corpus_file)]) == 2
    assert "is a file of data.source" in capsys.readouterr().err
    assert corpus_file.read_bytes() == before and suite.read_text() == '{"id": "a", "prompt": "the"}\n'


def test_a_run_or_sweep_folder_inside_the_corpus_folder_is_refused(micro_toml, text_corpus, tmp_path, capsys):
    """Runs under out_dir = <corpus>/runs trained once; the next run read the first one's
    metrics.jsonl as a corpus file ("no field 'text'") and its reports as documents."""
    before = sorted(p for p in text_corpus.rglob("*") if p.is_file())
    for out_dir in (text_corpus / "runs", text_corpus):
        assert _train(micro_toml, "--data.source", str(text_corpus), "--out_dir", str(out_dir)) == 2
        assert "lies inside data.source" in capsys.readouterr().err
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(f'name = "s"\nbase = "{micro_toml}"\nout_dir = "{text_corpus / "sweeps"}"\n[variants.a]\n')
    assert main(["sweep", str(sweep), "--dry-run", "--data.source", str(text_corpus)]) == 2
    assert "the sweep's folder" in capsys.readouterr().err
    assert sorted(p for p in text_corpus.rglob("*") if p.is_file() and not p.name.endswith(".lock")) == before
    assert _train(micro_toml, "--data.source", str(text_corpus / "prose"), "--out_dir", str(text_corpus / "runs")) == 0


def test_an_output_file_is_never_written_over_a_file_of_another_kind(micro_toml, text_corpus, tmp_path, capsys):
    """`sweep S --slurm S.toml` replaced the sweep's own config with the script, `tokenizer train
    CONFIG --out CONFIG` the config with a tokenizer; an earlier output of the same kind is still
    replaced, as a rerun should."""
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(f'name = "s"\nbase = "{micro_toml}"\n[variants.a]\n')
    notes = tmp_path / "notes.md"
    notes.write_text("# my notes\n")
    originals = {path: path.read_bytes() for path in (micro_toml, sweep, notes)}
    refused = [
        ["sweep", str(sweep), "--slurm", str(sweep)],
        ["sweep", str(sweep), "--slurm", str(micro_toml)],
        ["tokenizer", "train", str(micro_toml), "--out", str(micro_toml)],
        ["tokenizer", "train", str(micro_toml), "--out", str(notes)],
        ["prompts", str(tmp_path / "runs" / "none"), "--out", str(notes)],
        ["persona-eval", str(tmp_path / "runs" / "none"), "--persona-data", str(text_corpus), "--out", str(notes)],
    ]
    for argv in refused:
        assert main(argv) == 2, argv
        assert "already holds a file that is not" in capsys.readouterr().err
    assert {path: path.read_bytes() for path in originals} == originals
    script, tokenizer = tmp_path / "sweep.sh", tmp_path / "tok.json"
    for _ in range(2):  # written, then replaced by the same command
        assert main(["sweep", str(sweep), "--slurm", str(script)]) == 0
        assert main(["tokenizer", "train", str(micro_toml), "--out", str(tokenizer)]) == 0


def test_an_out_dir_under_home_is_expanded_like_the_other_paths(micro_toml, micro_sweep, tmp_path, monkeypatch):
    """out_dir = "~/runs" made a folder named "~" in the working directory (data.source and
    data.cache_dir already expanded "~")."""
    from slmlab.experiments.sweep_config import load_sweep

    home, work = tmp_path / "home", tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    assert _train(micro_toml, "--out_dir", "~/runs", "--name", "r") == 0
    assert (home / "runs" / "r" / "summary.json").is_file() and not (work / "~").exists()
    (home / "base.toml").write_text(micro_toml.read_text())  # a base named from home was <sweep folder>/~/base.toml
    text = micro_sweep.read_text().replace('base = "base.toml"', 'base = "~/base.toml"')
    micro_sweep.write_text(text.replace(f'out_dir = "{tmp_path / "runs"}"', 'out_dir = "~/sweeps"'))
    _, jobs = load_sweep(micro_sweep)
    assert all(job.run.path.is_relative_to(home / "sweeps") for job in jobs)


def test_a_tokenizer_is_never_written_into_a_run_folder(micro_toml, tmp_path, capsys):
    """`tokenizer train --out RUN/tokenizer.json` replaced the run's own tokenizer (a tokenizer
    file, so it counted as an earlier output to replace): the run then read text with another."""
    assert _train(micro_toml, "--name", "mine") == 0
    own = tmp_path / "runs" / "mine" / "tokenizer.json"
    before = own.read_bytes()
    capsys.readouterr()
    argv = ["tokenizer", "train", str(micro_toml), "--data.tokenizer", "byte", "--out", str(own)]
    assert main(argv) == 2
    assert "is inside the run folder" in capsys.readouterr().err
    assert own.read_bytes() == before
