"""Which code a config uses: only the plugins it names (a plugin another config imported in this
process is refused, naming it), and code registered outside any plugin trains with a warning that
the run records no copy of it (config/plugin_use.py)."""

from __future__ import annotations

import re
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
