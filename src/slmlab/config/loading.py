"""Reading configs: TOML files, dotted command-line overrides, and the checked RunConfig.

    cfg = load_config("configs/quickstart.toml", ["--model.n_layer", "4", "--train.steps=200"])

Every key is checked against the schema and every value against its type; `checks.validate`
then applies the rules that span fields. Any problem is a ConfigError of one line naming the key.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import typing
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .. import plugins
from ..errors import ConfigError
from ..files import HEAD_BYTES, file_kind, not_utf8, wide_text
from ..registry import load_builtins
from ..tables import command_line
from .checks import validate
from .ignored import check_no_ignored_setting
from .plugin_use import check_plugins_named
from .schema import ModelConfig, RunConfig
from .values import build_dataclass

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib


def toml_problem(text: str) -> str | None:
    """What the TOML parser finds wrong with `text`, or None when it parses."""
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        return str(err)
    return None


def config_from_dict(values: dict[str, Any]) -> RunConfig:
    """Build and validate a RunConfig from nested plain values (e.g. parsed TOML or config.json)."""
    if not isinstance(values, dict):
        raise ConfigError(f"a config is a table of settings (name, model, data, train, ...), not {type(values).__name__}")
    load_builtins()
    specs = values.get("plugins", [])
    if isinstance(specs, str):  # plugins = "gate.py": one plugin (the schema reads a string as a list of one)
        specs = [specs]
    if isinstance(specs, list) and all(isinstance(s, str) for s in specs):
        plugins.activate(specs)  # before the check: a plugin's sections and choices must exist
    cfg = build_dataclass(RunConfig, values)
    cfg.out_dir = os.path.expanduser(cfg.out_dir)  # as data.source and data.cache_dir: "~/runs" made a folder named "~"
    _check_rules(cfg)
    return cfg


def _check_rules(cfg: RunConfig) -> None:
    """The rules across fields, for the config and for each of its phases. A curriculum that
    breaks a rule only with a value its first phase replaces is checked as that phase sets it: no
    phase reads the value (a default data.seq_len of 256 against a block_size of 64, with the first
    phase training on 32-token windows, was refused, and giving data.seq_len was refused as ignored)."""
    try:
        validate(cfg)
    except ConfigError:
        if not cfg.phases:
            raise
        try:
            validate(_as_first_phase_sets_it(cfg))
        except ConfigError as err:  # said of the phase where it sets what the rule names
            hint = cfg.setter_hint(0, str(err))
            raise ConfigError(f"phases[0] ({cfg.phases[0].name}): {err}{hint}" if hint else str(err)) from None
    names = [phase.name for phase in cfg.phases]
    for index, name in enumerate(names):
        if not name.strip():
            raise ConfigError(f"phases[{index}].name is empty: name the phase (it names its sub-run and its rows in reports)")
        if names.index(name) != index:
            raise ConfigError(
                f"phases[{names.index(name)}] and phases[{index}] are both named {name!r}: give each phase its own name"
            )
        cfg.phase(index)  # every phase must be a valid config too
    check_plugins_named(cfg)


def _as_first_phase_sets_it(cfg: RunConfig) -> RunConfig:
    """A curriculum's `cfg` with its first phase's changes applied (its phases kept)."""
    return build_dataclass(RunConfig, apply_overrides(cfg.to_dict(), cfg.phases[0].overrides()))


def require_run_config(cfg) -> RunConfig:
    """`cfg` when it is a RunConfig; anything else (a dict, a path) is refused in one line."""
    if not isinstance(cfg, RunConfig):
        raise ConfigError(f"expected a RunConfig (slmlab.config.load_config builds one), got {type(cfg).__name__}")
    return cfg


def check_config(cfg: RunConfig) -> None:
    """Check a RunConfig as a loaded one is checked (each value's type, then the rules across
    fields, then every phase): an API caller may build one in code or change fields after loading
    (`cfg.model.n_head = 3`), and training must refuse it in one line as the CLI would."""
    _check_rules(build_dataclass(RunConfig, require_run_config(cfg).to_dict()))


def _parse_literal(text: str) -> Any:
    """Parse a command-line value as a TOML literal (`4`, `true`, `[\"J\", \"E\"]`), else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_overrides(args: typing.Sequence[str]) -> dict[str, Any]:
    """Turn `["--model.n_layer", "4", "--train.lr=3e-4"]` into {"model.n_layer": 4, "train.lr": 3e-4}."""
    if isinstance(args, (str, bytes)) or not isinstance(args, typing.Sequence):
        raise ConfigError(
            f"overrides are a dict ({{'model.n_layer': 4}}) or a list of command-line words (['--model.n_layer', '4']), "
            f"got {type(args).__name__} {args!r:.60}"
        )
    overrides: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or len(arg) < 3:
            raise ConfigError(f"expected an override like --model.n_layer 4, got '{arg}'")
        key = arg[2:]
        if "=" in key:
            key, text = key.split("=", 1)
            i += 1
        else:
            if i + 1 >= len(args):
                raise ConfigError(f"override --{key} has no value")
            text = args[i + 1]
            i += 2
        overrides[key] = _parse_literal(text)
    return overrides


