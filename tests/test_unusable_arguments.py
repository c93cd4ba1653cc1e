"""Arguments that are well formed but mean nothing, refused in one line before any work: any
argument given as '' (read as the working directory, or as an option not given), an output given
as '-' (standard input is '-' only for --text and --prompt-file), an empty data.source."""

from __future__ import annotations

import argparse
import os
import stat

import pytest

from slmlab.cli import main
from slmlab.cli.options import OUTPUT_DESTS
from slmlab.config import ConfigError, config_from_dict


def _argument_cases(value: str, dests=None) -> list[list[str]]:
    """For every argument of every verb that takes a text value (not a number, not a choice; a
    checkpoint's name is text), or those of `dests`: the verb's command line with that argument
    given as `value` and every other required one as 'x' (or its first choice)."""
    from slmlab.cli.argument_types import checkpoint_name, output_folder
    from slmlab.cli.main import build_parser
    from slmlab.cli.options import parser_tree

    cases = []
    for parser in parser_tree(build_parser()):
        if any(isinstance(a, argparse._SubParsersAction) for a in parser._actions):
            continue
        verb = parser.prog.split()[1:]
        groups = [g for g in parser._mutually_exclusive_groups if g.required]
        for target in parser._actions:
            if (
                target.type not in (None, str, checkpoint_name, output_folder)
                or target.choices
                or target.nargs == 0
                or target.dest == "help"
            ):
                continue
            if dests is not None and target.dest not in dests:
                continue
            argv = list(verb)
            for action in parser._actions:
                if action is target:
                    argv += [*action.option_strings[:1], value]
                elif not action.option_strings and action.nargs not in ("*", "?"):
                    argv.append("x")
                elif action.option_strings and (
                    action.required or any(g._group_actions[0] is action and target not in g._group_actions for g in groups)
                ):
                    argv += [action.option_strings[0], next(iter(action.choices or ["x"]))]
            cases.append(argv)
    return cases


@pytest.mark.parametrize("argv", _argument_cases(""), ids=lambda argv: " ".join(a or "''" for a in argv))
def test_an_argument_given_empty_is_refused_in_one_line(argv, tmp_path, monkeypatch, capsys):
    """`--slurm ''` ran the whole sweep (the option read as not given), `prompts --suite ''` ran the
    bundled suite, `viz --out ''` wrote to the run's folder and `new-variant --out ''` wrote into
    the working directory and named '/name.toml' as the file to check: '' is no value of any
    argument. Before any work: nothing is written."""
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    option = argv[argv.index("") - 1]
    assert "is empty: give" in err and "\n" not in err, err
    assert not option.startswith("--") or f"{option} is empty" in err, err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("argv", _argument_cases("-", OUTPUT_DESTS), ids=" ".join)
def test_an_output_given_as_a_dash_is_refused_rather_than_written_as_a_file_named_dash(argv, tmp_path, monkeypatch, capsys):
    """'-' is standard input for --text and --prompt-file; `tokenizer train --out -` wrote a file
    named '-', which `prompts --suite -` then read as TOML."""
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "not standard output" in err and "\n" not in err, err
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
@pytest.mark.parametrize("argv", _argument_cases("PIPE", OUTPUT_DESTS), ids=" ".join)
def test_an_output_that_is_a_pipe_or_device_is_refused_rather_than_replaced(argv, tmp_path, monkeypatch, capsys):
    """The atomic write's rename put a regular file in the place of a pipe, or, run as root, of
    /dev/null itself (`prompts RUN --out /dev/null` to throw the report away)."""
    monkeypatch.chdir(tmp_path)
    os.mkfifo(tmp_path / "PIPE")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "PIPE is a pipe: slmlab writes a file or folder there" in err and "\n" not in err, err
    assert [p.name for p in tmp_path.iterdir()] == ["PIPE"] and stat.S_ISFIFO(os.stat(tmp_path / "PIPE").st_mode)


def test_a_write_never_replaces_a_pipe_or_device(tmp_path):
    from slmlab.files import atomic_write_text

    os.mkfifo(tmp_path / "pipe")
    for target, kind in ((tmp_path / "pipe", "pipe"), (os.devnull, "device")):
        with pytest.raises(ConfigError, match=f"is a {kind}, not a file: slmlab writes a whole file there"):
            atomic_write_text(target, "text")
    assert stat.S_ISFIFO(os.stat(tmp_path / "pipe").st_mode) and stat.S_ISCHR(os.stat(os.devnull).st_mode)


def test_the_argument_cases_cover_every_verb_and_output():
    verbs = {case[0] for case in _argument_cases("")}
    assert len(_argument_cases("")) >= 50 and {"sweep", "prompts", "viz", "new-variant", "export"} <= verbs
    assert len(_argument_cases("-", OUTPUT_DESTS)) >= 10


def test_an_empty_data_source_is_refused_rather_than_read_as_the_working_directory():
    """`data.source = ''` read every .txt, .md and .jsonl file under the working directory."""
    with pytest.raises(ConfigError, match="data.source is empty"):
        config_from_dict({"data": {"source": ""}})
