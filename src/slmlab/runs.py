"""Run directories: the unit of record.

    runs/<name>/config.json        the resolved config, exactly what ran
    runs/<name>/metrics.jsonl      one JSON object per logged step
    runs/<name>/tokenizer.json     the tokenizer it used
    runs/<name>/checkpoints/       step_N.safetensors + step_N.state.pt, `latest`
    runs/<name>/final.safetensors  weights at the end
    runs/<name>/summary.json       final validation loss/ppl, throughput, peak memory, parameters
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .checkpoint import CheckpointError, latest_checkpoint, load_weights
from .config import ConfigError, RunConfig, apply_overrides, config_from_dict
from .data import atomic_write_text
from .metrics import MetricsLog
from .model import build_model
from .tokenization import Tokenizer, load_tokenizer


@dataclass(frozen=True)
class RunDir:
    path: Path

    config = property(lambda self: self.path / "config.json")
    metrics = property(lambda self: self.path / "metrics.jsonl")
    tokenizer = property(lambda self: self.path / "tokenizer.json")
    checkpoints = property(lambda self: self.path / "checkpoints")
    final_weights = property(lambda self: self.path / "final.safetensors")
    summary = property(lambda self: self.path / "summary.json")

    @classmethod
    def for_config(cls, cfg: RunConfig) -> RunDir:
        return cls(Path(cfg.out_dir) / cfg.name)

    def holds_run(self) -> bool:
        return self.path.exists() and any(self.path.iterdir())

    def ensure_free(self, overwrite: bool) -> None:
        """Refuse to reuse a directory that holds a run unless told to overwrite it."""
        if self.holds_run() and not overwrite:
            raise ConfigError(
                f"{self.path} already holds a run; resume it with --resume {self.path}, "
                "pick another --name, or pass --overwrite to replace it"
            )

    def create(self, cfg: RunConfig, overwrite: bool = False) -> None:
        """Make the directory for a new run (replacing an old one only when `overwrite`)."""
        self.ensure_free(overwrite)
        if self.holds_run():
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.write_config(cfg)

    def write_config(self, cfg: RunConfig) -> None:
        atomic_write_text(self.config, json.dumps(cfg.to_dict(), indent=2) + "\n")

    def read_config(self) -> RunConfig:
        if not self.config.is_file():
            raise ConfigError(f"{self.path} is not a run directory (no config.json)")
        try:
            values = json.loads(self.config.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            raise ConfigError(f"{self.config} is not valid JSON") from None
        return config_from_dict(values)

    def read_metrics(self) -> list[dict]:
        return MetricsLog(self.metrics).read()

    def read_summary(self) -> dict:
        return json.loads(self.summary.read_text()) if self.summary.is_file() else {}


def load_run(path: str | Path, device: str | torch.device = "cpu",
             model_overrides: dict | None = None) -> tuple[RunConfig, nn.Module, Tokenizer]:
    """The config, trained model (final weights, else the latest checkpoint) and tokenizer of a run.

    `model_overrides` ({"rope_scale": 2.0}) change model fields that carry no weights."""
    run = RunDir(Path(path))
    cfg = run.read_config()
    if cfg.phases:  # a curriculum: its model is the last phase's
        run = RunDir(Path(path) / cfg.phase(len(cfg.phases) - 1).name)
        cfg = run.read_config()
    if model_overrides:
        cfg = config_from_dict(apply_overrides(cfg.to_dict(), {f"model.{k}": v for k, v in model_overrides.items()}))
    tokenizer = load_tokenizer(run.tokenizer)
    model = build_model(cfg.model)
    if run.final_weights.is_file():
        load_weights(model, run.final_weights)
    else:
        name = latest_checkpoint(run.checkpoints)
        if name is None:
            raise CheckpointError(f"{run.path} has no final.safetensors and no checkpoint yet")
        load_weights(model, run.checkpoints / f"{name}.safetensors")
    return cfg, model.to(device).eval(), tokenizer
