"""How a verb's options may be spelled: underscores for its dashes (as overrides and nanoGPT's
flags are written), --out-dir for the --out_dir override, values after a bare -- left alone, and
an option it does not take refused by the verb, naming its closest one."""

from __future__ import annotations

import pytest

from slmlab.config import load_config
from tests.test_bad_arguments import _exit_code


def test_a_verb_option_spelled_with_underscores_is_the_dashed_option(micro_toml, capsys):
    """Overrides take underscores (--out_dir, --train.batch_size) and so do nanoGPT's flags: a
    verb's own --batch-size given as --batch_size (or --batch_size=4) is the same option."""
    assert _exit_code(["info", str(micro_toml), "--batch-size", "4", "--seq-len", "8"]) == 0
    dashed = capsys.readouterr().out
    assert _exit_code(["info", str(micro_toml), "--batch_size", "4", "--seq_len=8"]) == 0
    assert capsys.readouterr().out == dashed
    assert _exit_code(["info", str(micro_toml), "--batch-size", "5", "--seq-len", "8"]) == 0
    assert capsys.readouterr().out != dashed  # the option is read, not dropped


def test_after_a_bare_double_dash_every_argument_is_a_value_as_written():
    from slmlab.cli.main import build_parser, split_overrides
    from slmlab.cli.options import dashed_options

    argv = ["generate", "RUN", "--top_k", "5", "--prompt", "--", "--top_k", "--model.n_layer", "--out-dir"]
    own, overrides = split_overrides(argv, build_parser())
    assert overrides == [] and own == argv
    assert dashed_options(build_parser(), own) == ["generate", "RUN", "--top-k", "5", "--prompt", *argv[5:]]


def test_out_dir_spelled_with_a_dash_is_the_override(micro_toml, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    assert _exit_code(["train", str(micro_toml), "--out-dir", str(elsewhere), "--train.steps", "2", "--no-progress"]) == 0
    assert (elsewhere / load_config(micro_toml).name / "config.json").is_file()


@pytest.mark.parametrize(
    "argv, says",
    [
        (["info", "CONFIG", "--batch-sise", "4"], "unrecognized arguments: --batch-sise 4 (did you mean --batch-size?)"),
        (["generate", "RUN", "--prompt", "a", "--max_new_tokenz", "3"], "(did you mean --max-new-tokens?)"),
        (["info", "CONFIG", "stray"], "slmlab info: error: unrecognized arguments: stray (see slmlab info --help)"),
        (["info", "CONFIG", "--heads", "1"], "slmlab info: error: unrecognized arguments: --heads 1 (see slmlab info --help)"),
        (["info", "CONFIG", "--head", "1"], "unrecognized arguments: --head 1 (did you mean --model.head?)"),  # a setting
        (
            ["eval", "RUN", "--prompt-file", "p"],
            "unrecognized arguments: --prompt-file p (see slmlab eval --help)",
        ),  # not --rope-scale
        # another tool's name for an option: nanoGPT's sample.py --start, Hugging Face's max_length
        (
            ["generate", "RUN", "--prompt", "a", "--start", "ROMEO"],
            "unrecognized arguments: --start ROMEO (did you mean --prompt?)",
        ),
        (["generate", "RUN", "--prompt", "a", "--max_length", "9"], "(did you mean --max-new-tokens?)"),
        # a positional argument given as an option: '--out (did you mean --layout?)' sent users astray
        (
            ["export", "RUN", "--to", "hf", "--out", "x"],
            "unrecognized arguments: --out (give OUT without --out: slmlab export run OUT)",
        ),
        (["train", "--config", "CONFIG"], "(give config without --config: slmlab train config)"),
        # a verb or a choice: the choices were listed, the one meant was not named
        (["trian", "CONFIG"], "argument verb: invalid choice: 'trian' (choose from "),
        (["trian", "CONFIG"], ") (did you mean 'train'?) (see slmlab --help)"),
        (["sample", "RUN"], "(did you mean 'generate'?)"),  # nanoGPT's sample.py
        (["Persona_Eval", "RUN"], "(did you mean 'persona-eval'?)"),  # case, and an underscore for the dash
        (["convert", "RUN"], "(did you mean 'export'?)"),  # litgpt convert
        (["viz", "atention", "RUN"], "(did you mean 'attention'?) (see slmlab viz --help)"),
        (["export", "RUN", "--to", "HF", "--out", "x"], "(did you mean 'hf'?) (see slmlab export --help)"),
        (["bench", "RUN"], "'data', 'tokenizer') (see slmlab --help)"),  # nothing close: the list alone
    ],
)
def test_an_unknown_option_names_the_verbs_closest_one(argv, says, micro_toml, tmp_path, capsys):
    names = {"CONFIG": str(micro_toml), "RUN": str(tmp_path / "none")}
    assert _exit_code([names.get(a, a) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and "\n" not in err


def test_a_section_given_as_a_table_on_the_command_line_sets_the_keys_it_names(micro_toml, capsys):
    """`--model '{n_layer = 2}'`, as docs/reliability.md shows it, was 'unrecognized arguments':
    only dotted keys were taken for overrides. A verb's own option of the same name stays its own
    (persona --train SELECTION)."""
    from slmlab.cli.main import build_parser, split_overrides

    assert _exit_code(["info", str(micro_toml), "--model", "{n_layer = 3, smat = {use_S = true}}"]) == 0
    table = capsys.readouterr().out
    assert "3 layers" in table and "SemanticAttention" in table
    assert _exit_code(["info", str(micro_toml), "--model", "{n_layer = 3}", "--model.n_layer", "2"]) == 0  # the last wins
    assert "2 layers" in capsys.readouterr().out
    assert _exit_code(["data", "prepare", str(micro_toml), "--model", "{n_layer = 3}"]) == 2
    assert "data prepare reads only data.* settings, so ['model'] would change nothing" in capsys.readouterr().err
    argv = ["persona", "RUN", "--persona-data", "x", "--train", "all", "--data", "{seq_len = 8}"]
    assert split_overrides(argv, build_parser()) == (argv[:6], argv[6:])


def test_one_setting_is_spelled_one_way_in_every_verb():
    """`ablate` took the count of validation batches as --n-batches where `eval` and `quantize`
    take --batches (`ablate --batches 40` was refused). Every option is spelled one way across the
    verbs (one dest, one first spelling), and every count of batches is --batches; --n-batches
    still reads as it."""
    from slmlab.cli.main import build_parser
    from slmlab.cli.options import parser_tree

    spellings: dict[str, set[str]] = {}
    for parser in parser_tree(build_parser()):
        for action in parser._actions:
            if action.option_strings and action.dest != "help":
                spellings.setdefault(action.dest, set()).add(action.option_strings[0])
    assert {dest: s for dest, s in spellings.items() if len(s) > 1} == {}
    assert {dest: s for dest, s in spellings.items() if dest.endswith("batches")} == {"batches": {"--batches"}}
    assert build_parser().parse_args(["ablate", "runs/x", "--n-batches", "7"]).batches == 7
