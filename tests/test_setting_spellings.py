"""A setting given as another tool spells it, or as text where a number or true/false goes, is
answered with the spelling slmlab reads."""

from __future__ import annotations

import re

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
        # another tool's name for a setting (nanoGPT's, Hugging Face's, litgpt's): difflib had nothing to offer
        (["--n_embd", "64"], "unrecognized arguments: --n_embd 64 (did you mean --model.d_model?)"),
        (["--max_iters", "10"], "(did you mean --train.steps?)"),
        (["--min_lr", "1e-4"], "(did you mean --train.min_lr_ratio? a fraction of train.lr, not a rate)"),
        (["--s_dim", "4"], "(did you mean --model.smat.s_dim?)"),  # a variant section's setting
        (["--bf16"], '(did you mean --train.dtype? "bf16" or "fp32")'),  # Hugging Face's TrainingArguments
        (["--num_train_epochs", "3"], "(did you mean --train.steps? optimizer steps, not passes over the data)"),
    ],
)
def test_a_setting_given_as_nanogpt_gives_it_is_answered_with_its_spelling_here(given, says, micro_toml, capsys):
    try:
        code = main(["train", str(micro_toml), "--no-progress", *given])
    except SystemExit as exit:  # argparse's own refusal
        code = exit.code
    assert code == 2 and says in capsys.readouterr().err


@pytest.mark.parametrize(
    ("toml", "says"),
    [
        ("n_layer = 2", "unknown config key 'n_layer' (did you mean 'model.n_layer'?)"),  # was: 'name'
        ("[model]\nn_embd = 64", "unknown config key 'model.n_embd' (did you mean 'model.d_model'?)"),  # was: 'model.n_head'
        ("[model]\nhidden_size = 64", "(did you mean 'model.d_model'?)"),
        ("[model]\nnum_attention_heads = 4", "(did you mean 'model.n_head'?)"),
        ("[train]\nlearning_rate = 1e-3", "unknown config key 'train.learning_rate' (did you mean 'train.lr'?)"),
        ("[train]\nmax_iters = 10", "(did you mean 'train.steps'?)"),
        ("[train]\ndropout = 0.1", "unknown config key 'train.dropout' (did you mean 'model.dropout'?)"),
        ("[model]\ns_dim = 4", "(did you mean 'model.smat.s_dim'?)"),
        ('[[phases]]\nname = "A"\nmax_iters = 10', "unknown config key 'phases[0].max_iters' (did you mean 'phases[0].steps'?)"),
        ("[model]\nn_layr = 2", "(did you mean 'model.n_layer'?)"),  # a typo still gets the closest
    ],
)
def test_a_config_key_of_another_section_or_tool_names_the_setting_it_stands_for(toml, says, tmp_path):
    from slmlab.config import ConfigError, load_config

    (tmp_path / "c.toml").write_text(toml + "\n")
    with pytest.raises(ConfigError, match=re.escape(says)):
        load_config(tmp_path / "c.toml")


def test_a_sweep_tables_key_in_another_tools_spelling_is_named_in_that_table(tmp_path, micro_toml):
    """[tune] learning_rate is tune.lr there, not train.lr."""
    from slmlab.config import ConfigError
    from slmlab.experiments.sweep_config import load_sweep

    (tmp_path / "s.toml").write_text(
        f'name = "s"\nbase = "{micro_toml}"\nseeds = [0]\nbaseline = "a"\n[variants.a]\n[tune]\nlearning_rate = [1e-3]\n'
    )
    with pytest.raises(ConfigError, match=re.escape("unknown config key 'tune.learning_rate' (did you mean 'tune.lr'?)")):
        load_sweep(tmp_path / "s.toml")
    # a key of the table itself spelled nearly so comes first: a sweep's seeds, not the run's train.seed
    (tmp_path / "s.toml").write_text(f'name = "s"\nbase = "{micro_toml}"\nseed = 1\nbaseline = "a"\n[variants.a]\n')
    with pytest.raises(ConfigError, match=re.escape("unknown config key 'seed' (did you mean 'seeds'?)")):
        load_sweep(tmp_path / "s.toml")


def test_model_config_in_python_names_the_setting_another_tool_calls_otherwise():
    from slmlab.config import ConfigError, ModelConfig

    with pytest.raises(ConfigError, match=re.escape("unknown config key 'model.n_embd' (did you mean 'model.d_model'?)")):
        ModelConfig(n_embd=64)


@pytest.mark.parametrize(
    "given",  # spelled as a class name, or as PyTorch, Hugging Face or tiktoken call it: no hint, or a wrong one, before
    [
        "model.norm = RMSNorm: rmsnorm",
        "model.arch = Tape: tape",
        "model.pos = rotary: rope",
        "model.pos = absolute: learned",
        "model.attention = sliding_window: block_local",
        "model.attention = causal: full",
        "data.tokenizer = tiktoken: gpt2",
        "train.dtype = bfloat16: bf16",  # a Literal setting, checked by config.values
        "train.optimizer = sgd: ",  # nothing close: no guess
    ],
)
def test_a_value_another_tool_spells_otherwise_names_the_one_meant(given, micro_toml):
    from slmlab.config import ConfigError, load_config

    key, _, rest = given.partition(" = ")
    value, _, meant = rest.partition(": ")
    with pytest.raises(ConfigError) as error:
        load_config(micro_toml, {key: value})
    assert str(error.value).startswith(f"{key} = {value!r} is not one of ")
    assert str(error.value).endswith(f" (did you mean {meant!r}?)" if meant else "wolf")


def test_every_unknown_key_of_a_table_is_named_at_once(tmp_path):
    """A config written for nanoGPT has a dozen keys slmlab spells otherwise; they came one error
    at a time."""
    from slmlab.config import ConfigError, load_config

    (tmp_path / "c.toml").write_text("eval_interval = 250\nn_embd = 384\nalways_save_checkpoint = false\n")
    with pytest.raises(ConfigError) as error:
        load_config(tmp_path / "c.toml")
    assert str(error.value) == (
        "unknown config keys 'eval_interval' (did you mean 'train.eval_every'?), "
        "'n_embd' (did you mean 'model.d_model'?), 'always_save_checkpoint'"
    )
