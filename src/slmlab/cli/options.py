"""What the verbs share: the parser factory (help with examples), options declared once (device,
seed, output, int8, sampling), and turning CONFIG + overrides into a checked RunConfig.

Nothing here imports torch, or the parts of the library that do, at module level: `slmlab
--help` stays fast."""

from __future__ import annotations

import argparse
import difflib
import re
from pathlib import Path

from ..errors import ConfigError, SlmlabError
from ..files import file_kind
from .argument_types import checkpoint_name, non_negative_float, non_negative_int, output_folder, positive_int, seed, top_p

# what nanoGPT's scripts, litgpt's commands and Hugging Face's generate call a verb or an option
# slmlab names otherwise (for hints only)
OTHER_VERB_NAMES = {"sample": "generate", "chat": "generate", "evaluate": "eval", "convert": "export", "pretrain": "train"}
OTHER_OPTION_NAMES = {
    **dict.fromkeys(("--start", "--text", "--input"), "--prompt"),
    **dict.fromkeys(("--max-length", "--max-tokens", "--num-tokens"), "--max-new-tokens"),
    **dict.fromkeys(("--num-return-sequences", "--samples"), "--num-samples"),
}
INVALID_CHOICE = re.compile(r"argument (?P<argument>.+?): invalid choice: '(?P<value>[^']*)'")


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose mistakes are one line (the usage is one --help away); a verb or
    choice it does not know names the one meant (`slmlab sample`: generate, `slmlab trian`: train)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}{self._choice_meant(message)} (see {self.prog} --help)\n")

    def _choice_meant(self, message: str) -> str:
        """' (did you mean 'x'?)' for an invalid choice of one of this parser's arguments, else ''."""
        from ..registry import closest

        invalid = INVALID_CHOICE.match(message)
        for action in self._actions if invalid else ():
            if action.choices and ("/".join(action.option_strings) or action.metavar or action.dest) == invalid["argument"]:
                value = invalid["value"]
                meant = OTHER_VERB_NAMES.get(value.lower())
                return f" (did you mean {meant!r}?)" if meant in action.choices else closest(value, action.choices)
        return ""