def _is_section(key: str) -> bool:
    """Whether a dotted key names a config section ([model], [data], [train], or a variant's
    [model.<name>]) rather than a field, some of which hold tables themselves (data.mixture)."""
    parts = key.split(".")
    if len(parts) == 1:
        return key in SECTION_NAMES
    return len(parts) == 2 and (parts[0] == "phases" or (parts[0] == "model" and parts[1] not in MODEL_FIELDS))


SECTION_NAMES = tuple(f.name for f in dataclasses.fields(RunConfig) if dataclasses.is_dataclass(f.default_factory))
MODEL_FIELDS = {f.name for f in dataclasses.fields(ModelConfig)}


def dotted(overrides: dict[str, Any]) -> dict[str, Any]:
    """Overrides with every table given for a section spelled out as dotted keys:
    `{"model": {"n_layer": 2}}` (a sweep's `[variants.a.model]`, `--model '{n_layer = 2}'`) sets
    model.n_layer and keeps the section's other settings, as `{"model.n_layer": 2}` does, instead of
    replacing the whole section by a table of one key. An empty table drops the section's settings
    (`"model.tape" = {}`: its defaults apply); a field's own table (data.mixture) is a value. A
    setting given twice (`"model.n_layer"` beside `model = {n_layer = ...}`) keeps the last."""
    return dict(_dotted_items(overrides))


def repeated_settings(overrides: dict[str, Any], phase_names: typing.Sequence[str] = ()) -> list[str]:
    """The dotted keys a table of overrides sets more than once, under two spellings (a sweep's
    `"model.n_layer" = 2` beside `model = {n_layer = 3}`, or `phases.A.steps` beside
    `phases.0.steps` where the curriculum's phases are `phase_names`): one was dropped in silence."""
    counts = Counter(_phase_by_name(key, phase_names) for key, _ in _dotted_items(overrides))
    return [key for key, count in counts.items() if count > 1]


def _phase_by_name(key: str, phase_names: typing.Sequence[str]) -> str:
    """`phases.0.steps` -> `phases.A.steps` where phase 0 is named A; any other key as it is."""
    parts = key.split(".")
    if len(parts) > 2 and parts[0] == "phases" and (index := phase_index(list(phase_names), parts[1])) is not None:
        parts[1] = phase_names[index]
    return ".".join(parts)


