"""Plugins: a user's idea in one Python file (or an importable module) outside slmlab.

A run config names them at the top level, files relative to the config:

    plugins = ["ideas/my_gate.py", "mypkg.ideas"]

Importing a plugin runs its registration calls (registry.py: the same calls the built-in variants
make), so its sections, extensions and interventions exist before the config is checked. A run
records every plugin it used in RUN/plugins/: a copy of the source and its SHA-256
(manifest.json). Reading a run back never executes plugin code unless the user trusts it
(`--trust-plugins`, or SLMLAB_TRUST_PLUGINS=1 in the environment); then the run's recorded copy is
what runs, and a plugin whose original file changed since is named in a warning. A plugin already
imported in this process with other code than the run recorded is an error (resuming with it
would mix two versions of the idea).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import logging
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError, RunFileError
from .files import atomic_write_bytes, atomic_write_text, read_json, sha256_file

log = logging.getLogger("slmlab")
TRUST_VARIABLE = "SLMLAB_TRUST_PLUGINS"
TRUST_WORDS = {"1": True, "true": True, "yes": True, "on": True, "": False, "0": False, "false": False, "no": False, "off": False}
MANIFEST = "manifest.json"


class PluginTrustError(ConfigError):
    """A run needs plugin code the user has not agreed to execute."""


@dataclass(frozen=True)
class Plugin:
    """One imported plugin: `spec` as the config holds it (a file's absolute path, or a module
    name), the module it was imported as, the file holding its code, and that code as imported
    (`code`, what runs and what a run records) with its SHA-256."""

    spec: str
    module: str
    source: Path
    sha256: str
    code: bytes = field(repr=False, default=b"")


_active: dict[str, Plugin] = {}


def trust(enabled: bool = True) -> None:
    """Allow (or forbid again) executing the plugin code recorded in runs this process reads; the
    environment carries it to worker processes and torchrun ranks."""
    if enabled:
        os.environ[TRUST_VARIABLE] = "1"
    else:
        os.environ.pop(TRUST_VARIABLE, None)


def trusted() -> bool:
    """Whether SLMLAB_TRUST_PLUGINS says to trust (1, true, yes, on); any other value but the
    words for no (0, false, no, off, unset) is a ConfigError: "false" trusted, as every value did
    but 0, and plugin code ran from a run whose user had said no."""
    value = os.environ.get(TRUST_VARIABLE, "")
    said = TRUST_WORDS.get(value.strip().lower())
    if said is None:
        raise ConfigError(f"{TRUST_VARIABLE}={value!r} says neither yes nor no: set it to 1 to trust plugin code, 0 not to")
    return said


def is_file_spec(spec: str) -> bool:
    """'ideas/gate.py' or '/abs/gate.py' name files; 'mypkg.ideas' names an importable module."""
    return spec.endswith(".py") or "/" in spec or os.sep in spec


def resolve(specs: list | str, base: Path) -> list:
    """File specs made absolute against `base` (the config's folder; "~" is the home folder);
    module names unchanged. One spec given as a string (plugins = "gate.py") is a list of one."""
    if isinstance(specs, str):
        specs = [specs]
    if not isinstance(specs, list):
        return specs  # the schema check names the mistake
    for spec in specs:
        if isinstance(spec, str) and "\0" in spec:
            raise ConfigError(f"plugins: {spec!r} holds a NUL character, which no path or module name can; remove it")
    return [_absolute(Path(s).expanduser(), base) if isinstance(s, str) and is_file_spec(s) else s for s in specs]


def _absolute(path: Path, base: Path) -> str:
    return str(path if path.is_absolute() else (base / path).resolve())


def activate(specs: list[str]) -> list[Plugin]:
    """Import every plugin not yet imported in this process; one imported already is refused if
    its file has changed since (this process runs the code it imported: a run trained now would
    record the edit it never ran, or a notebook would train without it, unawares)."""
    return [_unchanged(_active[spec]) if spec in _active else _import(spec) for spec in specs]


def _other_code(path: Path, plugin: Plugin) -> str | None:
    """The SHA-256 of the file `path` where it holds other code than `plugin` runs; None where it
    holds the same, or is gone (the code imported stands)."""
    now = sha256_file(path) if path.is_file() else plugin.sha256
    return now if now != plugin.sha256 else None


def _unchanged(plugin: Plugin) -> Plugin:
    if now := _other_code(plugin.source, plugin):
        raise ConfigError(
            f"plugin {plugin.spec} changed since this process imported it (sha256 {plugin.sha256[:12]} then, {now[:12]} "
            "now), and Python cannot import it again: restart the process (in a notebook, the kernel) to use the new code"
        )
    return plugin


def owner_of(module: str) -> Plugin | None:
    """The imported plugin whose code `module` (an entry's __module__) is, or None (slmlab's own,
    or code registered from outside any plugin)."""
    for plugin in _active.values():
        if module == plugin.module or module.startswith(plugin.module + "."):
            return plugin
    return None


def _import(spec: str, source: Path | None = None) -> Plugin:
    """Import `spec` (from `source`, a recorded copy, when given) and remember it."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"plugins: expected a file path or module name, got {spec!r}")
    if source is None and not is_file_spec(spec):
        module = _import_module(spec)
        path = Path(getattr(module, "__file__", "") or "")
        if not path.is_file():
            raise ConfigError(f"plugin '{spec}' has no source file to record (a namespace package?); name its module file")
        code = path.read_bytes()
        plugin = Plugin(spec, spec, path, hashlib.sha256(code).hexdigest(), code)
    else:
        path = source or Path(spec)
        if not path.is_file():
            raise ConfigError(f"plugin file not found: {path} (plugins = [...] paths are relative to the config file)")
        if path.suffix != ".py":  # Python imports no other file: spec_from_file_location gave None
            raise ConfigError(f"plugin file {path} is not Python source: name a .py file, or an importable module")
        name, code = module_name(spec), path.read_bytes()  # read before it runs: the code recorded is the code run
        _exec_file(spec, name, path)
        plugin = Plugin(spec, name, path, hashlib.sha256(code).hexdigest(), code)
    _active[spec] = plugin
    return plugin


def module_name(spec: str) -> str:
    """The module a plugin is imported as: its name for a module, `slmlab_plugin_<stem>_<hash>` for
    a file (the hash of its path: two `idea.py` in different folders are two modules, and two
    copies in RUN/plugins)."""
    if not is_file_spec(spec):
        return spec
    stem = re.sub(r"\W", "_", Path(spec).stem)
    return f"slmlab_plugin_{stem}_{hashlib.sha1(spec.encode()).hexdigest()[:8]}"


def _import_module(spec: str):
    try:
        return importlib.import_module(spec)
    except ModuleNotFoundError as err:
        raise ConfigError(f"plugin module '{spec}' cannot be imported ({err}); install it or name its .py file") from None
    except ConfigError:
        raise
    except Exception as err:  # the plugin's own code failed: say which plugin and why, in one line
        raise ConfigError(f"plugin '{spec}' failed to import: {type(err).__name__}: {err}") from None


def _exec_file(spec: str, name: str, path: Path) -> None:
    loader_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    try:
        loader_spec.loader.exec_module(module)
    except ConfigError:
        sys.modules.pop(name, None)
        raise
    except Exception as err:
        sys.modules.pop(name, None)
        raise ConfigError(f"plugin '{spec}' failed to import: {type(err).__name__}: {err}") from None


# ---- recording in a run directory ----------------------------------------------------------
def check_current(specs: list[str]) -> None:
    """Refuse to start a new run on a plugin this process runs from another run's recorded copy
    (read back with --trust-plugins) while the plugin's own file now holds other code: the new run
    would train the old copy, unawares."""
    for plugin in activate(specs):
        original = Path(plugin.spec)
        if is_file_spec(plugin.spec) and plugin.source != original and (now := _other_code(original, plugin)):
            raise ConfigError(
                f"this process runs plugin {plugin.spec} as the copy recorded in {plugin.source.parent.parent} (sha256 "
                f"{plugin.sha256[:12]}), but the file now holds other code ({now[:12]}): a new run would train the copy; "
                "start it in a fresh process"
            )


def record(folder: Path, specs: list[str]) -> None:
    """Copy each active plugin's source into `folder` (RUN/plugins) and write the manifest."""
    entries = []
    folder.mkdir(parents=True, exist_ok=True)
    for plugin in activate(specs):
        copy = f"{plugin.module}.py"
        atomic_write_bytes(folder / copy, plugin.code)
        entries.append(
            {"spec": plugin.spec, "module": plugin.module, "source": str(plugin.source), "copy": copy, "sha256": plugin.sha256}
        )
    atomic_write_text(folder / MANIFEST, json.dumps({"plugins": entries}, indent=2) + "\n")


def activate_recorded(folder: Path, specs: list[str], run: Path) -> None:
    """Make the plugins a run recorded in `folder` active, executing their recorded copies only
    when trusted; see the module docstring for the rules."""
    manifest = folder / MANIFEST
    fix = f"the run's plugin record is missing or damaged; restore {folder} from a copy of the run"
    recorded = read_json(manifest, "plugin manifest", RunFileError, fix).get("plugins", []) if manifest.is_file() else []
    entries = {e.get("spec"): e for e in recorded if isinstance(e, dict)} if isinstance(recorded, list) else {}
    for spec in specs:
        entry = entries.get(spec)
        if entry is None or not isinstance(entry.get("sha256"), str):
            raise RunFileError(f"{run}: plugin '{spec}' is not recorded in {manifest}; {fix}")
        loaded = _active.get(spec)
        if loaded is not None:
            if loaded.sha256 != entry["sha256"]:
                raise ConfigError(
                    f"plugin '{spec}' changed since {run} was made (sha256 {loaded.sha256[:12]} now, "
                    f"{entry['sha256'][:12]} then); restore it, or load the run in a fresh process with "
                    "--trust-plugins to use its recorded copy"
                )
            continue
        if not trusted():
            raise PluginTrustError(
                f"{run} uses plugin code ({', '.join(specs)}); read {folder} and pass --trust-plugins "
                f"(or set {TRUST_VARIABLE}=1) to let it run"
            )
        copy = folder / str(entry.get("copy", ""))
        if not copy.is_file() or sha256_file(copy) != entry["sha256"]:
            raise RunFileError(f"{copy}: the recorded plugin copy is missing or does not match its sha256; {fix}")
        _import(spec, source=copy)
        _warn_if_changed(spec, entry, run)


def _warn_if_changed(spec: str, entry: dict, run: Path) -> None:
    original = Path(str(entry.get("source", "")))
    if original.is_file() and sha256_file(original) != entry["sha256"]:
        log.warning("plugin '%s' changed since %s was made; using the run's recorded copy", spec, run)


# ---- carried inside an exported model (slmlab export --to hf) -------------------------------
def embed(specs: list[str]) -> list[dict]:
    """[{spec, module, sha256, source}] of each plugin: the code an exported model needs to run."""
    return [{"spec": p.spec, "module": p.module, "sha256": p.sha256, "source": p.code.decode("utf-8")} for p in activate(specs)]


def activate_embedded(entries: list[dict], folder: Path) -> list[str]:
    """Import the plugins `embed` carried (the caller has the user's consent to run them: Hugging
    Face's trust_remote_code), each checked against its SHA-256 first and written to
    `folder`/<sha256>/ (again, where the copy there differs: a damaged cache) -> their specs. A
    plugin already imported with other code is an error, as for a run."""
    specs = []
    for entry in entries:
        spec, digest, source = entry.get("spec"), entry.get("sha256"), entry.get("source")
        if not all(isinstance(v, str) for v in (spec, digest, source)):
            raise RunFileError("an embedded plugin entry lacks its spec, sha256 or source; export the run again")
        loaded = _active.get(spec)
        if loaded is not None and loaded.sha256 != digest:
            raise ConfigError(
                f"plugin '{spec}' is already imported with other code (sha256 {loaded.sha256[:12]}); use a fresh process"
            )
        if hashlib.sha256(source.encode("utf-8")).hexdigest() != digest:
            raise RunFileError(f"embedded plugin '{spec}' does not match its sha256; export the run again")
        if loaded is None:
            path = folder / digest / f"{module_name(spec)}.py"
            if not path.is_file() or sha256_file(path) != digest:
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(path, source.encode("utf-8"))
            _import(spec, source=path)
        specs.append(spec)
    return specs
