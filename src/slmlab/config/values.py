"""Plain values -> typed dataclasses, with one-line errors that name the key, and back to TOML text.

`build_dataclass(cls, {"n_layer": 4})` checks every key against the dataclass's fields (a typo gets
the closest valid key), converts every value to its annotation (int, float, bool, str, Literal,
lists, dicts, nested dataclasses) and refuses anything else. A dataclass with a `SECTIONS`
registry (ModelConfig) also takes the sections registered there (`[model.smat]`). `toml_literal`
writes a value back as a config writes it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from typing import Any

from ..errors import ConfigError
from ..registry import closest
from .other_names import setting_hint


def toml_literal(value: Any) -> str:
    """A setting's value as a config writes it in TOML ("cpu", true, [1, 2], {a = 0.5}), for tables
    a user copies settings from; None, a setting left unset, as '–' (TOML has no null)."""
    if value is None:
        return "–"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key} = {toml_literal(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(toml_literal(item) for item in value) + "]"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return json.dumps(value, ensure_ascii=False)


def check_value(key: str, value: Any, annotation: Any) -> Any:
    """Return `value` converted to `annotation`, or raise ConfigError naming `key`."""
    if annotation is Any or (annotation is type(None) and value is None):
        return value
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(annotation):
            try:
                return check_value(key, value, option)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: expected {annotation}, got {value!r}")
    if origin is typing.Literal:
        allowed = typing.get_args(annotation)
        if value in allowed and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key} = {value!r} is not one of {', '.join(map(str, allowed))}{closest(value, allowed)}")
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):  # --train.compile=False, as nanoGPT's flags
            why = "TOML's true and false are lower case" if value != value.lower() else "text, not true or false"
            raise ConfigError(f"{key}: write {value.lower()}, not {value!r} ({why})")
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(f"{key} must be a finite number, got {value!r}")
            return float(value)
    elif annotation is str:
        if isinstance(value, str):
            return value
    elif origin is list:
        (item_type,) = typing.get_args(annotation)
        if isinstance(value, str) and value.startswith("[") and value.endswith("]"):  # --data.genres '[J, E]'
            quoted = ", ".join(f'"{item.strip()}"' for item in value[1:-1].split(",") if item.strip())
            raise ConfigError(f"{key}: {value!r} is not a TOML list; quote its strings: '[{quoted}]'")
        if isinstance(value, str):  # a single value given for a list, e.g. --data.genres J
            value = [value]
        if isinstance(value, (list, tuple)):
            return [check_value(f"{key}[{i}]", v, item_type) for i, v in enumerate(value)]
    elif origin is dict:
        _, value_type = typing.get_args(annotation)
        if isinstance(value, dict):
            return {str(k): check_value(f"{key}.{k}", v, value_type) for k, v in value.items()}
    elif dataclasses.is_dataclass(annotation):
        if isinstance(value, dict):
            return build_dataclass(annotation, value, prefix=key)
        if isinstance(value, annotation):
            return value
    if dataclasses.is_dataclass(annotation) or origin is dict:
        type_name = f"a table ([{key}] or {key} = {{...}})"
    elif annotation is bool:
        type_name = "true or false"
    else:
        type_name = getattr(annotation, "__name__", str(annotation))
    if annotation in (int, float) and isinstance(value, str) and _number(value.strip(), annotation) is not None:
        raise ConfigError(f"{key}: write {value.strip()}, not {value!r} (text, not a number)")  # steps = "100"
    raise ConfigError(f"{key}: expected {type_name}, got {type(value).__name__} {value!r}")


def _number(text: str, kind: type) -> int | float | None:
    """`text` read as a finite number of `kind` (int, or float: an int too), or None."""
    try:
        number = kind(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def setting_names(cls: type) -> list[str]:
    """The names of a config dataclass's own settings (its registered sections aside)."""
    return [f.name for f in dataclasses.fields(cls) if f.init and f.name != "sections"]


def _unknown_keys(unknown: list[str], values: dict, options: list[str], sections: list[str], prefix: str, settings: bool) -> str:
    """One line naming each unknown key of a table with the setting it likely meant (build_dataclass)."""
    hints = []
    for name in unknown:
        hint = setting_hint(name, options, prefix) if settings else closest(name, options, prefix)
        if not hint and sections and isinstance(values[name], dict):  # a section no variant or plugin registered
            hint = f" (sections: {', '.join(sections)}; a plugin's section needs the plugin in plugins = [...])"
        hints.append(hint)
    if len(unknown) == 1 and not hints[0] and len(options) <= 12:  # nothing close: a small table's keys fit on the line
        hints[0] = f" ({prefix or 'the top level'} holds {', '.join(options)})"
    said = [f"'{prefix + '.' if prefix else ''}{name}'{hint}" for name, hint in zip(unknown, hints)]
    shown = ", ".join(said[:6]) + (f", and {len(said) - 6} more" if len(said) > 6 else "")
    return f"unknown config key{'s' if len(unknown) > 1 else ''} {shown}"


def build_dataclass(cls: type, values: dict[str, Any], prefix: str = "", settings: bool = True) -> Any:
    """`cls` built from the table `values` (named `prefix` in errors), each value checked against
    its field's annotation. An unknown key's hint names the setting meant (other_names.setting_hint)
    where `settings`: the table is one of a run's or a sweep's config; else the closest key."""
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a table of settings, got {type(values).__name__} {values!r}")
    hints = typing.get_type_hints(cls)
    names = setting_names(cls)
    sections = getattr(cls, "SECTIONS", None)
    options = names + (list(sections) if sections is not None else [])
    unknown = [name for name in values if name not in options]
    if unknown:  # all of them at once: a config written for another tool has several
        raise ConfigError(_unknown_keys(unknown, values, options, list(sections or ()), prefix, settings))
    kwargs = {}
    for name, value in values.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = check_value(key, value, hints[name] if name in names else sections[name].config)
    missing = [
        f.name
        for f in dataclasses.fields(cls)
        if f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name not in kwargs
    ]
    if missing:
        raise ConfigError(f"{prefix or 'config'}: {', '.join(repr(m) for m in missing)} must be given")
    return cls(**kwargs)
