"""The `slmlab` command: a dispatch table of verbs, each parsed and handled in its group's module.

    train.py     train, sweep
    evaluate.py  eval, generate, prompts, ablate, diagnose
    persona.py   persona, persona-eval, surgery
    inspect.py   info, viz attention, viz animate, quantize, report
    develop.py   check, new-variant
    interop.py   export, lm-eval
    data.py      data prepare, data download, tokenizer train

Every verb that takes a CONFIG also takes dotted overrides after it (`--model.n_layer 4`,
`--train.lr=3e-4`, `--data.genres '["J", "E"]'`). A user's mistake (any SlmlabError) is one line
on stderr and exit code 2. Parsing imports neither torch nor the library, so help is instant.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .. import __version__
from ..config.loading import SECTION_NAMES
from ..torchrun_env import process_rank, report_error
from . import data, develop, evaluate, inspect, interop, persona, train
from .options import (
    OneLineParser,
    check_option_rules,
    check_overrides,
    dashed_options,
    given_options,
    refuse_unrecognized,
    refuse_unusable_arguments,
)
from .os_errors import os_error_message, output_arguments

VERB_GROUPS = (train, evaluate, persona, inspect, develop, interop, data)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="slmlab",
        description="Train and dissect small language model architectures from scratch.",
        epilog="Each verb has --help with examples. Overrides: --section.key value (e.g. --model.n_layer 4).",
    )
    parser.add_argument("--version", action="version", version=f"slmlab {__version__}")
    sub = parser.add_subparsers(dest="verb", required=True)
    for group in VERB_GROUPS:
        group.register(sub)
    return parser


def split_overrides(argv: list[str], parser: argparse.ArgumentParser) -> tuple[list[str], list[str]]:
    """Separate config overrides (`--section.key value`, `--section.key=value`, `--out_dir DIR`,
    and, where `parser`'s verb has no option of that name (persona's --train), a section's table:
    `--model '{n_layer = 2}'`) from the verb's own arguments, so a value is never taken for a
    positional argument. `--out-dir`, spelled as the verbs' own options are, is `--out_dir`. After
    a bare `--` every argument is a value of the verb's own."""
    own_options = verb_options(parser, argv)
    tables = {key for key in SECTION_NAMES if f"--{key}" not in own_options}  # --model '{n_layer = 2}'
    own, overrides, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            return own + argv[i:], overrides
        key = arg[2:].split("=", 1)[0] if arg.startswith("--") else ""
        if key == "out-dir":
            key, arg = "out_dir", "--out_dir" + arg.removeprefix("--out-dir")
        if "." in key or key == "out_dir" or key in tables:
            takes_value = "=" not in arg and i + 1 < len(argv)
            overrides += [arg, *argv[i + 1 : i + 1 + takes_value]]
            i += 1 + takes_value
        else:
            own.append(arg)
            i += 1
    return own, overrides


def verb_options(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The option strings of the verb `argv` names (`viz attention`: the verb of a group)."""
    for arg in argv:
        verbs = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        if verbs is None or arg not in verbs.choices:
            break
        parser = verbs.choices[arg]
    return {option for action in parser._actions for option in action.option_strings}


def main(argv: list[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # a terminal that cannot show a character gets \u2014, not a traceback
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    rank = process_rank()  # under torchrun, only rank 0 reports progress
    # slmlab's own progress at INFO; the libraries it drives (lm-eval, datasets, transformers) say only warnings
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    logging.getLogger("slmlab").setLevel(logging.INFO if rank == 0 else logging.WARNING)
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    own, extra = split_overrides(argv, parser)
    own = dashed_options(parser, own)
    args, unknown = parser.parse_known_args(own)
    if unknown:
        refuse_unrecognized(args.verb_parser, unknown)
    args.argv = argv
    from .. import plugins
    from ..errors import GenerationRoomError, SlmlabError, out_of_memory
    from ..files import lone_surrogate

    if args.trust_plugins:
        plugins.trust()

    try:
        for arg in argv:
            if lone_surrogate(arg):  # Python's stand-in for a byte that is not UTF-8 (surrogateescape)
                raise SlmlabError(f"argument {arg!r} is not UTF-8 text; give slmlab UTF-8 arguments")
            if "\0" in arg:  # only a caller of main() can pass one: a shell's arguments end at NUL
                raise SlmlabError(f"argument {arg!r} holds a NUL character, which no path or text argument can")
        given = given_options(build_parser(), own)
        refuse_unusable_arguments(args, given)
        check_overrides(args, extra)
        check_option_rules(args, given)
        return args.func(args, extra)
    except SlmlabError as err:
        report_error(f"slmlab: error: {err.for_verb(args.verb_name) if isinstance(err, GenerationRoomError) else err}")
        return 2
    except BrokenPipeError:  # the reader went away (`slmlab info CONFIG | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as err:  # a path it cannot read or write (permissions, a file where a folder goes, a full disk)
        report_error(f"slmlab: error: {os_error_message(err, output_arguments(args))}")
        return 2
    except KeyboardInterrupt:
        resume = " (a run that wrote a checkpoint continues with slmlab train --resume RUN)"
        again = {
            "sweep": " (run the same sweep again to continue its runs)",
            "train": resume,
            "persona": resume,
        }.get(args.verb_name, "")
        if rank == 0:  # under torchrun every process was interrupted: one says so
            print(f"slmlab: interrupted{again}", file=sys.stderr)
        return 130
    except (RuntimeError, MemoryError) as err:
        message = out_of_memory(err, args.verb_name)
        if message is None:
            raise
        report_error(f"slmlab: error: {message}")
        return 2
