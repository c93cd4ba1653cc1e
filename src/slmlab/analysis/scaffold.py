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

import ast
import builtins
import keyword
from collections import Counter
from pathlib import Path
from string import Template

from ..config import toml_problem
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
    if keyword.iskeyword(name):
        raise ConfigError(f"variant name {name!r} is a Python keyword; pick another name, e.g. head_temperature")
    if not name.isidentifier() or not name.islower():
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
    texts = {
        path: Template((TEMPLATES / template).read_text(encoding="utf-8")).substitute(values) for path, template in files.items()
    }
    for path, text in texts.items():
        check_rendered(name, path, text)
    taken = [str(path) for path in files if path.exists()]
    if taken and not force:
        raise ConfigError(f"{', '.join(taken)} already exist; pick another name or pass --force to replace them")
    out.mkdir(parents=True, exist_ok=True)
    for path, text in texts.items():
        atomic_write_text(path, text)
    return list(files)


def check_rendered(name: str, path: Path, text: str) -> None:
    """Refuse a name that would make a file the scaffold writes wrong: a config that does not
    parse (`baseline` declares the sweep's baseline variant twice), or a plugin that does not
    parse (`none` makes `class None`) or whose class or function takes a name it imports, defines
    or Python builds in (`intervention` makes class Intervention, which would replace slmlab's
    Intervention it registers its own with; `exception` would hide Python's Exception)."""
    if path.suffix == ".toml":
        if problem := toml_problem(text):
            raise ConfigError(f"variant name {name!r} would make {path.name} invalid ({problem}); pick another name")
        return
    try:
        bound = Counter(bound_names(ast.parse(text)))
    except SyntaxError as err:  # `none` makes `class None`
        raise ConfigError(f"variant name {name!r} would make {path.name} invalid Python ({err.msg}); pick another name") from None
    clashes = sorted(bound_name for bound_name, count in bound.items() if count > 1 or hasattr(builtins, bound_name))
    if clashes:
        raise ConfigError(
            f"variant name {name!r} would make {path.name} bind {', '.join(clashes)} twice (a name it imports, "
            "defines for itself or Python builds in); pick another name"
        )


def bound_names(module: ast.Module) -> list[str]:
    """The names a module's top-level statements bind (imports, classes, functions, assignments)."""
    names = []
    for node in module.body:
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names += [(alias.asname or alias.name).split(".")[0] for alias in node.names]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names += [target.id for target in targets if isinstance(target, ast.Name)]
    return names
