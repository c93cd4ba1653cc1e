"""Typed configs: TOML loading, dotted overrides, and one-line errors for bad input."""

from __future__ import annotations

import itertools
import re

import pytest

from slmlab.config import ConfigError, ModelConfig, config_from_dict, load_config, parse_overrides


@pytest.fixture
def toml_file(tmp_path):
    path = tmp_path / "exp.toml"
    path.write_text("[model]\nn_layer = 2\nd_model = 64\nn_head = 4\n\n[data]\nseq_len = 64\n\n[train]\nsteps = 10\n")
    return path


def test_toml_values_and_defaults_are_loaded(toml_file):
    cfg = load_config(toml_file)
    assert cfg.name == "exp" and cfg.model.n_layer == 2 and cfg.model.d_model == 64
    assert cfg.train.steps == 10 and cfg.model.ff_dim == 256 and cfg.model.head_dim == 16


def test_a_config_and_a_prompt_suite_saved_with_a_byte_order_mark_load(toml_file, tmp_path):
    """Windows editors start UTF-8 files with U+FEFF, which TOML and JSON refuse as text."""
    from slmlab.evals.prompts import load_suite

    toml_file.write_text("\ufeff" + toml_file.read_text(), encoding="utf-8")
    assert load_config(toml_file).model.n_layer == 2
    for name, text in [("s.jsonl", '{"id": "a", "prompt": "x"}\n'), ("s.toml", '[[prompt]]\nid = "a"\nprompt = "x"\n')]:
        (tmp_path / name).write_text("\ufeff" + text, encoding="utf-8")
        assert [p.id for p in load_suite(tmp_path / name)] == ["a"]


def test_dotted_overrides_of_every_kind(toml_file):
    cfg = load_config(
        toml_file,
        [
            "--model.n_layer",
            "4",
            "--train.lr=3e-4",
            "--data.genres",
            '["J", "E"]',
            "--model.tie_embeddings",
            "false",
            "--data.source",
            "brown",
            "--data.mixture.J",
            "2",
        ],
    )
    assert cfg.model.n_layer == 4 and cfg.train.lr == 3e-4 and cfg.data.genres == ["J", "E"]
    assert cfg.model.tie_embeddings is False and cfg.data.source == "brown" and cfg.data.mixture == {"J": 2.0}


def test_a_table_given_for_a_section_sets_its_keys_and_keeps_the_rest(toml_file, tmp_path):
    """`--model '{n_layer = 3}'` and a sweep's `[variants.a.model]` replaced the whole [model]
    section by a table of one key: d_model and n_head fell back to their defaults in silence."""
    from slmlab.experiments.sweep_config import load_sweep

    cfg = load_config(toml_file, ["--model", "{n_layer = 3, smat = {use_S = true}}"])
    assert (cfg.model.n_layer, cfg.model.d_model, cfg.model.n_head, cfg.model.smat.use_S) == (3, 64, 4, True)
    assert load_config(toml_file, ["--train", "{}"]).train.steps == 1000  # an empty table drops the section's settings
    cfg = load_config(toml_file, {"data": {"source": "brown", "mixture": {"J": 1}}})
    assert cfg.data.seq_len == 64 and cfg.data.mixture == {"J": 1.0}  # a field's own table is its value
    sweep = tmp_path / "s.toml"
    sweep.write_text(
        f'name = "s"\nbase = "{toml_file}"\n[overrides.train]\nlr = 0.01\n'
        "[variants.deep.model]\nn_layer = 3\n[variants.wide]\nmodel = {d_model = 128}\n"
    )
    models = {job.variant: job.config.model for job in load_sweep(sweep)[1]}
    assert (models["deep"].n_layer, models["deep"].d_model, models["wide"].n_layer, models["wide"].d_model) == (3, 64, 2, 128)
    assert all(job.config.train.steps == 10 and job.config.train.lr == 0.01 for job in load_sweep(sweep)[1])


