"""Plugins named in a config: imported before the config is checked, recorded in the run (source
and sha256), never executed from a run without --trust-plugins, and a changed plugin is named.
The worked example (examples/plugins/gated_attention.py) trains, generates, ablates and sweeps."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from slmlab import plugins
from slmlab.config import ConfigError, load_config
from slmlab.errors import RunFileError
from slmlab.files import sha256_file
from slmlab.runs import RunDir, load_run
from slmlab.training import train
from tests.conftest import write_micro_toml

ROOT = Path(__file__).parents[1]
EXAMPLE = ROOT / "examples" / "plugins" / "gated_attention.py"


def plugin_toml(tmp_path: Path, corpus, plugin: Path, section: str = "[model.gated_attention]\nenabled = true\n") -> Path:
    """A micro run config in tmp_path/configs naming `plugin` relative to itself."""
    folder = tmp_path / "configs"
    folder.mkdir(exist_ok=True)
    path = write_micro_toml(folder / "gated.toml", corpus, tmp_path)
    relative = os.path.relpath(plugin, folder)
    path.write_text(f'plugins = ["{relative}"]\n' + path.read_text() + section)
    return path


def active_plugin(folder: Path, name: str, source: str) -> Path:
    """`source` written to folder/name.py and imported as a plugin (once per process: a module-scoped
    fixture's folder, since a second file registering the same names is refused)."""
    plugin = folder / f"{name}.py"
    plugin.write_text(source)
    plugins.activate([str(plugin)])
    return plugin


def slmlab(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != plugins.TRUST_VARIABLE}
    return subprocess.run(
        [sys.executable, "-m", "slmlab", *args], capture_output=True, text=True, env={**environment, **(env or {})}
    )


@pytest.fixture
def trained(tmp_path, text_corpus):
    """A 12-step run of the example plugin (trained in this process), and its config file."""
    config = plugin_toml(tmp_path, text_corpus, EXAMPLE)
    result = train(load_config(config), progress=False)
    return Path(result.run_dir), config


def test_the_plugin_is_imported_before_the_config_is_checked(tmp_path, text_corpus):
    cfg = load_config(plugin_toml(tmp_path, text_corpus, EXAMPLE))
    assert cfg.plugins == [str(EXAMPLE.resolve())]  # resolved against the config's folder
    from slmlab.plugins import resolve

    assert resolve(["~/ideas/x.py", "ideas/y.py", "a.module"], tmp_path) == [  # "~/x.py" was taken as tmp_path/~/x.py
        str(Path.home() / "ideas" / "x.py"),
        str(tmp_path.resolve() / "ideas" / "y.py"),
        "a.module",
    ]
    assert cfg.model.gated_attention.enabled
    one = plugin_toml(tmp_path, text_corpus, EXAMPLE)  # plugins = "x.py": its section was unknown, its path cwd's
    one.write_text(
        one.read_text().replace(
            f'plugins = ["{os.path.relpath(EXAMPLE, one.parent)}"]', f'plugins = "{os.path.relpath(EXAMPLE, one.parent)}"'
        )
    )
    assert load_config(one).plugins == [str(EXAMPLE.resolve())] and resolve("a.py", tmp_path) == [
        str(tmp_path.resolve() / "a.py")
    ]
    typo = plugin_toml(tmp_path, text_corpus, EXAMPLE, "[model.gated_attention]\nenabld = true\n")
    with pytest.raises(ConfigError, match="did you mean 'model.gated_attention.enabled'"):
        load_config(typo)


def test_missing_and_failing_plugins_are_one_line_errors(tmp_path, text_corpus):
    with pytest.raises(ConfigError, match="plugin file not found"):
        load_config(plugin_toml(tmp_path, text_corpus, tmp_path / "nowhere.py", ""))
    broken = tmp_path / "broken_idea.py"
    broken.write_text("raise RuntimeError('my idea has a bug')\n")
    with pytest.raises(ConfigError, match="plugin .*broken_idea.py' failed to import: RuntimeError: my idea has a bug"):
        load_config(plugin_toml(tmp_path, text_corpus, broken, ""))
    with pytest.raises(ConfigError, match="plugin module 'no_such_module_xyz' cannot be imported"):
        load_config(write_micro_toml(tmp_path / "m.toml", text_corpus, tmp_path), {"plugins": ["no_such_module_xyz"]})
    notes = tmp_path / "ideas" / "gate.txt"  # not a .py file: an AttributeError traceback from importlib's None
    notes.parent.mkdir()
    notes.write_text("a gate on the output\n")
    with pytest.raises(ConfigError, match=r"plugin file .*gate.txt is not Python source: name a .py file"):
        load_config(plugin_toml(tmp_path, text_corpus, notes, ""))


def test_a_run_records_its_plugins_source_and_sha256(trained):
    run, _ = trained
    manifest = json.loads((run / "plugins" / "manifest.json").read_text())["plugins"]
    assert [entry["sha256"] for entry in manifest] == [sha256_file(EXAMPLE)]
    assert (run / "plugins" / manifest[0]["copy"]).read_bytes() == EXAMPLE.read_bytes()
    cfg, model, _ = load_run(run)  # the plugin is already imported here: nothing new executes
    assert cfg.model.gated_attention.enabled and any(type(m).__name__ == "OutputGate" for m in model.modules())


@pytest.mark.slow
def test_a_run_never_executes_plugin_code_unless_trusted(trained):
    run, _ = trained
    refused = slmlab("eval", str(run), "--batches", "1")
    assert refused.returncode == 2
    assert "--trust-plugins" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    trusted = slmlab("eval", str(run), "--batches", "1", "--trust-plugins")
    assert trusted.returncode == 0, trusted.stderr
    assert "changed" not in trusted.stderr
    said_no = slmlab("eval", str(run), "--batches", "1", env={plugins.TRUST_VARIABLE: "false"})  # it trusted: not "0"
    assert said_no.returncode == 2 and "--trust-plugins" in said_no.stderr
    assert slmlab("eval", str(run), "--batches", "1", env={plugins.TRUST_VARIABLE: "yes"}).returncode == 0


@pytest.mark.parametrize(
    "value, trust", [("", False), ("0", False), ("false", False), ("No", False), (" off ", False), ("1", True), ("TRUE", True)]
)
def test_the_trust_variable_fails_closed(monkeypatch, value, trust):
    monkeypatch.setenv(plugins.TRUST_VARIABLE, value)
    assert plugins.trusted() is trust
    monkeypatch.setenv(plugins.TRUST_VARIABLE, "ture")  # a typo trusts nothing: one line saying what to set
    with pytest.raises(ConfigError, match="SLMLAB_TRUST_PLUGINS='ture' says neither yes nor no: set it to 1"):
        plugins.trusted()


@pytest.mark.parametrize(
    "verb", [["data", "prepare", "c.toml"], ["tokenizer", "train", "c.toml"], ["check", "c.toml"], ["diagnose", "c.toml"]]
)
def test_only_verbs_that_load_runs_take_trust_plugins(verb, capsys):
    """A verb that loads no run accepted --trust-plugins and changed nothing."""
    from slmlab.cli.main import main

    with pytest.raises(SystemExit):
        main([*verb, "--trust-plugins"])
    assert "unrecognized arguments: --trust-plugins" in capsys.readouterr().err


def test_a_changed_plugin_is_named(trained, tmp_path):
    run, _ = trained
    manifest = json.loads((run / "plugins" / "manifest.json").read_text())["plugins"]
    original = tmp_path / "moved" / "gated_attention.py"  # the run's record points at a copy we may edit
    original.parent.mkdir()
    shutil.copyfile(EXAMPLE, original)
    manifest[0]["source"] = str(original)
    (run / "plugins" / "manifest.json").write_text(json.dumps({"plugins": manifest}))
    original.write_text(original.read_text() + "\n# edited after the run\n")
    warned = slmlab("generate", str(run), "--prompt", "ab", "--max-new-tokens", "4", "--trust-plugins")
    assert warned.returncode == 0, warned.stderr
    assert "changed since" in warned.stderr and "recorded copy" in warned.stderr
    # in a process where the plugin runs with other code than the run recorded: an error
    spec = manifest[0]["spec"]
    active = plugins._active[spec]
    plugins._active[spec] = plugins.Plugin(spec, active.module, active.source, "0" * 64)
    try:
        with pytest.raises(ConfigError, match="changed since"):
            RunDir(run).read_config()
    finally:
        plugins._active[spec] = active


def test_a_damaged_plugin_record_is_refused(trained):
    run, _ = trained
    copy = next((run / "plugins").glob("*.py"))
    copy.write_text(copy.read_text() + "\nprint('tampered')\n")
    result = slmlab("eval", str(run), "--batches", "1", "--trust-plugins")
    assert result.returncode == 2 and "does not match its sha256" in result.stderr
    assert "tampered" not in result.stdout
    (run / "plugins" / "manifest.json").unlink()
    with pytest.raises(RunFileError, match="not recorded"):
        plugins.activate_recorded(run / "plugins", ["elsewhere.py"], run)


def test_a_plugin_can_be_an_importable_module(tmp_path, text_corpus, monkeypatch):
    package = tmp_path / "site"
    package.mkdir()
    (package / "my_scale_idea.py").write_text(
        "from dataclasses import dataclass\n"
        "from slmlab.registry import register_section\n"
        "@dataclass\nclass ScaleConfig:\n    factor: float = 1.0\n"
        "register_section('my_scale', ScaleConfig, extends='attention')\n"
    )
    monkeypatch.syspath_prepend(str(package))
    config = write_micro_toml(tmp_path / "m.toml", text_corpus, tmp_path)
    config.write_text('plugins = ["my_scale_idea"]\n' + config.read_text() + "[model.my_scale]\nfactor = 2.0\n")
    cfg = load_config(config)
    assert cfg.plugins == ["my_scale_idea"] and cfg.model.my_scale.factor == 2.0


@pytest.mark.slow
def test_resume_and_ablate_run_the_recorded_plugin(trained):
    run, _ = trained
    resumed = slmlab("train", "--resume", str(run), "--train.steps", "14", "--no-progress", "--trust-plugins")
    assert resumed.returncode == 0, resumed.stderr
    assert RunDir(run).read_summary()["step"] == 14
    ablated = slmlab("ablate", str(run), "--n-batches", "1", "--trust-plugins")
    assert ablated.returncode == 0, ablated.stderr
    assert "gate_one" in ablated.stdout


def test_the_output_gate_intervention_changes_the_model(trained):
    from slmlab.model.interventions import applicable, intervene

    run, _ = trained
    _, model, _ = load_run(run)
    names = [i.name for i in applicable(model)]
    assert "gate_one" in names
    tokens = torch.randint(0, model.cfg.vocab_size, (1, 16))
    with torch.no_grad():
        before = model(tokens)[0]
        with intervene(model, next(i for i in applicable(model) if i.name == "gate_one")):
            after = model(tokens)[0]
    assert not torch.allclose(before, after)


@pytest.mark.slow
def test_a_sweep_loads_the_plugin_in_its_worker_processes(tmp_path, text_corpus):
    base = plugin_toml(tmp_path, text_corpus, EXAMPLE)
    sweep = base.parent / "sweep.toml"
    sweep.write_text(
        f'name = "gated_sweep"\nbase = "{base.name}"\nout_dir = "{tmp_path / "runs"}"\nseeds = [0]\n'
        '[overrides]\n"train.steps" = 4\n"train.eval_every" = 4\n"train.checkpoint_every" = 4\n'
        '[variants.baseline]\n"model.gated_attention.enabled" = false\n[variants.gated]\n'
    )
    result = slmlab("sweep", str(sweep), "--jobs", "2")
    assert result.returncode == 0, result.stderr
    table = (tmp_path / "runs" / "gated_sweep" / "results.md").read_text()
    assert "| gated" in table and "0 runs, 0 steps" in table


def test_info_counts_what_a_plugin_really_runs():
    from slmlab.model import build_model, model_stats
    from slmlab.model.accounting import measured_flops_per_token

    def flops(enabled: bool) -> tuple[float, float]:
        cfg = load_config(
            ROOT / "examples" / "plugins" / "gated_attention.toml",
            {"model.vocab_size": 65, "model.gated_attention.enabled": enabled},
        )
        with torch.device("meta"):
            model = build_model(cfg.model)
        return measured_flops_per_token(model, 64), model_stats(model, cfg.model).flops_per_token(64)

    (base_counted, base_formula), (gated_counted, _) = flops(False), flops(True)
    assert base_counted == pytest.approx(base_formula, rel=0.02)  # the closed form and the counter agree
    assert gated_counted > base_counted * 1.03  # the gate's matmuls are counted


def test_interventions_of_two_ideas_with_the_same_hook_name_stay_apart(tmp_path, text_corpus):
    """SMAT's value gate and the plugin's output gate both have a `hook_gate`: each idea's
    interventions reach only its own modules, and ablate labels them apart."""
    from slmlab.model import build_model
    from slmlab.model.interventions import applicable, hook_points

    cfg = load_config(plugin_toml(tmp_path, text_corpus, EXAMPLE), {"model.smat.use_G": True, "model.vocab_size": 20})
    model = build_model(cfg.model)
    gate_ones = [i for i in applicable(model) if i.name == "gate_one"]
    assert {i.owner.__name__ for i in gate_ones} == {"SemanticAttention", "OutputGate"}
    reached = [{id(m) for m in hook_points(model, "hook_gate", i.owner)} for i in gate_ones]
    assert reached[0] and reached[1] and not reached[0] & reached[1]
    assert len(hook_points(model, "hook_gate")) == len(reached[0]) + len(reached[1])


@pytest.mark.parametrize(
    "verb",
    [
        ("info", "{run}"),
        ("viz", "attention", "{run}", "--prompt", "abcab", "--out", "{tmp}/viz"),
        ("report", "{run}"),
        ("diagnose", "{config}", "--steps", "300"),
    ],
    ids=["info", "viz", "report", "diagnose"],
)
@pytest.mark.slow
def test_every_verb_reads_a_run_with_plugins(trained, tmp_path, verb):
    run, config = trained
    args = [a.format(run=run, config=config, tmp=tmp_path) for a in verb]
    result = slmlab(*args, *["--trust-plugins"] * ("{run}" in verb))  # a config's own plugins need no trust
    assert result.returncode == 0, result.stderr
    if "{run}" in verb:
        assert slmlab(*args).returncode == 2  # and none executes the plugin untrusted


@pytest.mark.distributed
def test_torchrun_ranks_load_the_plugin(tmp_path, text_corpus):
    config = plugin_toml(tmp_path, text_corpus, EXAMPLE)
    for parallel in ("ddp", "fsdp"):
        argv = ("--nproc", "2", "--train.parallel", parallel, "--train.device", "cpu", "--name", parallel, "--no-progress")
        result = slmlab("train", str(config), *argv)  # two gloo processes, on a machine with one GPU too
        assert result.returncode == 0, result.stderr
        run = tmp_path / "runs" / parallel
        assert (run / "plugins" / "manifest.json").is_file() and RunDir(run).read_summary()["step"] == 12


def test_a_sweep_names_plugins_for_every_run(tmp_path, micro_toml):
    from slmlab.experiments.sweep_config import load_sweep

    sweep = tmp_path / "sweeps" / "with_plugin.toml"
    sweep.parent.mkdir()
    relative = os.path.relpath(EXAMPLE, sweep.parent)
    sweep.write_text(
        f'base = "../{micro_toml.name}"\nplugins = ["{relative}"]\nseeds = [0]\n'
        '[variants.baseline]\n[variants.gated]\n"model.gated_attention.enabled" = true\n'
    )
    _, jobs = load_sweep(sweep)
    assert all(job.config.plugins == [str(EXAMPLE.resolve())] for job in jobs)
    assert [job.config.model.gated_attention.enabled for job in jobs] == [False, True]


def test_two_plugin_files_of_one_name_are_two_modules_and_two_records(tmp_path, text_corpus):
    """ideas/a/idea.py and ideas/b/idea.py: each keeps its own module and its own copy in
    RUN/plugins (one name for both let the second overwrite the first's record)."""
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "idea.py").write_text(f"mark = {folder!r}\n")
    config = write_micro_toml(tmp_path / "two.toml", text_corpus, tmp_path, steps=2, every=2)
    config.write_text('plugins = ["a/idea.py", "b/idea.py"]\n' + config.read_text())
    run = Path(train(load_config(config), progress=False).run_dir)
    manifest = json.loads((run / "plugins" / "manifest.json").read_text())["plugins"]
    assert len({entry["module"] for entry in manifest}) == len({entry["copy"] for entry in manifest}) == 2
    for entry, folder in zip(manifest, ("a", "b")):
        assert (run / "plugins" / entry["copy"]).read_text() == f"mark = {folder!r}\n"
        assert sys.modules[entry["module"]].mark == folder
    result = slmlab("eval", str(run), "--batches", "1", "--trust-plugins")
    assert result.returncode == 0, result.stderr