def parser_tree(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """`parser` and every sub-command parser under it (verbs, and verbs of verb groups)."""
    parsers = [parser]
    for current in parsers:  # the list grows as it is walked: breadth first
        for action in current._actions:
            if isinstance(action, argparse._SubParsersAction):
                parsers.extend(action.choices.values())
    return parsers


def dashed_options(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """`argv` with `--max_new_tokens` (or `--max_new_tokens=3`) spelled `--max-new-tokens` where
    that is an option of `parser` or its verbs: overrides take underscores (`--out_dir`,
    `--train.batch_size`), nanoGPT's flags too, and a verb's own dashed option refused in
    that spelling sent users to --help. No verb option has an underscore of its own. After a bare
    `--` every argument is a value, as argparse reads it, and stays as written."""
    known = {option for each in parser_tree(parser) for action in each._actions for option in action.option_strings}
    values_from = argv.index("--") if "--" in argv else len(argv)
    spelled = []
    for arg in argv[:values_from]:
        name, equals, value = arg.partition("=")
        dashed = "--" + name[2:].replace("_", "-")
        spelled.append(dashed + equals + value if name.startswith("--") and dashed in known else arg)
    return spelled + argv[values_from:]


def refuse_unrecognized(verb: argparse.ArgumentParser, unknown: list[str]) -> None:
    """Exit with one line naming the arguments `verb` does not take and, for the first one meant
    as something it takes, what: a positional argument given as an option (`export RUN --out DIR`:
    OUT takes no --), the verb's option spelled closest (`--max-new-tokenz` -> `--max-new-tokens`),
    or the override of a setting (`--n_layer` -> `--model.n_layer`)."""
    hints = (_meant(verb, arg.partition("=")[0]) for arg in unknown if arg.startswith("-"))
    verb.error(f"unrecognized arguments: {' '.join(unknown)}{next((hint for hint in hints if hint), '')}")


def _meant(verb: argparse.ArgumentParser, option: str) -> str:
    """' (...)': what `verb` takes that `option`, which it does not take, stands for; else ''."""
    positionals = {action.dest.lower(): action.metavar or action.dest for action in verb._actions if not action.option_strings}
    given = positionals.get(option.lstrip("-").replace("-", "_").lower())
    if given is not None:
        return f" (give {given} without {option}: {verb.prog} {' '.join(positionals.values())})"
    options = [option for action in verb._actions for option in action.option_strings if option not in ("-h", "--help")]
    other = OTHER_OPTION_NAMES.get(option.replace("_", "-"))
    close = [other] if other in options else difflib.get_close_matches(option, options, n=1, cutoff=0.7)
    if close:
        return f" (did you mean {close[0]}?)"
    setting, note = sectioned_setting(option) or (None, "")
    takes = verb.get_default("takes_overrides")
    if setting and (takes is True or (isinstance(takes, tuple) and setting[2:] in takes)):
        return f" (did you mean {setting}?{' ' + note if note else ''})"
    return ""


def sectioned_setting(arg: str) -> tuple[str, str] | None:
    """(the override, a note or '') of the config setting `arg` stands for: `--n_layer` -> '--model.n_layer'
    (a setting's name without its section, as nanoGPT's flags), `--n_embd` -> '--model.d_model' (another
    tool's name: config/other_names.py); None when none, or one of the top level (an option of its own)."""
    from ..config.other_names import meant_setting

    name = arg.lstrip("-").replace("-", "_")
    meant = meant_setting(name, (), "") if arg.startswith("--") and name.isidentifier() else None
    if meant is None or "." not in meant[0]:
        return None
    return f"--{meant[0]}", meant[1]


def add_verb(
    subparsers,
    name: str,
    help: str,
    examples: str,
    overrides: bool | str | tuple[str, ...] = False,
    reads_runs: bool = True,
) -> argparse.ArgumentParser:
    """A sub-command whose --help ends with examples; `overrides`: it takes dotted config
    overrides (`--model.n_layer 4`), which the others refuse rather than ignore; a section name
    ("data"): only that section's (the verb reads no other); a tuple of settings: only those.
    `reads_runs`: it may load a run, so it takes --trust-plugins (a verb that loads none would
    accept the switch and change nothing)."""
    parser = subparsers.add_parser(
        name, help=help, description=help, epilog="examples:\n" + examples, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.set_defaults(
        takes_overrides=overrides,
        verb_name=parser.prog.removeprefix("slmlab "),
        verb_parser=parser,
        option_needs={},
        option_conflicts=[],
    )
    if reads_runs:
        parser.add_argument(
            "--trust-plugins",
            action="store_true",
            help="execute the plugin code recorded in the runs this reads (RUN/plugins/); off: such a run is refused",
        )
    else:
        parser.set_defaults(trust_plugins=False)
    return parser


def option_rules(
    parser: argparse.ArgumentParser,
    needs: dict[str, str | tuple[str, ...]] | None = None,
    conflicts: list[tuple[str, str, str]] | None = None,
) -> None:
    """Declare how a verb's options depend on one another, so that none is silently ignored:
    `needs` {option: the option it applies with, or a tuple of those it applies with any of};
    `conflicts` [(option, other, why they do not go together)]. A positional argument is named by
    its metavar (CONFIG). Checked by check_option_rules on the options the command line gives
    (given_options)."""
    parser.set_defaults(option_needs=dict(needs or {}), option_conflicts=list(conflicts or []))


def given_options(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The options (and positional arguments, by metavar) that `argv` gives the verb it names,
    defaults left out: `argv` parsed again by `parser` (a fresh one: its defaults are removed)
    with every default suppressed."""
    for each in parser_tree(parser):
        for action in each._actions:
            action.default = argparse.SUPPRESS
    namespace = parser.parse_args(argv)
    verb = namespace.verb_parser
    return {
        action.option_strings[0] if action.option_strings else (action.metavar or action.dest.upper())
        for action in verb._actions
        if action.dest in vars(namespace) and not isinstance(action, argparse._SubParsersAction)
    }


EMPTY_ASKS = {  # what an argument given as '' should have been: by metavar, else by dest
    "RUN": "a run directory",
    "RUN_OR_SWEEP": "a run or sweep directory",
    "CONFIG|RUN": "a .toml config or a run directory",
    "SOURCE": "a corpus, e.g. brown:R or persona.txt",
    "PATH": "the path of a UTF-8 text file ('-': standard input)",
    "MODEL": "a local transformers model directory or .gguf file",
    "DIR": "a folder",
    "OUT": "the path of the new folder",
    "FILE": "the path of the file to write",
    "OPTION": "an #SBATCH option, e.g. --sbatch=--partition=gpu",
    "SELECTION": "what trains (self_area, self_area+norms, all, or a plugin's parameters)",
    "PROMPT": "some text",
    "STEP": "a checkpoint, e.g. 200 or step_000200 (RUN/checkpoints holds them)",
    "run": "a run directory",
    "config": "a .toml config file",
    "out": "a path ('.' for the working directory)",
    "suite": "a suite file (.toml or .jsonl), or leave --suite out for the bundled suite",
    "name": "a name",
    "device": "auto, cpu, cuda, cuda:N or mps",
    "tasks": "comma-separated task names",
    "include_path": "a folder of task YAMLs",
    "prompt": "some text",
    "clean": "some text",
    "corrupt": "some text",
    "answer": "one token's text",
    "wrong": "one token's text",
}


OUTPUT_DESTS = ("out", "slurm")  # arguments that name a file or folder slmlab writes


def refuse_unusable_arguments(args: argparse.Namespace, given: set[str]) -> None:
    """Refuse, in one line, an argument `given` as '' (`--out ''`, `--slurm "$UNSET"`), or an output
    given as '-'. No argument of slmlab takes an empty value: read as a path it was the working
    directory, or taken for an option not given, its default ran in silence (a sweep ran instead of
    writing its SLURM script; `prompts --suite ''` ran the bundled suite). '-' reads standard input
    where an option takes a text (--text, --prompt-file), but an output is a file or folder: it
    wrote one named '-'; an output that is a pipe or a device (/dev/null, as root) was replaced by
    a file."""
    for action in args.verb_parser._actions:
        name = action.option_strings[0] if action.option_strings else (action.metavar or action.dest.upper())
        value = getattr(args, action.dest, None)
        if name not in given:
            continue
        if "" in (value if isinstance(value, list) else [value]):
            ask = EMPTY_ASKS.get(action.metavar) or EMPTY_ASKS.get(action.dest, "a value")
            raise ConfigError(f"{name} is empty: give {ask}")
        if action.dest in OUTPUT_DESTS and value == "-":
            raise ConfigError(
                f"{name} -: slmlab writes a file or folder there, not standard output: name a path (./- for a file named '-')"
            )
        if action.dest in OUTPUT_DESTS and isinstance(value, str) and (kind := file_kind(value)) in ("pipe", "device"):
            raise ConfigError(
                f"{name} {value} is a {kind}: slmlab writes a file or folder there (and would replace it): name a path"
            )


def check_option_rules(args: argparse.Namespace, given: set[str]) -> None:
    """Refuse an option the verb would ignore (option_rules), in one line that says what to do:
    two options that contradict each other first, then one given without the option it needs."""
    for option, other, why in args.option_conflicts:
        if option in given and other in given:
            raise ConfigError(f"{option} and {other} do not go together ({why}): remove one")
    for option, needed in args.option_needs.items():
        alternatives = (needed,) if isinstance(needed, str) else needed
        if option in given and not given & set(alternatives):
            add = alternatives[0] if len(alternatives) == 1 else "one of them"
            raise ConfigError(f"{option} applies only with {' or '.join(alternatives)}: add {add}, or remove {option}")


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto (the default: CUDA, else MPS, else CPU), cpu, cuda, cuda:N, mps")


def add_seed(parser: argparse.ArgumentParser, default: int = 0, help: str = "random seed") -> None:
    parser.add_argument("--seed", type=seed, default=default, help=f"{help}, 0 to 2**64 - 1 (default {default})")


def add_int8(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--int8", action="store_true", help="the run's int8 model (slmlab quantize RUN --int8)")


def add_compile(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--compile",
        action="store_true",
        help="decode through torch.compile: seconds of compiling first, then faster steps on small models (docs/performance.md)",
    )


def add_checkpoint(parser: argparse.ArgumentParser) -> None:
    """--checkpoint step_NNNNNN: read one of the run's checkpoints instead of its final weights."""
    parser.add_argument(
        "--checkpoint",
        metavar="STEP",
        type=checkpoint_name,
        help="read this checkpoint of the run (e.g. 200 or step_000200; see RUN/checkpoints) instead of its final weights",
    )


def add_out(parser: argparse.ArgumentParser, what: str, folder: bool = False) -> None:
    """--out: a file, or with `folder` a folder the verb writes several files into."""
    parser.add_argument("--out", default="", type=output_folder if folder else str, help=what)


def add_sampling(parser: argparse.ArgumentParser, max_new_tokens: int = 200) -> None:
    parser.add_argument(
        "--max-new-tokens", type=positive_int, default=max_new_tokens, help=f"tokens to generate (default {max_new_tokens})"
    )
    parser.add_argument(
        "--temperature", type=non_negative_float, default=0.8, help="softmax temperature, 0 = greedy (default 0.8)"
    )
    parser.add_argument("--top-k", type=non_negative_int, default=0, help="keep the k most likely tokens (default 0 = all)")
    parser.add_argument("--top-p", type=top_p, default=1.0, help="nucleus sampling threshold in (0, 1] (default 1 = off)")
    parser.add_argument(
        "--ignore-eos",
        action="store_true",
        help="sample past the end-of-text token ([EOS], <|endoftext|>) of a BPE or GPT-2 tokenizer (default: stop there)",
    )


def check_greedy_options(args: argparse.Namespace) -> None:
    """--temperature 0 is greedy decoding: the most likely token every step, the same text every
    time. Filters of the sampled distribution, a seed and several samples would be ignored or
    repeated."""
    from ..model.sampling import greedy_ignores

    ignored = greedy_ignores(
        args.temperature, args.top_k, args.top_p, args.seed, spell=lambda name: "--" + name.replace("_", "-")
    )
    if ignored:
        raise ConfigError(ignored)
    if args.temperature == 0 and args.num_samples > 1:
        raise ConfigError(
            f"--temperature 0 (greedy decoding) gives the same text every time, so --num-samples {args.num_samples} "
            "would print copies: give a temperature > 0, or drop --num-samples"
        )


def load_run_config(config: str, extra: list[str], name: str | None = None):
    """CONFIG with dotted overrides (and --name) applied, checked."""
    from ..config import load_config, parse_overrides

    overrides = parse_overrides(extra)
    if name is not None:  # an explicit --name "" is checked (and refused), not ignored
        overrides["name"] = name
    return load_config(config, overrides)


def configs_to_inspect(config: str, extra: list[str]) -> dict[str, object]:
    """What `check`, `info` and `diagnose` look at: {CONFIG: its run config} for a run config, or
    {variant: its run config at its first seed} for a sweep config (overrides apply to every run)."""
    from ..config import parse_overrides, read_toml

    if Path(config).is_file() and "variants" in read_toml(config):
        from ..experiments.sweep_config import first_seed_jobs, load_sweep

        _, jobs = load_sweep(config, parse_overrides(extra))
        return {job.variant: job.config for job in first_seed_jobs(jobs)}
    return {config: load_run_config(config, extra)}


def check_overrides(args: argparse.Namespace, overrides: list[str]) -> None:
    """Refuse config overrides the verb would not read (add_verb's `overrides`)."""
    if overrides and not args.takes_overrides:
        raise SlmlabError(f"{args.verb_name} takes no config overrides, got {' '.join(overrides)}")
    keys = [arg[2:].split("=", 1)[0] for arg in overrides if arg.startswith("--")]
    if isinstance(args.takes_overrides, str):
        unread = [key for key in keys if key != args.takes_overrides and not key.startswith(args.takes_overrides + ".")]
        if unread:
            raise SlmlabError(f"{args.verb_name} reads only {args.takes_overrides}.* settings, so {unread} would change nothing")
    elif isinstance(args.takes_overrides, tuple):
        unread = [key for key in keys if key not in args.takes_overrides]
        if unread:
            read = " and ".join(args.takes_overrides)
            raise SlmlabError(f"{args.verb_name} reads only the settings {read}, so {unread} would change nothing")