def test_a_table_replaces_a_field_that_holds_a_table(toml_file):
    base = load_config(toml_file, ["--data.source", "brown", "--data.mixture", "{J = 1, E = 2}"])
    assert base.data.mixture == {"J": 1.0, "E": 2.0}
    from slmlab.config import apply_overrides, config_from_dict

    changed = config_from_dict(apply_overrides(base.to_dict(), {"data.mixture": {"R": 1}}))
    assert changed.data.mixture == {"R": 1.0}


def test_single_value_for_a_list_becomes_a_list(toml_file):
    assert load_config(toml_file, ["--data.genres", "R"]).data.genres == ["R"]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["--model.n_layr", "4"], "unknown config key 'model.n_layr' (did you mean 'model.n_layer'?)"),
        (["--trian.steps", "4"], "unknown config key 'trian' (did you mean 'train'?)"),
        (["--model.smat.enabled", "true"], "'model.smat.enabled' (model.smat holds use_S, use_G, s_dim,"),  # nothing close
        (["--model.n_layer", "four"], "model.n_layer: expected int, got str 'four'"),
        (["--model.n_layer", "2.5"], "model.n_layer: expected int, got float 2.5"),
        (["--model.d_model", "66"], "model.d_model = 66 is not divisible by model.n_head = 4"),
        (["--data.seq_len", "512"], "data.seq_len = 512 exceeds model.block_size = 256"),
        (["--model.norm", "rmsnrom"], "model.norm = 'rmsnrom' is not one of layernorm, rmsnorm (did you mean 'rmsnorm'?)"),
        (["--train.steps", "0"], "train.steps must be > 0, got 0"),
        (["--model.dropout", "1.5"], "model.dropout must be in [0, 1), got 1.5"),
        # all-zero weights: trained, the loss stayed at ln V to the last digit, in silence
        (["--model.init_std", "0"], "model.init_std must be > 0 (at 0 no weight ever receives a gradient), got 0"),
        (["--data.val_fraction", "0"], "data.val_fraction must be in (0, 1), got 0"),
        (["--data.tokenizer", "wordpiece"], "data.tokenizer = 'wordpiece' is not one of byte, char, bpe, gpt2"),
        (["--model.n_layer.x", "1"], "cannot set 'model.n_layer.x': 'n_layer' is not a section"),
        (["--data.mixture.J", "-1"], "data.mixture.J must be >= 0, got -1.0"),
        (
            ["--model.qxqx_wvwv.enabled", "true"],  # close to no section a test registers
            "a plugin's section needs the plugin in plugins = [...])",
        ),
        (["--data.genres", "[J, E]"], """data.genres: '[J, E]' is not a TOML list; quote its strings: '["J", "E"]'"""),
        # settings the choice they belong to would ignore (model.rope_scale with learned positions)
        (["--model.rope_scale", "2"], 'model.rope_scale = 2.0 is ignored with model.pos = "learned"'),
        (["--model.rope_theta", "500"], 'model.rope_theta = 500.0 is ignored with model.pos = "learned"'),
        (["--model.pos", "sinusoidal", "--model.rope_fraction", "0.5"], "model.rope_fraction = 0.5 is ignored with model.pos"),
        (["--model.student_t_nu", "3"], 'model.student_t_nu = 3.0 is ignored with model.head = "linear"'),
        (["--data.vocab_size", "512"], 'data.vocab_size = 512 is ignored with data.tokenizer = "char"'),
        (["--data.tiktoken_file", "gpt2.tiktoken"], 'data.tiktoken_file = "gpt2.tiktoken" is ignored with data.tokenizer'),
        (["--train.decay_fraction", "0.5"], 'train.decay_fraction = 0.5 is ignored with train.schedule = "cosine"'),
        (
            ["--train.checkpoint_every", "0", "--train.keep_checkpoints", "5"],
            "train.keep_checkpoints = 5 is ignored with train.checkpoint_every = 0",
        ),
        (["--model.local_block", "16"], "model.local_block = 16 is ignored with full attention in every layer"),
        (["--train.tracker_project", "lab"], 'train.tracker_project = "lab" is ignored with train.trackers = []'),
        (["--train.tracker_group", "g"], 'train.tracker_group = "g" is ignored with train.trackers = []'),
        (["--train.tracker_tags", '["a"]'], 'train.tracker_tags = ["a"] is ignored with train.trackers = []'),
        # a variant section's setting read only under a switch that is off (registry.Section.read_with)
        (["--model.smat.s_dim", "16"], "model.smat.s_dim = 16 is read only with model.smat.use_S or model.smat.use_G = true"),
        (
            ["--model.smat.use_S", "true", "--model.smat.mu_init", "1"],
            "model.smat.mu_init = 1.0 is read only with model.smat.use_G",
        ),
        (
            ["--model.smat.use_G", "true", "--model.smat.lambda_raw_init", "1"],
            "lambda_raw_init = 1.0 is read only with model.smat.use_S",
        ),
        (["--model.self_area.self_dim", "8"], "model.self_area.self_dim = 8 is read only with model.self_area.enabled = true"),
        (["--train.batch_size", str(10**21)], "train.batch_size = 1000000000000000000000 is too large"),  # OverflowError
        (["--train.grad_accum", str(2**63)], "is too large: give a whole number below 2**63"),
        (["--train.threads", "100000"], "train.threads = 100000 is more threads than a machine can start"),  # segfault
        (  # decoupled decay at lr * wd >= 1 zeroes or flips every decayed weight each step: NaN by step 10
            ["--train.lr", "0.01", "--train.weight_decay", "200"],
            "train.lr * train.weight_decay = 2: each step multiplies every decayed weight by 1 - lr * weight_decay <= 0, "
            "zeroing or flipping it; keep train.weight_decay below 1 / train.lr = 100",
        ),
        (["--model.pos", "rope", "--model.rope_scale", "1e-300"], "model.rope_scale = 1e-300 stretches 256 positions"),
        (["--model.global_every", "2"], "model.global_every = 2 makes every k-th layer of a local model.attention full"),
        (  # layers k-1, 2k-1, ... are full: with fewer layers than k, none is, and the model stays all local
            ["--model.attention", "block_local", "--model.n_layer", "2", "--model.global_every", "3"],
            "model.global_every = 3 makes every k-th layer full, but the model has 2 layers: it changes nothing",
        ),
        (
            ["--model.attention", "block_local", "--model.attention_layers", '["full", "block_local"]'],
            "model.attention = 'block_local' is ignored: model.attention_layers names every layer's pattern",
        ),
        (  # layer k-1 for k = 1: every layer
            ["--model.attention", "block_local", "--model.global_every", "1"],
            "model.attention = 'block_local' is ignored: model.global_every = 1 makes every layer full attention",
        ),
    ],
)
def test_bad_values_are_rejected_in_one_line_naming_the_key(toml_file, overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(toml_file, overrides)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_override_syntax_and_missing_files(tmp_path, toml_file):
    with pytest.raises(ConfigError, match="expected an override like"):
        parse_overrides(["model.n_layer", "4"])
    with pytest.raises(ConfigError, match="has no value"):
        parse_overrides(["--model.n_layer"])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[model\nn_layer = 2")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(broken)
    latin1 = tmp_path / "latin1.toml"  # the message was Python's codec error inside "invalid TOML (...)"
    latin1.write_bytes('name = "a"\n# café\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1.toml is not UTF-8 text \(bad byte 0xe9 on line 2, byte offset 16\)"):
        load_config(latin1)
    utf16 = tmp_path / "utf16.toml"
    utf16.write_text('name = "a"\n', encoding="utf-16")
    with pytest.raises(ConfigError, match=r"utf16.toml is UTF-16 text .*; re-encode it as UTF-8$"):
        load_config(utf16)
    utf16.write_text('name = "a"\n', encoding="utf-32")
    with pytest.raises(ConfigError, match=r"utf16.toml is UTF-32 text \(it starts with a UTF-32 byte-order mark\)"):
        load_config(utf16)
    utf16.write_bytes('name = "a"\n'.encode("utf-16-le"))  # no byte-order mark: it was "invalid TOML (Invalid statement)"
    with pytest.raises(ConfigError, match=r"utf16.toml is not text: 50% of its first 22 bytes are NUL, as in UTF-16"):
        load_config(utf16)
    for name, text, kind in [("c.json", '{"model": {"n_layer": 2}}', "JSON"), ("c.yaml", "model:\n  n_layer: 2\n", "YAML")]:
        (tmp_path / name).write_text(text)  # another tool's config format: it said only "invalid TOML (Invalid statement)"
        with pytest.raises(
            ConfigError, match=rf"{name}: slmlab reads configs as TOML, not {kind} \(.*\): write `key = value` lines"
        ):
            load_config(tmp_path / name)


@pytest.mark.parametrize("values", [[1, 2], "model", None])
def test_a_config_that_is_not_a_table_is_one_clear_error(values):
    """An API caller's list or string failed inside with AttributeError."""
    with pytest.raises(ConfigError, match=r"^a config is a table of settings \(name, model, data, train, ...\), not "):
        config_from_dict(values)


def test_shipped_presets_load_and_are_valid():
    from pathlib import Path

    from slmlab.config import read_toml
    from slmlab.experiments.sweep_config import load_sweep

    presets = sorted(Path(__file__).parents[1].glob("configs/*.toml"))
    assert len(presets) >= 6, "configs/ is missing presets"
    for preset in presets:
        if "base" in read_toml(preset):
            _, jobs = load_sweep(preset)
            assert len({job.run.path for job in jobs}) == len(jobs)
        else:
            load_config(preset)


def test_a_setting_is_kept_where_its_choice_uses_it(toml_file, tmp_path):
    assert load_config(toml_file, ["--model.pos", "rope", "--model.rope_scale", "2"]).model.rope_scale == 2.0
    assert load_config(toml_file, ["--train.schedule", "wsd", "--train.decay_fraction", "0.5"]).train.decay_fraction == 0.5
    assert load_config(toml_file, ["--model.attention", "block_local", "--model.local_block", "16"]).model.local_block == 16
    layered = ["--model.attention_layers", '["block_local", "full"]', "--model.local_block", "16"]
    assert load_config(toml_file, layered).model.local_block == 16
    curriculum = tmp_path / "curriculum.toml"  # local_block serves phase B only: kept
    curriculum.write_text(
        toml_file.read_text().replace("[model]\n", '[model]\npos = "rope"\nlocal_block = 16\n')
        + '[[phases]]\nname = "A"\n[[phases]]\nname = "B"\nsteps = 2\nattention = "block_local"\n'
    )
    assert load_config(curriculum).phase(1).model.local_block == 16


def test_a_setting_the_first_phase_replaces_is_refused(toml_file, tmp_path):
    """Each phase starts from the one before it, never from the run's own values: with phases that
    train 2 and 3 steps, `--train.steps 5000` trained 5 steps in silence."""
    curriculum = tmp_path / "curriculum.toml"
    curriculum.write_text(
        toml_file.read_text().replace("steps = 10\n", "")
        + '[[phases]]\nname = "A"\nsteps = 2\nlr = 1e-3\n[[phases]]\nname = "B"\nsteps = 3\nwarmup_steps = 1\n'
    )
    assert [phase.train.steps for phase in load_config(curriculum).phase_configs()] == [2, 3]
    for override, phase_value in ((["--train.steps", "5000"], "steps = 2"), (["--train.lr", "0.01"], "lr = 0.001")):
        with pytest.raises(
            ConfigError, match=rf"{override[0][2:]} = .* is ignored: the curriculum's first phase \(A\) sets {phase_value}"
        ):
            load_config(curriculum, override)
    assert load_config(curriculum, ["--train.steps", "2"]).phase(0).train.steps == 2  # the phase's own value: no change
    assert load_config(curriculum, ["--train.warmup_steps", "5"]).phase(0).train.warmup_steps == 5  # phase A reads it


@pytest.mark.parametrize(
    "model, phase_b, message",
    [
        ("", "rope_scale = 2.0", 'model.rope_scale = 2.0 is ignored with model.pos = "learned"'),
        ('attention_layers = ["full", "full"]', 'attention = "block_local"', "model.attention = 'block_local' is ignored: "),
        ("global_every = 1", 'attention = "block_local"', "model.attention = 'block_local' is ignored: model.global_every = 1"),
    ],
)
def test_a_setting_a_phase_changes_that_the_phase_ignores_is_refused(toml_file, tmp_path, model, phase_b, message):
    """A setting counts for a curriculum if any phase reads it; one that a phase changes and that
    phase itself ignores trained the phase as if the line were not there (seed 002's phase B scales
    RoPE: on a model with learned positions it scaled nothing)."""
    curriculum = tmp_path / "curriculum.toml"
    curriculum.write_text(
        toml_file.read_text().replace("[model]\n", f"[model]\n{model}\n").replace("steps = 10\n", "")
        + f'[[phases]]\nname = "A"\nsteps = 2\n[[phases]]\nname = "B"\nsteps = 2\n{phase_b}\n'
    )
    with pytest.raises(ConfigError, match=re.escape(f"phases[1] (B): {message}")):
        load_config(curriculum)
    if "rope_scale" in phase_b:  # read where the model rotates: kept
        curriculum.write_text(curriculum.read_text().replace("[model]\n", '[model]\npos = "rope"\n'))
        assert load_config(curriculum).phase(1).model.rope_scale == 2.0


def test_a_recorded_run_config_with_an_ignored_setting_still_loads(toml_file):
    """A run trained before the check recorded such a setting: reading the run back never fails on it."""
    from slmlab.config import config_from_dict

    values = load_config(toml_file).to_dict()
    values["model"]["rope_scale"] = 2.0
    assert config_from_dict(values).model.rope_scale == 2.0


@pytest.mark.parametrize("arch", ["decoder", "tape"])
@pytest.mark.parametrize(
    "fields, message",
    [
        ({"n_head": 3, "d_model": 32}, r"model.d_model = 32 is not divisible by model.n_head = 3"),
        ({"n_layer": 0}, r"model.n_layer must be > 0, got 0"),
        ({"dropout": 2.0}, r"model.dropout must be in \[0, 1\), got 2.0"),
        ({"vocab_size": 0}, r"model.vocab_size must be set"),
    ],
)
def test_a_model_config_made_in_code_meets_the_rules_when_built(arch, fields, message):
    """build_model(ModelConfig(n_head=3, d_model=32)) built a model whose forward failed inside a
    reshape; n_layer = 0 built a model of no layers."""
    from slmlab.config import ModelConfig
    from slmlab.model import build_model

    with pytest.raises(ConfigError, match=message):
        build_model(ModelConfig(arch=arch, **{"vocab_size": 50, **fields}))


@pytest.mark.parametrize("attention", ["full", "block_local"])
def test_one_layers_pattern_is_the_lists_entry(attention):
    """layer_pattern(l) and pattern_names are what layer_patterns lists: each block asked for its
    pattern from a list of all n_layer patterns, n_layer lists in all (hours at 10**5 layers)."""
    for n_layer, every in itertools.product(range(1, 8), range(8)):
        m = ModelConfig(n_layer=n_layer, global_every=every, attention=attention)
        patterns = m.layer_patterns
        assert [m.layer_pattern(layer) for layer in range(n_layer)] == patterns and m.pattern_names == set(patterns)
    m = ModelConfig(n_layer=3, attention_layers=["block_local", "full", "block_local"])
    assert [m.layer_pattern(layer) for layer in range(3)] == m.layer_patterns and m.pattern_names == {"full", "block_local"}


def test_a_runs_recorded_config_given_as_a_config_names_the_run(tmp_path):
    """`slmlab check RUN/config.json` said "invalid TOML (Invalid statement (at line 1, column 1))"."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text('{"name": "run"}')
    with pytest.raises(ConfigError, match=r"config.json is a run's recorded settings, not a TOML config: give the run's folder"):
        load_config(run / "config.json")
