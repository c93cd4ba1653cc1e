"""`slmlab new-variant NAME`: a plugin skeleton that passes `slmlab check` as generated.

It writes, into OUT:
    NAME.py          the plugin: equations in its docstring, config section [model.NAME],
                     the extension, a config rule, an intervention and (attention kinds) a float64
                     naive reference
    NAME.toml        a run config that names the plugin and switches it on
    NAME_sweep.toml  the baseline vs NAME over 3 seeds

The files come from templates/ (one per kind, string.Template placeholders $name, $Name, $out,
and in the configs $switch_on / $switch_off: how the run turns the idea on, and the sweep's
baseline off).
"""

from __future__ import annotations

import keyword
from pathlib import Path
from string import Template

from ..errors import ConfigError
from ..files import atomic_write_text
from ..registry import MODEL_SECTIONS, check_section_name, load_builtins

TEMPLATES = Path(__file__).with_name("templates")
SECTION_SWITCH = ("\n[model.$name]\nenabled = true", '"model.$name.enabled" = false')
KIND_TEMPLATES = {  # kind -> (plugin template, (the run config's lines that turn it on, the baseline's override))
    "attention-extension": ("attention_extension.py.tmpl", SECTION_SWITCH),
    "output-gate": ("output_gate.py.tmpl", SECTION_SWITCH),
    "mlp": ("mlp.py.tmpl", ('mlp = "$name"', '"model.mlp" = "gelu"')),
}


def check_variant_name(name: str) -> None:
    load_builtins()
    if not name.isidentifier() or keyword.iskeyword(name) or not name.islower():
        raise ConfigError(f"variant name {name!r} must be a lower-case Python identifier, e.g. head_temperature")
    if name in MODEL_SECTIONS:
        raise ConfigError(f"[model.{name}] is taken by a built-in section; pick another name")
    check_section_name(name)


def write_variant(name: str, kind: str, out: str | Path, force: bool = False) -> list[Path]:
    """Write the plugin, its run config and its sweep config into `out` -> the paths written."""
    check_variant_name(name)
    if kind not in KIND_TEMPLATES:
        raise ConfigError(f"--kind {kind!r} is not one of {', '.join(KIND_TEMPLATES)}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder")
    values = {"name": name, "Name": "".join(part.capitalize() for part in name.split("_")), "out": out.as_posix()}
    template, switches = KIND_TEMPLATES[kind]
    values.update(zip(("switch_on", "switch_off"), (Template(line).substitute(values) for line in switches)))
    files = {
        out / f"{name}.py": template,
        out / f"{name}.toml": "run.toml.tmpl",
        out / f"{name}_sweep.toml": "sweep.toml.tmpl",
    }
    taken = [str(path) for path in files if path.exists()]
    if taken and not force:
        raise ConfigError(f"{', '.join(taken)} already exist; pick another name or pass --force to replace them")
    out.mkdir(parents=True, exist_ok=True)
    for path, template in files.items():
        atomic_write_text(path, Template((TEMPLATES / template).read_text(encoding="utf-8")).substitute(values))
    return list(files)
