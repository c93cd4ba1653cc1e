"""Settings a config would ignore: changed from their defaults, yet read by nothing the config
chooses (model.rope_scale with learned positions, data.vocab_size with a char tokenizer, a
variant section's setting whose switch is off, tracker settings with no tracker). Each is refused
in one line, so a user never believes a change took effect that did not."""

from __future__ import annotations

from ..errors import ConfigError
from ..registry import MODEL_SECTIONS
from ..tables import counted
from .checks import default_at, first_change, value_at
from .values import toml_literal

# A setting read only under some choices: key -> (the choice, the built-in values that ignore it).
# Only built-in values are listed, so a plugin's position scheme or tokenizer may read the setting.
IGNORED_UNDER = {
    "model.rope_theta": ("model.pos", ("learned", "sinusoidal")),
    "model.rope_scale": ("model.pos", ("learned", "sinusoidal")),
    "model.rope_fraction": ("model.pos", ("learned", "sinusoidal")),
    "model.student_t_nu": ("model.head", ("linear",)),
    "data.vocab_size": ("data.tokenizer", ("byte", "char", "gpt2")),
    "data.tiktoken_file": ("data.tokenizer", ("byte", "char", "bpe")),
    "train.decay_fraction": ("train.schedule", ("cosine",)),
    "train.keep_checkpoints": ("train.checkpoint_every", (0,)),  # only the final checkpoint is written
    **{f"train.tracker_{name}": ("train.trackers", ([],)) for name in ("project", "group", "tags")},
}

# Settings a built-in choice does not read, but that a config written for another choice carries
# into it (a decoder config trained as the TapeTransformer with --model.arch tape, a test config's
# weight_decay = 0 under --train.optimizer wolf): the trainer warns of them (`unread_settings`)
# rather than refusing, so that switching one choice on the command line keeps working.
# key -> (the choice, the built-in values that do not read it, what they read instead)
UNREAD_UNDER = {
    "model.n_layer": ("model.arch", ("tape",), "its depth is model.tape's coda_layers and critic_layers"),
    "model.d_ff": ("model.arch", ("tape",), "its MLP width is model.tape.mlp_expand x model.d_model"),
    **{
        f"train.{name}": ("train.optimizer", ("wolf",), "it reads only train.lr and applies no weight decay")
        for name in ("weight_decay", "beta1", "beta2")
    },
}


def unread_settings(cfg) -> list[str]:
    """One warning per setting of `cfg` changed from its default that its choices do not read
    (UNREAD_UNDER): `model.n_layer = 2 is not read with model.arch = "tape" (...)`."""
    found = []
    for key, (choice, ignoring, instead) in UNREAD_UNDER.items():
        value, chosen = value_at(cfg, key), value_at(cfg, choice)
        if chosen in ignoring and value != default_at(cfg, key):
            found.append(
                f"{key} = {toml_literal(value)} is not read with {choice} = {toml_literal(chosen)} ({instead}): it changes nothing in this run"
            )
    return found


def ignored_settings(configs: list) -> list[tuple[str, str]]:
    """(key, one-line message) for each setting changed from its default that every config in
    `configs` ignores: model.rope_scale with learned positions, data.vocab_size with a char
    tokenizer, a variant section's setting read only with a switch that is off (a section's
    `read_with`: model.smat.s_dim with use_S and use_G both false) or while the choice that names
    it names another (a section's `chosen_by`: an MLP plugin's settings with another model.mlp),
    attention settings no layer reads. Each config counts as it is, so a curriculum's phases or a sweep's variants use a
    setting if any one of them does."""
    return [*_ignored_under_choices(configs), *_ignored_under_switches(configs), *_ignored_attention_settings(configs)]


def _ignored_under_choices(configs: list) -> list[tuple[str, str]]:
    found = []
    for key, (choice, ignoring) in IGNORED_UNDER.items():
        default = default_at(configs[0], key)
        if all(value_at(c, choice) in ignoring and value_at(c, key) != default for c in configs):
            value, chosen = value_at(configs[0], key), value_at(configs[0], choice)
            found.append((key, f"{key} = {toml_literal(value)} is ignored with {choice} = {toml_literal(chosen)}; remove it"))
    return found


def _ignored_under_switches(configs: list) -> list[tuple[str, str]]:
    found = []
    for name, section in MODEL_SECTIONS.items():
        default = section.config()
        changed = [c for c in configs if first_change(getattr(c.model, name))]
        if section.chosen_by and changed and all(value_at(c, section.chosen_by) != name for c in configs):
            setting, value = first_change(getattr(changed[0].model, name))
            found.append(
                (
                    f"model.{name}.{setting}",
                    f"model.{name}.{setting} = {toml_literal(value)} is read only with {section.chosen_by} = {toml_literal(name)}; "
                    "remove it or choose it",
                )
            )
        for setting, switches in section.read_with.items():
            key, keys = f"model.{name}.{setting}", [f"model.{name}.{switch}" for switch in switches]
            if all(value_at(c, key) != getattr(default, setting) and not any(value_at(c, k) for k in keys) for c in configs):
                value = value_at(configs[0], key)
                found.append(
                    (
                        key,
                        f"{key} = {toml_literal(value)} is read only with {' or '.join(keys)} = true; remove it or turn that on",
                    )
                )
    return found


