"""A config may use only the plugins it names. Plugins register into process-wide registries, so
once one config's plugin is imported, another config of the same process (a notebook, a script
training several runs) could choose its MLP or set its section without naming it: the run trained,
and its config.json, recording no plugin, could not be read back anywhere else ("unknown config
key"). Such a config is refused in one line saying which plugin to add. Code registered outside
any plugin (a class defined in a notebook) is allowed, with a warning when a run trains on it:
the run records no copy of it."""

from __future__ import annotations

from collections.abc import Iterator

from .. import plugins
from ..errors import ConfigError
from ..registry import ATTENTION_PATTERNS, CHOICE_REGISTRIES, MODEL_SECTIONS, TRACKERS, Registry, is_builtin_module
from .checks import value_at


def used_entries(cfg) -> Iterator[tuple[str, object]]:
    """(what the config says, the registered entry it chooses) for every registry choice it makes
    (model.mlp, data.tokenizer, train.trackers, each of model.attention_layers, ...), and
    ("[model.<name>]", the section's dataclass) for each section set away from its defaults."""
    choices: list[tuple[Registry, str]] = [(r, r.config_key) for r in CHOICE_REGISTRIES]
    choices += [(TRACKERS, "train.trackers"), (ATTENTION_PATTERNS, "model.attention_layers")]
    for registry, key in choices:
        value = value_at(cfg, key)
        for name in value if isinstance(value, list) else [value]:
            if isinstance(name, str) and name in registry:
                yield f"{key} = {name!r}", registry.get(name)
    for name, section in MODEL_SECTIONS.items():
        if getattr(cfg.model, name) != section.config():
            yield f"[model.{name}]", section.config


def module_of(entry: object) -> str | None:
    """The module whose code `entry` is (a functools.partial's function's), or None where it does
    not say (then nothing is said of it)."""
    entry = getattr(entry, "func", entry)  # functools.partial
    module = getattr(entry, "__module__", None)
    return module if isinstance(module, str) and module else None


def check_plugins_named(cfg) -> None:
    """Refuse a choice or section that comes from a plugin imported in this process but not named
    in cfg.plugins."""
    named = {plugins.module_name(spec) for spec in cfg.plugins}  # activated (and checked) by config_from_dict
    for what, entry in used_entries(cfg):
        owner = plugins.owner_of(module_of(entry) or "")
        if owner is not None and owner.module not in named:
            raise ConfigError(
                f"{what} comes from the plugin {owner.spec}, which this config does not name (another config "
                f"imported it in this process): add it to plugins = [...], or the run could not be read back"
            )


def unrecorded_code_warning(cfg) -> str | None:
    """A warning naming what the config uses from code registered outside slmlab and outside any
    plugin (a notebook's `MLPS.register("mine", Mine)`): a run records no copy of it, so the run
    reads back only where that code registers it again. None when there is none."""
    outside = [
        f"{what} ({module})"
        for what, entry in used_entries(cfg)
        if (module := module_of(entry)) is not None and not is_builtin_module(module) and plugins.owner_of(module) is None
    ]
    if not outside:
        return None
    return (
        f"{', '.join(outside)} comes from code that is not a plugin: the run records no copy of it and reads back only "
        "where that code registers it again; put it in a file and name it in plugins = [...] to record it"
    )
