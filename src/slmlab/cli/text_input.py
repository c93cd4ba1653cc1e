"""The text a command reads from its arguments: --prompt or --prompt-file, --text; a file, a
pipe (a shell's <(zcat book.txt.gz)) or standard input ('-'), read as the corpus's text files are."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import ConfigError
from ..files import HEAD_BYTES, file_kind, not_utf8, wide_text


def add_prompt(parser: argparse.ArgumentParser) -> None:
    """--prompt TEXT or --prompt-file PATH (one of them): read by `prompt_text`."""
    given = parser.add_mutually_exclusive_group(required=True)
    given.add_argument("--prompt", help="the text to continue")
    given.add_argument(
        "--prompt-file",
        metavar="PATH",
        help="read the prompt from a UTF-8 text file as corpus files are read (Windows line ends as newlines; '-': standard input)",
    )


def prompt_text(args: argparse.Namespace) -> str:
    """The prompt the command line gives: --prompt's text, or the whole of --prompt-file's
    (`text_file`)."""
    return args.prompt if args.prompt is not None else text_file(args.prompt_file, "--prompt-file")


def text_file(source: str, option: str) -> str:
    """The text of the UTF-8 file `source` ('-': standard input) that `option` names, its line ends
    read as the corpus's text files are (universal newlines: CR LF and CR become LF), so a text
    saved on Windows is the text a model trained on such files has seen."""
    if not source.strip():
        raise ConfigError(f"{option} is empty: give the path of a UTF-8 text file ('-': standard input)")
    if source == "-":
        if sys.stdin.isatty():  # else it waits in silence for what the user does not know to type
            print(f"{option} -: reading the text from the terminal; end it with Ctrl-D", file=sys.stderr)
        data, where = sys.stdin.buffer.read(), "standard input"
    else:
        path = Path(source).expanduser()
        kind = file_kind(path)
        if kind not in ("file", "pipe"):  # a pipe: a shell's <(zcat book.txt.gz)
            problem = {
                "missing": "no such file",
                "folder": "a folder, not a file",
                "device": "a device, not a file; give a file ('-': standard input)",
            }[kind]
            raise ConfigError(f"{option} {source}: {problem}")
        data, where = path.read_bytes(), source
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError(not_utf8(f"{option} {where}", data)) from None
    if problem := wide_text(data[:HEAD_BYTES]):
        raise ConfigError(f"{option} {where} {problem}; re-encode it as UTF-8")
    return text.replace("\r\n", "\n").replace("\r", "\n")
