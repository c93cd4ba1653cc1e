"""Remote-code export: any slmlab architecture as a `SlmlabForCausalLM` (modeling_slmlab.py).

`hf_config_values(cfg)` is what config.json carries (the run's model section, its plugins' sources);
`build_from_hf_config` is what the exported model runs when Hugging Face loads it: the plugins
imported from their embedded, SHA-256-checked sources, then slmlab's `build_model`.
"""

from __future__ import annotations

from .. import __version__, plugins
from ..config import RunConfig, config_from_dict
from ..data.corpora.fetch import cache_dir
from ..model import build_model


def hf_config_values(cfg: RunConfig) -> dict:
    """The slmlab part of an exported config.json."""
    return {"slmlab_model": cfg.model.to_dict(), "slmlab_plugins": plugins.embed(cfg.plugins), "slmlab_version": __version__}


def build_from_hf_config(config):
    """An slmlab model (untrained weights) from a `SlmlabConfig`."""
    specs = plugins.activate_embedded(config.slmlab_plugins, cache_dir() / "exported_plugins")
    model = dict(config.slmlab_model)
    cfg = config_from_dict({"plugins": specs, "model": model, "data": {"seq_len": model.get("block_size", 1)}})
    return build_model(cfg.model)