def _ignored_attention_settings(configs: list) -> list[tuple[str, str]]:
    found, m, defaults = [], configs[0].model, type(configs[0].model)()
    if all(c.model.pattern_names == {"full"} and c.model.local_block != defaults.local_block for c in configs):
        found.append(
            ("model.local_block", f"model.local_block = {m.local_block} is ignored with full attention in every layer; remove it")
        )
    if all(c.model.attention_layers and c.model.attention != defaults.attention for c in configs):
        found.append(
            (
                "model.attention",
                f"model.attention = {m.attention!r} is ignored: model.attention_layers names every layer's pattern; "
                "remove one of them",
            )
        )
    if all(
        c.model.global_every == 1 and c.model.attention != defaults.attention and not c.model.attention_layers for c in configs
    ):
        found.append(
            (
                "model.attention",
                f"model.attention = {m.attention!r} is ignored: model.global_every = 1 makes every layer full attention; "
                "remove one of them",
            )
        )
    if all(c.model.global_every and (c.model.attention == "full" or c.model.attention_layers) for c in configs):
        found.append(
            (
                "model.global_every",
                f"model.global_every = {m.global_every} makes every k-th layer of a local model.attention full; "
                f"with model.attention = {m.attention!r}"
                + (" and model.attention_layers" if m.attention_layers else "")
                + " it changes nothing; remove it",
            )
        )
    elif all(c.model.global_every > c.model.n_layer for c in configs):
        found.append(
            (
                "model.global_every",
                f"model.global_every = {m.global_every} makes every k-th layer full, but the model has "
                f"{counted(m.n_layer, 'layers')}: it changes nothing; lower it to at most model.n_layer",
            )
        )
    return found


def set_by_first_phase(cfg) -> dict[str, tuple[str, object]]:
    """key -> (phase name, value) for each setting a curriculum's first phase sets: the run's own
    value of it is read by no phase, since each later phase starts from the one before it."""
    if not cfg.phases:
        return {}
    first = cfg.phases[0]
    return {key: (first.name, value) for key, value in first.overrides().items()}


def replaced_by_phases(cfg) -> list[tuple[str, str]]:
    """(key, one-line message) for each setting changed from its default, and from the value the
    first phase gives it, that no phase of the curriculum reads (`--train.steps 5000` on a config
    whose phases train 400 and 200 steps)."""
    found = []
    for key, (phase, value) in set_by_first_phase(cfg).items():
        given = value_at(cfg, key)
        if given != default_at(cfg, key) and given != value:
            found.append(
                (
                    key,
                    f"{key} = {toml_literal(given)} is ignored: the curriculum's first phase ({phase}) sets {key.partition('.')[2]} = {toml_literal(value)} and "
                    f"each later phase starts from the one before it; remove it or change the phase's "
                    f"(--phases.{phase}.{key.partition('.')[2]}, or in [[phases]])",
                )
            )
    return found


def ignored_in_phases(cfg, phase_configs: list | None = None) -> list[tuple[str, str]]:
    """(key, one-line message) for each setting a curriculum's phase changes that the phase's own
    config ignores (`ignored_settings` of that phase alone): phase B's rope_scale = 2.0 on a model
    with learned positions, or its attention = "block_local" where model.attention_layers names
    every layer's pattern, trained phase B as if the line were not there. `phase_configs`:
    `cfg.phase_configs()` where the caller has them already (each is built anew otherwise)."""
    found = []
    for index, (phase, phase_config) in enumerate(zip(cfg.phases, phase_configs or cfg.phase_configs())):
        changed = phase.overrides()
        for key, message in ignored_settings([phase_config]):
            if key in changed:
                found.append((key, f"phases[{index}] ({phase.name}): {message}"))
    return found


def check_no_ignored_setting(cfg, keys=None) -> None:
    """Refuse a setting changed from its default that the config ignores (`ignored_settings`, where
    a curriculum's setting counts if any phase uses it, `replaced_by_phases`, and
    `ignored_in_phases`): it would change nothing while the user believes it did. With `keys`,
    only those settings (the ones a user just gave, on top of a config that loads as it is). For
    configs a user writes (load_config) and overrides of a trained run's config; a run's recorded
    config.json loads as it is."""
    phase_configs = cfg.phase_configs()
    for key, message in [*ignored_settings(phase_configs), *replaced_by_phases(cfg), *ignored_in_phases(cfg, phase_configs)]:
        if keys is None or key in keys:
            raise ConfigError(message)
