"""Typed run configuration: the schema (dataclasses), loading (TOML + dotted overrides), value
conversion and the rules that span fields."""

from ..errors import ConfigError
from .checks import BUILTIN_CORPORA, check_name, check_seed, offset_seed, resolve_vocab, validate
from .ignored import check_no_ignored_setting
from .loading import (
    apply_overrides,
    check_config,
    config_from_dict,
    dotted,
    load_config,
    parse_overrides,
    phase_index,
    read_toml,
    repeated_settings,
    require_run_config,
    toml_problem,
)
from .schema import DataConfig, ModelConfig, PhaseConfig, RunConfig, TrainConfig
from .values import build_dataclass, check_value

__all__ = [
    "BUILTIN_CORPORA",
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "PhaseConfig",
    "RunConfig",
    "TrainConfig",
    "apply_overrides",
    "build_dataclass",
    "check_config",
    "check_name",
    "check_no_ignored_setting",
    "check_seed",
    "check_value",
    "config_from_dict",
    "dotted",
    "load_config",
    "offset_seed",
    "parse_overrides",
    "phase_index",
    "read_toml",
    "repeated_settings",
    "require_run_config",
    "resolve_vocab",
    "toml_problem",
    "validate",
]
