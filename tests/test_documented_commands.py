"""Every command the documentation shows is one slmlab accepts: the README's and docs' code blocks
and code spans, the usage comments at the top of the bundled and example configs, the Makefile's
recipes and each verb's --help examples parse, pass the verb's option rules, give settings that
exist, and, where they name a bundled config, load it with their overrides. (A README line once
combined two options the sweep verb refuses together.)"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from slmlab.cli.main import build_parser, split_overrides
from slmlab.cli.options import check_option_rules, check_overrides, configs_to_inspect, given_options
from slmlab.config import RunConfig, apply_overrides, config_from_dict, load_config, parse_overrides, read_toml

ROOT = Path(__file__).resolve().parents[1]
CONFIG_VERBS = {"train", "sweep", "check", "info", "diagnose"}
GROUP_VERBS = {"data", "tokenizer", "viz"}  # verbs whose first argument is a verb of their own


def _code_block_commands(path: Path) -> list[str]:
    """The `slmlab ...` commands of the lines inside a Markdown file's fenced code blocks (a
    transcript's `$ ` lines show mistakes and their messages on purpose, so they are left out)."""
    commands, inside = [], False
    for line in path.read_text().replace("\\\n", " ").splitlines():
        if line.lstrip().startswith("```"):
            inside = not inside
        elif inside and line.startswith("slmlab "):
            commands += [part.strip() for part in line.split("&&") if part.strip().startswith("slmlab ")]
    return commands


def _inline_commands(path: Path) -> list[str]:
    """The whole commands a Markdown file's prose shows in `code spans`: those naming what they act
    on, not mentions of a verb (`slmlab eval`, `slmlab quantize --int8`) or elisions (`...`,
    `--data.*`, `--by-position / --context-lengths`)."""
    commands = []
    for match in re.finditer(r"`(slmlab [^`]+)`", path.read_text()):
        command = match.group(1)
        words = command.split()
        verb_words = 3 if words[1] in GROUP_VERBS else 2
        elided = any(mark in command for mark in ("...", "*", " / "))
        bare_option = len(words) == verb_words + 1 and words[-1].startswith("--")
        if not elided and len(words) > verb_words and not bare_option:
            commands.append(command)
    return commands


def _config_comment_commands(path: Path) -> list[str]:
    """The usage lines of a bundled config's opening comment (`#   slmlab train configs/...`)."""
    return [match.group(1) for line in path.read_text().splitlines() if (match := re.match(r"#\s+(slmlab \S.*)$", line))]


def _help_commands() -> list[str]:
    """Every verb's --help examples."""
    parsers, commands = [build_parser()], []
    while parsers:
        parser = parsers.pop()
        commands += [line.strip() for line in (parser.epilog or "").splitlines() if line.strip().startswith("slmlab ")]
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                parsers += action.choices.values()
    return commands


def documented_commands() -> list[tuple[str, str]]:
    pages = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
    found = [
        (path.name, command) for path in pages for read in (_code_block_commands, _inline_commands) for command in read(path)
    ]
    configs = sorted([*ROOT.glob("configs/*.toml"), *ROOT.glob("examples/**/*.toml")])
    found += [(path.relative_to(ROOT).as_posix(), command) for path in configs for command in _config_comment_commands(path)]
    found += [
        ("Makefile", "slmlab " + line.split("/slmlab ", 1)[1])
        for line in (ROOT / "Makefile").read_text().splitlines()
        if "/slmlab " in line
    ]
    return found + [("--help", command) for command in _help_commands()]


def test_the_documentation_shows_commands_of_every_kind():
    sources = {source for source, _ in documented_commands()}
    assert {"README.md", "variants.md", "reliability.md", "--help"} <= sources and any(
        source.startswith("configs/") for source in sources
    )
    verbs = {shlex.split(command, comments=True)[1] for _, command in documented_commands()}
    assert verbs >= {"train", "sweep", "eval", "generate", "ablate", "check", "export", "data", "tokenizer"}


@pytest.mark.parametrize(("source", "command"), documented_commands())
def test_a_documented_command_is_one_slmlab_accepts(source, command, monkeypatch):
    monkeypatch.chdir(ROOT)
    argv = shlex.split(command, comments=True)[1:]
    own, overrides = split_overrides(argv, build_parser())
    try:
        args = build_parser().parse_args(own)
    except SystemExit:
        pytest.fail(f"{source}: `{command}` does not parse")
    check_overrides(args, overrides)
    check_option_rules(args, given_options(build_parser(), own))
    config = getattr(args, "config", None)
    if overrides:  # settings that exist, with values of their types (a run's verbs read them over its config)
        named = ROOT / config if isinstance(config, str) and config.endswith(".toml") else None
        base = load_config(named) if named and named.is_file() and "variants" not in read_toml(named) else RunConfig()
        config_from_dict(apply_overrides(base.to_dict(), parse_overrides(overrides)))  # a curriculum's phases by name
    if args.verb in CONFIG_VERBS and isinstance(config, str) and (ROOT / config).is_file():
        assert configs_to_inspect(config, overrides)


def test_every_file_of_the_repository_the_documentation_names_exists():
    """The docs named `src/slmlab/config.py` for every field and default long after the config
    became a package: each `path` in a code span that starts at a folder of the repository
    (src/, tests/, benchmarks/, configs/, docs/, examples/) is a file or folder there, and each
    module named from the package (`training/memory_room.py`, `slmlab/registry.py`) is one of it."""
    named = set()
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for span in re.findall(r"`([^`\s]+)`", doc.read_text()):
            path = span.rstrip(".,:;").split("::")[0]
            if path.split("/")[0] in {"src", "tests", "benchmarks", "configs", "docs", "examples"} and "*" not in path:
                named.add((doc.name, ROOT / path))
            elif path.endswith(".py") and "/" in path:
                named.add((doc.name, ROOT / "src" / "slmlab" / path.removeprefix("slmlab/")))
    assert len(named) >= 60
    missing = sorted((doc, str(path.relative_to(ROOT))) for doc, path in named if not path.exists())
    assert not missing, missing
