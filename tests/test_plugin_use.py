"""Which code a config uses: only the plugins it names (a plugin another config imported in this
process is refused, naming it), and code registered outside any plugin trains with a warning that
the run records no copy of it (config/plugin_use.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from slmlab.config import ConfigError, load_config
from slmlab.training import train
from tests.conftest import write_micro_toml
from tests.test_plugins import EXAMPLE, ROOT, plugin_toml


def test_a_config_may_use_only_the_plugins_it_names(tmp_path, text_corpus):
    """Once one config imported a plugin, another config of the same process could set its section
    or choose its MLP without naming it: the run trained, and its config.json (no plugin recorded)
    could not be read back anywhere else ("unknown config key 'model.gated_attention'")."""
    from slmlab.config import config_from_dict

    gated = load_config(plugin_toml(tmp_path, text_corpus, EXAMPLE))
    moe = load_config(ROOT / "examples" / "plugins" / "moe.toml", {"data.source": str(text_corpus)})
    for cfg, says in [
        (gated, "[model.gated_attention] comes from the plugin " + str(EXAMPLE)),
        (moe, "model.mlp = 'moe' comes from the plugin " + str(EXAMPLE.parent / "moe.py")),
    ]:
        values = cfg.to_dict()
        assert config_from_dict(values).plugins == cfg.plugins  # named: as before
        with pytest.raises(ConfigError, match=re.escape(says) + r", which this config does not name .* add it to plugins"):
            config_from_dict({**values, "plugins": []})
        cfg.plugins = []  # changed in code: train refuses it before it makes a directory
        with pytest.raises(ConfigError, match=re.escape(says)):
            train(cfg, progress=False)
        assert not (Path(cfg.out_dir) / cfg.name).exists()
    plain = gated.to_dict()
    del plain["model"]["gated_attention"]
    assert config_from_dict({**plain, "plugins": []}).plugins == []  # the plugin imported, but unused: fine


class NotebookMLP(torch.nn.Module):
    """An MLP registered from this module, as a notebook registers one: no plugin records it."""

    def __init__(self, cfg):
        super().__init__()
        self.fc = torch.nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, x):
        return self.fc(x)


def test_code_registered_outside_any_plugin_trains_with_a_warning_that_the_run_does_not_record_it(tmp_path, text_corpus, caplog):
    from slmlab.registry import MLPS

    MLPS.register("notebook_test", NotebookMLP)
    config = write_micro_toml(tmp_path / "notebook.toml", text_corpus, tmp_path, steps=2)
    cfg = load_config(config, {"model.mlp": "notebook_test"})
    with caplog.at_level("WARNING", logger="slmlab"):
        train(cfg, progress=False)
    assert (
        f"model.mlp = 'notebook_test' ({__name__}) comes from code that is not a plugin: the run records no copy" in caplog.text
    )
    caplog.clear()
    with caplog.at_level("WARNING", logger="slmlab"):
        train(load_config(config, {"name": "plain"}), progress=False)
    assert "not a plugin" not in caplog.text


EDITED = """
from torch import nn
from slmlab.registry import MLPS


class Doubling(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, x):
        return 2 * self.fc(x)