def test_a_plugin_keeps_the_init_its_constructor_gives(tmp_path):
    """The backbone's GPT-2 init ran over every module after construction, the handed-in ones
    too: the worked plugin's `bias_init` and the scaffold's output gate (bias 2.0, gates at 0.88)
    started at bias 0, gates at 0.5, in silence. Handed-in modules now keep their own init unless
    they ask for the backbone's (`host_init`, as SMAT and the Self Area do)."""
    from slmlab.analysis.scaffold import write_variant
    from slmlab.model import build_model

    write_variant("gate_kept", "output-gate", tmp_path)
    for config, bias in ((EXAMPLE.with_suffix(".toml"), 3.0), (tmp_path / "gate_kept.toml", 2.0)):
        section = "gated_attention" if config.stem == "gated_attention" else "gate_kept"
        overrides = {"model.vocab_size": 65, f"model.{section}.bias_init": bias}
        torch.manual_seed(0)
        model = build_model(load_config(config, overrides).model)
        biases = [p for name, p in model.named_parameters() if name.endswith(".bias") and ".extensions." in name]
        assert biases and all(torch.all(b == bias) for b in biases), config.name


def test_smat_and_the_self_area_take_the_backbones_init():
    """They ask for it (host_init): their linear layers are drawn N(0, init_std) in the backbone's
    one pass, so their runs are the same as before plugins kept their own init."""
    import dataclasses

    from slmlab.config import ModelConfig
    from slmlab.model import build_model
    from slmlab.variants.self_area import SelfAreaConfig
    from slmlab.variants.smat import SmatConfig

    cfg = ModelConfig(n_layer=2, n_head=2, d_model=64, block_size=32, vocab_size=40, init_std=0.01)
    smat = build_model(dataclasses.replace(cfg, smat=SmatConfig(use_S=True, use_G=True, s_dim=32)))
    smt = build_model(dataclasses.replace(cfg, self_area=SelfAreaConfig(enabled=True, self_dim=64)))
    for model, part in ((smat, "extensions.0.w_s.weight"), (smt, "conditioning.area.refine.0.weight")):
        weight = next(p for name, p in model.named_parameters() if name.endswith(part))
        assert float(weight.detach().std()) == pytest.approx(0.01, rel=0.1)  # PyTorch's own Linear init is ~0.07 here
    assert all(
        float(b.detach().abs().max()) == 0
        for name, b in smt.named_parameters()
        if name.startswith("conditioning.area.refine") and name.endswith("bias")
    )


def test_a_plugin_file_module_is_never_taken_for_slmlab_code(tmp_path):
    """A file plugin is imported as `slmlab_plugin_<stem>_<hash>`: outside slmlab's own modules,
    so its sections are written to config.json, its code warned of where unrecorded, and DDP looks
    for its unused parameters."""
    from slmlab.registry import is_builtin_module

    assert is_builtin_module("slmlab") and is_builtin_module("slmlab.model.layers")
    spec = str(tmp_path / "slmlab.py")
    assert not is_builtin_module(plugins.module_name(spec)) and not is_builtin_module("slmlabx.layers")