def _dotted_items(overrides: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    for key, value in overrides.items():
        if isinstance(value, dict) and value and _is_section(key):
            yield from _dotted_items({f"{key}.{name}": item for name, item in value.items()})
        else:
            yield key, value


def apply_overrides(values: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys in a nested dict (a copy); the keys are checked later by `build_dataclass`.
    A table given for a section sets the fields it names (`dotted`). A curriculum's phase is named
    by its name or its index: `phases.B.seq_len`, `phases.1.seq_len` (`_phase`)."""
    merged = _deep_copy(values)
    for key, value in dotted(overrides).items():
        *path, last = key.split(".")
        node = merged
        if path and path[0] == "phases":
            node, path = _phase(merged, path, key), path[2:]
        for part in path:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"cannot set '{key}': '{part}' is not a section")
            node = child
        node[last] = value
    return merged


def _phase(values: dict[str, Any], path: list[str], key: str) -> dict[str, Any]:
    """The table of the phase `path[1]` names (`path` = ["phases", name or index, ...]): a phase by
    its name, else by its index in [[phases]]."""
    phases = values.get("phases")
    if not isinstance(phases, list) or not phases or not all(isinstance(phase, dict) for phase in phases):
        raise ConfigError(
            f"cannot set '{key}': the config has no [[phases]] (a curriculum's phase is set as --phases.A.steps 100)"
        )
    if len(path) < 2:
        raise ConfigError(f"cannot set '{key}': name a setting of that phase, e.g. --{key}.steps 100")
    names = [str(phase.get("name", "phase")) for phase in phases]
    index = phase_index(names, path[1])
    if index is None:
        raise ConfigError(
            f"cannot set '{key}': no phase '{path[1]}' (the phases: {', '.join(names)}; by name or by index, 0 to {len(phases) - 1})"
        )
    return phases[index]


def phase_index(names: list[str], wanted: str) -> int | None:
    """The index of the phase `wanted` names among phases `names`: by its name, else by its index."""
    if wanted in names:
        return names.index(wanted)
    if wanted.isascii() and wanted.isdigit() and int(wanted) < len(names):
        return int(wanted)
    return None


def _deep_copy(values: Any) -> Any:
    """A copy of nested tables and lists (a curriculum's phases are a list of tables)."""
    if isinstance(values, dict):
        return {k: _deep_copy(v) for k, v in values.items()}
    if isinstance(values, list):
        return [_deep_copy(v) for v in values]
    return values


# config formats of other tools, named when a config in one is not TOML
OTHER_FORMATS = {".json": "JSON", ".yaml": "YAML", ".yml": "YAML", ".py": "Python", ".cfg": "INI", ".ini": "INI"}


def read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if (path / "config.json").is_file():
        raise ConfigError(
            f"{path} is a run directory, not a config file: give the .toml file it was trained from "
            f"(`{command_line('slmlab', 'train', '--resume', path)}` continues it; its settings are in {path / 'config.json'})"
        )
    kind = file_kind(path)
    if kind == "missing":
        raise ConfigError(f"config file not found: {path}")
    if kind != "file":  # a pipe would give the run its name ('63' from /dev/fd/63) and its folder's relative paths
        raise ConfigError(f"{path} is a {kind}, not a config file: give a .toml file (its name names the run)")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError:
        raise ConfigError(not_utf8(str(path), path.read_bytes())) from None
    except tomllib.TOMLDecodeError as err:
        if problem := wide_text(path.read_bytes()[:HEAD_BYTES]):  # UTF-16 without a byte-order mark
            raise ConfigError(f"{path} {problem}; re-encode it as UTF-8") from None
        if path.name == "config.json" and (
            (path.parent / "final.safetensors").exists() or (path.parent / "checkpoints").is_dir()
        ):
            raise ConfigError(  # a run's config.json given as a config
                f"{path} is a run's recorded settings, not a TOML config: give the run's folder {path.parent} to the verbs "
                f"that read runs, or the .toml file it was trained from (`{command_line('slmlab', 'train', '--resume', path.parent)}` continues it)"
            ) from None
        other = OTHER_FORMATS.get(path.suffix.lower())
        if other:  # a config written for another tool
            raise ConfigError(
                f"{path}: slmlab reads configs as TOML, not {other} ({err}): write `key = value` lines under [model], "
                "[data] and [train] (docs/settings.md names every setting)"
            ) from None
        raise ConfigError(f"{path}: invalid TOML ({err})") from None


def load_config(
    path: str | Path, overrides: typing.Sequence[str] | dict[str, Any] | None = (), *, refuse_ignored: bool = True
) -> RunConfig:
    """Read a TOML config, apply dotted overrides, validate. The run name defaults to the file stem.
    `refuse_ignored=False` leaves ignored settings to the caller (a sweep weighs them over its
    variants)."""
    values = read_toml(path)
    if "variants" in values:
        raise ConfigError(f"{path} is a sweep config ([variants]): run it with `{command_line('slmlab', 'sweep', path)}`")
    values.setdefault("name", Path(path).stem)
    if "plugins" in values:  # plugin files are named relative to the config ...
        values["plugins"] = plugins.resolve(values["plugins"], Path(path).parent)
    if not isinstance(overrides, dict):
        overrides = parse_overrides(() if overrides is None else overrides)
    values = apply_overrides(values, overrides)
    if "plugins" in values:  # ... or, given as an override, to the working directory
        values["plugins"] = plugins.resolve(values["plugins"], Path.cwd())
    cfg = config_from_dict(values)
    if refuse_ignored:
        check_no_ignored_setting(cfg)
    return cfg
