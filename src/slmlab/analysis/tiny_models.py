"""The tiny models `slmlab check` builds from a config: its model at tiny shapes, and for a
curriculum one per distinct model its phases train."""

from __future__ import annotations

import json

from ..config import ConfigError, ModelConfig, RunConfig, apply_overrides, config_from_dict
from ..training.kernel_choice import forces_flex

TINY = {"n_layer": 2, "n_head": 4, "d_model": 32, "d_ff": 0, "block_size": 40, "vocab_size": 61, "local_block": 4}


def tiny_config(cfg: RunConfig) -> ModelConfig:
    """cfg.model at tiny shapes: each TINY setting is taken only if the config still checks with
    it (an architecture's own rules, per-layer pattern lists, a plugin's constraints). Block-local
    layers run the "windows" kernel: the check runs on CPU, where FlexAttention has no backward
    (and no float64); the "flex" kernel computes the same pattern (tests/test_local_kernel.py)."""
    values = cfg.to_dict()
    values["phases"] = []
    accepted: dict = {"model.local_kernel": "windows"} if forces_flex(cfg.model) else {}
    for key, value in TINY.items():
        trial = {**accepted, f"model.{key}": value}
        if key == "block_size":  # the windows trained on must fit the tiny context; the probe reads no data
            trial["data.seq_len"] = min(cfg.data.seq_len, value)
        if key == "local_block" and cfg.model.local_block <= value:
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
