"""A setting given as another tool spells it, or as text where a number or true/false goes, is
answered with the spelling slmlab reads."""

from __future__ import annotations

import pytest

from slmlab.cli import main


@pytest.mark.parametrize(
    ("given", "says"),
    [  # nanoGPT's flags: a setting without its section, a Python boolean
        (["--n_layer", "2"], "unrecognized arguments: --n_layer 2 (did you mean --model.n_layer?)"),
        (["--lr=1e-3"], "(did you mean --train.lr?)"),
        (["--seq-len", "16"], "(did you mean --data.seq_len?)"),
        (["--train.compile=False"], "train.compile: write false, not 'False' (TOML's true and false are lower case)"),
        (["--train.compile", '"false"'], "train.compile: write false, not 'false' (text, not true or false)"),
        (["--train.steps", '"100"'], "train.steps: write 100, not '100' (text, not a number)"),
        (["--train.compile", "1"], "train.compile: expected true or false, got int 1"),
    ],
)
def test_a_setting_given_as_nanogpt_gives_it_is_answered_with_its_spelling_here(given, says, micro_toml, capsys):
    try:
        code = main(["train", str(micro_toml), "--no-progress", *given])
    except SystemExit as exit:  # argparse's own refusal
        code = exit.code
    assert code == 2 and says in capsys.readouterr().err
