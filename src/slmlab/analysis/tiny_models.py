"""The tiny models `slmlab check` builds from a config: its model at tiny shapes, and for a
curriculum one per distinct model its phases train."""

from __future__ import annotations

import json
from dataclasses import fields

from ..config import ConfigError, ModelConfig, RunConfig, apply_overrides, config_from_dict
from ..registry import MODEL_SECTIONS
from ..training.kernel_choice import forces_flex

TINY = {"n_layer": 2, "n_head": 4, "d_model": 32, "d_ff": 0, "block_size": 40, "vocab_size": 61, "local_block": 4}


def tiny_sizes(cfg: RunConfig) -> dict:
    """The settings tiny_config tries, in order: TINY's, then each section's own `tiny` sizes
    (register_section) that are below the config's values."""
    sizes = {f"model.{key}": value for key, value in TINY.items()}
    for name, section in MODEL_SECTIONS.items():
        own = cfg.model.sections.get(name)
        for key, value in section.tiny.items():
            if own is not None and value < getattr(own, key):
                sizes[f"model.{name}.{key}"] = value
    return sizes


def shrunk_sections(given: ModelConfig, tiny: ModelConfig) -> str:
    """The section sizes the tiny model took from a section's `tiny` (for check's header line):
    "; model.tape at n_critics = 2, coda_layers = 1", or "" where none."""
    notes = []
    for name, section in tiny.sections.items():
        changed = [
            f"{key} = {getattr(section, key)}"
            for key in (f.name for f in fields(section))
            if getattr(section, key) != getattr(given.sections[name], key)
        ]
        if changed:
            notes.append(f"model.{name} at {', '.join(changed)}")
    return "".join(f"; {note}" for note in notes)


def tiny_config(cfg: RunConfig) -> ModelConfig:
    """cfg.model at tiny shapes: each of tiny_sizes is taken only if the config still checks with
    it (an architecture's own rules, per-layer pattern lists, a plugin's constraints). Block-local
    layers run the "windows" kernel: the check runs on CPU, where FlexAttention has no backward
    (and no float64); the "flex" kernel computes the same pattern (tests/test_local_kernel.py)."""
    values = cfg.to_dict()
    values["phases"] = []
    accepted: dict = {"model.local_kernel": "windows"} if forces_flex(cfg.model) else {}
    for key, value in tiny_sizes(cfg).items():
        trial = {**accepted, key: value}
        if key == "model.block_size":  # the windows trained on must fit the tiny context; the probe reads no data
            trial["data.seq_len"] = min(cfg.data.seq_len, value)
        if key == "model.local_block" and cfg.model.local_block <= value:
            continue
        try:
            config_from_dict(apply_overrides(values, trial))
        except ConfigError:
            continue
        accepted = trial
    return config_from_dict(apply_overrides(values, accepted)).model


def models_to_check(label: str, cfg: RunConfig) -> dict[str, RunConfig]:
    """The configs whose models `slmlab check` holds to the properties: `cfg` itself, or for a
    curriculum one per distinct tiny model its phases train (attention, RoPE scaling and the like
    change from phase to phase), labelled with the phases that train it."""
    if not cfg.phases:
        return {label: cfg}
    groups: dict[str, tuple[list[str], RunConfig]] = {}
    for index, phase in enumerate(cfg.phases):
        phase_cfg = cfg.phase(index)
        key = json.dumps(tiny_config(phase_cfg).to_dict(), sort_keys=True)
        groups.setdefault(key, ([], phase_cfg))[0].append(phase.name)
    return {f"{label} phase {'+'.join(names)}": phase_cfg for names, phase_cfg in groups.values()}
