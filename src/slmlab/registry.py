"""Registries: every kind of extension slmlab knows, by name, and `build_model`.

The backbone, the built-in variants and a user's plugin all fill these with the same calls; a
config's allowed values (model.pos, model.attention, model.head, model.norm, model.arch,
data.tokenizer, train.optimizer, train.trainable, train.trackers) are exactly what is registered, so there is no
second list to keep in sync.

    POSITIONS.register("rope", RotaryPositions)            # a class built as cls(cfg)
    ATTENTION_EXTENSIONS.register("smat", build_smat)      # builder(cfg, layer) -> module | None
    register_section("smat", SmatConfig, extends="attention")   # [model.smat] is validated
    register_model_check(check_smat)                       # a rule on the model settings

Built-in modules register themselves when imported; `load_builtins()` imports them (once), the
same way a plugin module is imported. Nothing here imports torch.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


# what other tools (PyTorch, Hugging Face, tiktoken) call a value slmlab spells otherwise: read for hints only
OTHER_VALUE_NAMES = {
    **dict.fromkeys(("rotary", "rotary_embedding"), "rope"),
    **dict.fromkeys(("absolute", "learned_absolute"), "learned"),
    **dict.fromkeys(("sliding_window", "sliding", "local", "windowed"), "block_local"),
    **dict.fromkeys(("causal", "dense", "global"), "full"),
    **dict.fromkeys(("silu", "swish"), "swiglu"),
    **dict.fromkeys(("rms_norm", "rms"), "rmsnorm"),
    **dict.fromkeys(("layer_norm", "ln"), "layernorm"),
    **dict.fromkeys(("bfloat16",), "bf16"),
    **dict.fromkeys(("float32", "float"), "fp32"),
    **dict.fromkeys(("tiktoken", "gpt_2"), "gpt2"),
    **dict.fromkeys(("adam",), "adamw"),
}


def closest(name: str, options, prefix: str = "") -> str:
    """' (did you mean 'x'?)' for the option `name` stands for, else ''; `prefix`: the section the
    options lie in, named with the match ('model.pos', as the key that was mistyped is). The one
    spelled the same but for case and dashes (RMSNorm: rmsnorm), else the one another tool's name
    is (OTHER_VALUE_NAMES: rotary is rope), else the closest spelling."""
    options, folded = [str(o) for o in options], str(name).lower().replace("-", "_")
    match = (
        [o for o in options if o.lower().replace("-", "_") == folded]
        or [o for o in options if OTHER_VALUE_NAMES.get(folded) == o]
        or difflib.get_close_matches(str(name), options, n=1, cutoff=0.5)
    )
    return f" (did you mean '{prefix + '.' if prefix else ''}{match[0]}'?)" if match else ""


class Registry(Generic[T]):
    """Names -> entries of one extension kind. `config_key` is the config field whose value must
    be one of the names (None: entries are not chosen by one field)."""

    def __init__(self, kind: str, config_key: str | None = None):
        self.kind, self.config_key = kind, config_key
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T | None = None):
        """Register `entry` under `name`; without an entry, a decorator. Registering the same
        entry twice is harmless (a module imported again); another entry under a taken name is
        an error."""
        if entry is None:
            return lambda actual: self.register(name, actual)
        if not isinstance(name, str) or not name:
            raise ConfigError(f"a {self.kind} needs a non-empty name, got {name!r}")
        known = self._entries.get(name)
        if known is not None and known is not entry and _qualname(known) != _qualname(entry):
            raise ConfigError(f"{self.kind} '{name}' is registered twice ({_qualname(known)} and {_qualname(entry)}); rename one")
        self._entries[name] = entry
        return entry

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            label = self.config_key or self.kind
            raise ConfigError(
                f"{label} = {name!r} is not one of {', '.join(self._entries)}{closest(name, self._entries)}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, name: str, default: T | None = None) -> T | None:
        return self._entries.get(name, default)

    def items(self):
        return self._entries.items()

    def values(self):
        return self._entries.values()


def _qualname(entry: Any) -> str:
    """What identifies an entry across imports of its module (a plugin loaded again, from its
    run's recorded copy say): module and name; a table (dict) by its keys."""
    if isinstance(entry, dict):
        return f"table of {sorted(entry)}"
    return f"{getattr(entry, '__module__', '?')}.{getattr(entry, '__qualname__', repr(entry))}"


@dataclass(frozen=True)
class Section:
    """A `[model.<name>]` config section: its dataclass, and what it configures. `extends` names
    the extension point it plugs into ("attention" extensions, "conditioning"), or `arch` the one
    architecture it belongs to; an architecture that does not offer that point refuses a section
    set away from its defaults (the setting would be ignored). `read_with` maps a setting to the
    section's switches of which one must be on for it to be read ({"s_dim": ("use_S", "use_G")});
    changed with every one off, it is refused. `chosen_by` names the model choice that selects the
    idea by this section's name (an MLP plugin's "model.mlp": `model.mlp = "<name>"`); changed
    while that choice names something else, the section is refused too. `tiny` gives the
    section's sizes for `slmlab check`'s tiny model ({"n_critics": 2}): each is taken where it is
    below the config's own and the config still checks with it."""

    name: str
    config: type
    extends: str = ""
    arch: str = ""
    read_with: dict[str, tuple[str, ...]] = field(default_factory=dict)
    chosen_by: str = ""
    tiny: dict[str, int | float] = field(default_factory=dict)


# ---- the registries ------------------------------------------------------------------------
POSITIONS: Registry[type] = Registry("position scheme", "model.pos")
ATTENTION_PATTERNS: Registry[type] = Registry("attention pattern", "model.attention")
ATTENTION_EXTENSIONS: Registry[Callable] = Registry("attention extension")  # (cfg, layer) -> module | None
CONDITIONING: Registry[Callable] = Registry("residual conditioning")  # (cfg) -> module | None
NORMS: Registry[Callable] = Registry("norm", "model.norm")  # (cfg, dim) -> module
MLPS: Registry[type] = Registry("MLP", "model.mlp")  # cls(cfg): (B, T, d_model) -> (B, T, d_model)
HEADS: Registry[type] = Registry("LM head", "model.head")
ARCHITECTURES: Registry[type] = Registry("architecture", "model.arch")  # cls(cfg, extensions)
TOKENIZERS: Registry[Callable] = Registry("tokenizer", "data.tokenizer")  # (data cfg, training texts) -> Tokenizer
# kind -> (spec dict) -> Tokenizer: reads back what a tokenizer's to_json() wrote ({"slmlab_tokenizer": kind, ...})
TOKENIZER_FILES: Registry[Callable] = Registry("tokenizer file reader")
OPTIMIZERS: Registry[Callable] = Registry("optimizer", "train.optimizer")  # (model, train cfg, device) -> optimizer
TRAINABLE: Registry[Callable] = Registry("trainable-parameter selection", "train.trainable")  # (model) -> params | None
TRACKERS: Registry[Callable] = Registry("tracker", "train.trackers")  # (cfg, run path, resume) -> tracker (training/trackers.py)
MODEL_SECTIONS: Registry[Section] = Registry("model config section")
INTERVENTIONS: Registry[Any] = Registry("intervention")  # name -> model.interventions.Intervention
ABLATION_SUMMARIES: Registry[Callable] = Registry("ablation summary")  # (rows) -> (text, result) | None
NAIVE_REFERENCES: Registry[Callable] = Registry("naive reference")  # (attention, h, positions) -> output | None (slmlab check)
NAIVE_MODEL_REFERENCES: Registry[Callable] = Registry("naive model reference")  # (model, idx) -> logits | None (slmlab check)
CONFIG_CHECKS: list[Callable] = []  # (RunConfig) -> None, raising ConfigError
MODEL_CHECKS: list[Callable] = []  # (ModelConfig) -> None, raising ConfigError: a config's and build_model's

CHOICE_REGISTRIES = (POSITIONS, ATTENTION_PATTERNS, NORMS, MLPS, HEADS, ARCHITECTURES, TOKENIZERS, OPTIMIZERS, TRAINABLE)


# Names a section cannot take because `cfg.model.<name>` already means something: ModelConfig's
# fields, properties and methods (config/schema.py fills this where ModelConfig is defined).
MODEL_ATTRIBUTES: set[str] = set()


def check_section_name(name: str) -> None:
    """A section is read as `cfg.model.<name>`: a name that is already a ModelConfig field,
    property or method (model.dropout, model.head_dim, model.to_dict), or private, would read that
    instead, so it is refused."""
    if not name.isidentifier() or name.startswith("_"):
        raise ConfigError(f"[model.{name}] cannot be a section: {name!r} is not a public identifier; pick another name")
    if name in MODEL_ATTRIBUTES:
        raise ConfigError(
            f"[model.{name}] cannot be a section: model.{name} is already a model setting or attribute; pick another name"
        )


def register_section(
    name: str,
    config: type,
    *,
    extends: str = "",
    arch: str = "",
    read_with: dict[str, tuple[str, ...]] | None = None,
    chosen_by: str = "",
    tiny: dict[str, int | float] | None = None,
) -> None:
    """Declare `[model.<name>]`, validated as `config` (a dataclass) like the built-in sections;
    `read_with`: the settings read only when one of their switches (boolean fields) is on;
    `chosen_by`: the model choice ("model.mlp", "model.norm", ... : a CHOICE_REGISTRIES key) under
    which the section is read only while that choice is `name`; `tiny`: the smaller sizes (layer
    counts, widths) `slmlab check` builds its tiny model with, so that it checks every code path
    of the idea in seconds rather than at the config's depth."""
    if not (isinstance(config, type) and is_dataclass(config)):
        raise ConfigError(
            f"[model.{name}] is registered with {getattr(config, '__name__', repr(config))}, not a dataclass: decorate it with @dataclass"
        )
    choices = [r.config_key for r in CHOICE_REGISTRIES if r.config_key.startswith("model.")]
    if chosen_by and chosen_by not in choices:
        raise ConfigError(f"[model.{name}] chosen_by = {chosen_by!r} is not a model choice: give one of {', '.join(choices)}")
    check_section_name(name)
    names = {f.name for f in fields(config)} if read_with or tiny else set()
    for setting, switches in (read_with or {}).items():
        unknown = [n for n in (setting, *switches) if n not in names]
        if unknown or not switches:
            raise ConfigError(f"[model.{name}] read_with names {unknown or 'no switch'}: give the section's own fields")
    if unknown := sorted(set(tiny or {}) - names):
        raise ConfigError(f"[model.{name}] tiny names {unknown}: give the section's own fields")
    if not_sizes := sorted(k for k, v in (tiny or {}).items() if isinstance(v, bool) or not isinstance(v, (int, float))):
        raise ConfigError(f"[model.{name}] tiny gives {not_sizes} a value that is not a number: give the smaller sizes")
    MODEL_SECTIONS.register(name, Section(name, config, extends, arch, dict(read_with or {}), chosen_by, dict(tiny or {})))


def require_members(entry: T, kind: str, name: str, members: tuple[str, ...]) -> T:
    """`entry`, built from the `kind` registered as `name`, if it has every member the backbone
    reads of that kind (docs/architecture.md's extension points); else a ConfigError naming what
    it lacks (a plugin's class that left one out failed later, with an AttributeError)."""
    missing = [member for member in members if not hasattr(entry, member)]
    if missing:
        built = entry if isinstance(entry, type) else type(entry)
        raise ConfigError(
            f"{kind} '{name}' ({built.__name__}) has no {', '.join(missing)}, which slmlab reads of every "
            f"{kind}: add {'them' if len(missing) > 1 else 'it'} (docs/architecture.md, extension points)"
        )
    return entry


def register_check(check: Callable) -> Callable:
    """A config rule that spans sections: check(cfg) raises ConfigError with one line."""
    if check not in CONFIG_CHECKS:
        CONFIG_CHECKS.append(check)
    return check


def register_model_check(check: Callable) -> Callable:
    """A rule on the model settings alone: check(model_cfg) raises ConfigError with one line. It
    holds for a loaded config and for a ModelConfig made in code, which build_model checks too."""
    if check not in MODEL_CHECKS:
        MODEL_CHECKS.append(check)
    return check


# ---- built-ins and building ----------------------------------------------------------------
BUILTINS = (
    "slmlab.model",  # the backbone: positions, patterns, norms, heads, the decoder
    "slmlab.data.tokenizer_kinds",
    "slmlab.training.optim",
    "slmlab.training.trackers",
    "slmlab.variants",  # SMAT, the Self Area, the TapeTransformer: registered as a plugin is
)
_loaded = False


def load_builtins() -> None:
    """Import the built-in extension modules (they register themselves); cheap after the first call."""
    global _loaded
    if not _loaded:
        _loaded = True
        for module in BUILTINS:
            importlib.import_module(module)


def is_builtin_module(module: str) -> bool:
    """Whether `module` (a class's or function's __module__) is slmlab's own code: not a
    plugin's (imported as its own module, `plugins.module_name`), a notebook's or a library's."""
    return module == "slmlab" or module.startswith("slmlab.")


# what the generic tools call on every built architecture (model/protocol.py's LanguageModel)
MODEL_MEMBERS = ("cfg", "make_caches", "generate", "generate_many", "decodes_padded", "shard_units", "describe")


def build_model(cfg):
    """A fresh, initialised model for a ModelConfig (vocab_size resolved). The architecture is
    handed the attention extensions and the residual conditioning the registered builders make
    for this config; it never looks them up itself."""
    if not hasattr(cfg, "arch"):  # a dict, a path, a RunConfig
        given = type(cfg).__name__
        hint = (
            ": give its .model"
            if given == "RunConfig"
            else " (slmlab.config.ModelConfig(n_layer=..., ...), or a RunConfig's .model)"
        )
        raise ConfigError(f"build_model takes a ModelConfig, got {given}{hint}")
    load_builtins()
    cfg.check(building=True)  # before any builder reads it: a wrong value fails in one line, not inside torch
    architecture = ARCHITECTURES[cfg.arch]

    def attention_extensions(layer: int) -> list:
        built = (build(cfg, layer) for build in ATTENTION_EXTENSIONS.values())
        return [module for module in built if module is not None]

    token = _INIT_SEED.set(_draw_seed())  # before anything a variant builds draws: every variant draws the same one
    try:
        built = {name: m for name, m in ((name, build(cfg)) for name, build in CONDITIONING.items()) if m is not None}
        if len(built) > 1:
            raise ConfigError(
                f"the model would have {len(built)} residual conditionings ({', '.join(built)}), and an "
                "architecture takes one: switch all but one off"
            )
        conditioning = next(iter(built.values()), None)
        model = architecture(cfg, attention_extensions=attention_extensions, conditioning=conditioning)
        return require_members(model, "architecture", cfg.arch, MODEL_MEMBERS)
    finally:
        _INIT_SEED.reset(token)


_INIT_SEED: ContextVar[int | None] = ContextVar("slmlab_init_seed", default=None)


def init_seed() -> int:
    """The init seed of the model being built (model/initialization.py draws each module's weights
    from it by name): the one build_model drew before building anything, else a fresh draw."""
    seed = _INIT_SEED.get()
    return seed if seed is not None else _draw_seed()


def _draw_seed() -> int:
    """One draw from torch's global CPU generator (under any default device)."""
    import torch  # here, not at the top: the CLI's parser imports the registry without torch

    return int(torch.randint(0, 2**62, (1,), device="cpu").item())