MLPS.register("edited_test", Doubling)
"""


def mlp_plugin_config(tmp_path: Path, corpus, name: str) -> tuple[Path, Path]:
    """(tmp_path/<name>.py: EDITED registering its MLP as "<name>_test", a 2-step micro config
    naming that plugin and choosing that MLP)."""
    plugin = tmp_path / f"{name}.py"
    plugin.write_text(EDITED.replace("edited_test", f"{name}_test"))
    config = write_micro_toml(tmp_path / f"{name}.toml", corpus, tmp_path, steps=2)
    config.write_text(f'plugins = ["{name}.py"]\n' + config.read_text().replace("[model]\n", f'[model]\nmlp = "{name}_test"\n'))
    return plugin, config


def test_a_plugin_edited_after_this_process_imported_it_is_refused_and_the_run_records_what_ran(tmp_path, text_corpus):
    """Python cannot import a module again: a notebook that edited its plugin trained the old code,
    and the run recorded the edited file under the old code's SHA-256, so it could never be read
    back ("the recorded plugin copy ... does not match its sha256")."""
    plugin, config = mlp_plugin_config(tmp_path, text_corpus, "edited")
    run = Path(train(load_config(config), progress=False).run_dir)
    plugin.write_text(EDITED.replace("2 * ", "3 * "))
    with pytest.raises(ConfigError, match=r"plugin .*edited.py changed since this process imported it .* restart the process"):
        load_config(config, {"name": "after"})
    assert not (tmp_path / "runs" / "after").exists()
    (copy,) = (run / "plugins").glob("*.py")
    assert copy.read_text() == EDITED  # the code that ran, which matches the manifest's SHA-256
    done = subprocess.run(
        [sys.executable, "-m", "slmlab", "eval", str(run), "--trust-plugins", "--batches", "1"], capture_output=True, text=True
    )
    assert done.returncode == 0 and "changed since" in done.stderr, done.stderr[-2000:]  # read back from its copy


@pytest.mark.slow
def test_a_sweep_never_reuses_a_run_trained_with_other_plugin_code(tmp_path, text_corpus):
    """A sweep run again after its plugin was edited must not take the runs finished with the old
    code as its own (the table would compare two versions of the idea under one name): reading a
    run's config compares the plugin with the run's record."""
    plugin = tmp_path / "versioned.py"
    plugin.write_text(EDITED.replace("edited_test", "versioned_test"))
    write_micro_toml(tmp_path / "base.toml", text_corpus, tmp_path, steps=2)
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(
        f'name = "v"\nbase = "base.toml"\nout_dir = "{tmp_path / "runs"}"\nplugins = ["versioned.py"]\nseeds = [0]\n'
        '[variants.baseline]\n[variants.doubling]\n"model.mlp" = "versioned_test"\n'
    )

    def sweep_again() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "slmlab", "sweep", str(sweep)], capture_output=True, text=True)

    assert (done := sweep_again()).returncode == 0, done.stderr[-2000:]
    assert (done := sweep_again()).returncode == 0, done.stderr[-2000:]  # unchanged: every run is reused
    plugin.write_text(plugin.read_text().replace("2 * ", "3 * "))
    refused = sweep_again()
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.startswith(f"slmlab: error: plugin '{plugin}' changed since {tmp_path / 'runs' / 'v'}/")


def test_a_new_run_never_trains_another_runs_recorded_copy_of_a_plugin_edited_since(tmp_path, text_corpus):
    """Reading a run back with --trust-plugins imports its recorded copy; a new run of the same
    process then trained that copy while the plugin's file held the edited code."""
    plugin, config = mlp_plugin_config(tmp_path, text_corpus, "copied")
    script = (
        "import sys, slmlab\n"
        "from slmlab import plugins\n"
        "plugins.trust()\n"
        "slmlab.load_run(sys.argv[1])\n"
        "slmlab.train(slmlab.load_config(sys.argv[2], {'name': sys.argv[3]}), progress=False)\n"
    )
    first = subprocess.run(
        [sys.executable, "-m", "slmlab", "train", str(config), "--no-progress"], capture_output=True, text=True
    )
    assert first.returncode == 0, first.stderr[-2000:]
    run = tmp_path / "runs" / "copied"
    unchanged = subprocess.run([sys.executable, "-c", script, str(run), str(config), "same"], capture_output=True, text=True)
    assert unchanged.returncode == 0, unchanged.stderr[-2000:]  # the copy is the file's code: fine
    plugin.write_text(plugin.read_text().replace("2 * ", "3 * "))
    edited = subprocess.run([sys.executable, "-c", script, str(run), str(config), "after"], capture_output=True, text=True)
    assert edited.returncode == 1 and f"this process runs plugin {plugin} as the copy recorded in {run}" in edited.stderr
    assert "start it in a fresh process" in edited.stderr and not (tmp_path / "runs" / "after").exists()
