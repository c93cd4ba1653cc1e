"""`slmlab new-variant`: the skeleton it writes passes `slmlab check` as written, for every kind;
names that would break a file it writes, or shadow a model setting, are refused before anything
is written."""

from __future__ import annotations

import re

import pytest

from slmlab.analysis.conformance import run_checks
from slmlab.analysis.scaffold import write_variant
from slmlab.cli import main
from slmlab.config import ConfigError, load_config


@pytest.mark.parametrize("kind", ["attention-extension", "output-gate", "mlp"])
@pytest.mark.slow
def test_the_scaffold_passes_its_own_check(tmp_path, capsys, kind):
    name = f"idea_{kind.replace('-', '_')}"
    written = write_variant(name, kind, tmp_path / "ideas")
    assert sorted(p.name for p in written) == sorted([f"{name}.py", f"{name}.toml", f"{name}_sweep.toml"])
    source = (tmp_path / "ideas" / f"{name}.py").read_text()
    assert f"class {''.join(p.capitalize() for p in name.split('_'))}Config" in source
    assert ("naive_reference" in source) == (kind != "mlp")  # slmlab check's references compare attention layers
    assert main(["check", str(tmp_path / "ideas" / f"{name}_sweep.toml")]) == 0
    out = capsys.readouterr().out
    assert "24/24 properties hold" in out
    for row in ("| naive reference", "| left-padded batch"):  # the idea's own column: held to both
        assert next(line for line in out.splitlines() if line.startswith(row)).split("|")[3].strip() == "pass"
    if kind != "mlp":  # its reference masks by the layer's pattern: block-local layers are compared too
        cfg = load_config(tmp_path / "ideas" / f"{name}.toml", {"model.attention": "block_local", "model.local_block": 8})
        naive = {o.name: o.result for o in run_checks(cfg)[1]}["naive reference (float64)"]
        assert naive.passed is True and naive.figure.startswith("2 layers + whole model: "), naive.figure


def test_a_section_chosen_by_a_model_choice_is_read_only_while_chosen(tmp_path, capsys):
    """An MLP plugin's [model.<name>] set while model.mlp names another MLP changed nothing; it is
    refused, unless a sweep's variant chooses the plugin (the base config then sets it for that one)."""
    from dataclasses import make_dataclass

    from slmlab.registry import register_section

    write_variant("relu_sq", "mlp", tmp_path / "ideas")
    run = str(tmp_path / "ideas" / "relu_sq.toml")
    assert main(["check", run, "--model.mlp", "gelu", "--model.relu_sq.power", "3"]) == 2
    assert 'model.relu_sq.power = 3.0 is read only with model.mlp = "relu_sq"; remove it or choose it' in capsys.readouterr().err
    sweep = str(tmp_path / "ideas" / "relu_sq_sweep.toml")
    assert main(["sweep", sweep, "--dry-run", "--model.relu_sq.power", "3"]) == 0  # shared: the relu_sq variant reads it
    capsys.readouterr()
    with pytest.raises(ConfigError, match="chosen_by = 'model.bogus' is not a model choice: give one of model.pos"):
        register_section("bogus_section", make_dataclass("C", []), chosen_by="model.bogus")


def test_the_scaffold_refuses_bad_names_and_existing_files(tmp_path):
    with pytest.raises(ConfigError, match="lower-case Python identifier"):
        write_variant("My-Idea", "attention-extension", tmp_path)
    with pytest.raises(ConfigError, match="'class' is a Python keyword"):  # `import class` cannot be written
        write_variant("class", "attention-extension", tmp_path)
    with pytest.raises(ConfigError, match="taken by a built-in section"):
        write_variant("smat", "attention-extension", tmp_path)
    for taken in ("dropout", "head_dim", "sections", "to_dict"):  # cfg.model.<name> would read the field instead
        with pytest.raises(ConfigError, match=f"model.{taken} is already a model setting or attribute"):
            write_variant(taken, "attention-extension", tmp_path)
    with pytest.raises(ConfigError, match="not a public identifier"):
        write_variant("__init__", "attention-extension", tmp_path)  # would make the folder a package
    assert not any(tmp_path.iterdir())
    write_variant("twice", "output-gate", tmp_path)
    with pytest.raises(ConfigError, match="already exist.*--force"):
        write_variant("twice", "output-gate", tmp_path)
    write_variant("twice", "output-gate", tmp_path, force=True)


@pytest.mark.parametrize(
    "name, wrong",
    [
        ("intervention", "intervention.py bind Intervention twice"),
        ("hook_point", "hook_point.py bind HookPoint twice"),
        ("config_error", "config_error.py bind ConfigError twice"),
        ("exception", "exception.py bind Exception twice"),
        ("none", "none.py invalid Python"),
        ("baseline", "baseline_sweep.toml invalid (Cannot declare ('variants', 'baseline') twice"),
    ],
)
def test_the_scaffold_refuses_a_name_that_would_break_a_file_it_writes(tmp_path, name, wrong):
    """`intervention` wrote `class Intervention` over the slmlab class the plugin registers its
    intervention with, so the plugin failed to import; `hook_point` made all 11 properties fail;
    `none` wrote `class None`; `baseline` wrote a sweep declaring [variants.baseline] twice."""
    for kind in ("attention-extension", "output-gate", "mlp"):
        with pytest.raises(ConfigError, match=re.escape(f"variant name {name!r} would make {wrong}")):
            write_variant(name, kind, tmp_path)
    assert not any(tmp_path.iterdir())
