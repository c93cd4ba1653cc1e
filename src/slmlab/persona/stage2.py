"""SMT stage 2: fine-tune a trained run on persona text (`slmlab persona RUN --persona-data SOURCE`).

The persona run is an ordinary run directory next to RUN: the same model and tokenizer, started
from RUN's final weights, trained on SOURCE with its own steps, LR schedule and metrics, and with
only the chosen parameters trainable (`self_area`, `self_area+norms`, `all` or a plugin's
selection: registry.TRAINABLE, train.trainable).

SOURCE is any corpus the foundation reads, optionally with genres after a colon:
`brown:R` (Brown's "humor" as a persona), `brown:D,R`, `shakespeare:comedies`, `persona.txt`.
"""

from __future__ import annotations

from pathlib import Path

from ..config import (
    BUILTIN_CORPORA,
    ConfigError,
    DataConfig,
    RunConfig,
    apply_overrides,
    config_from_dict,
)
from ..config.checks import TOKENIZER_KEYS
from ..data.corpora import CorpusError, open_source
from ..registry import TRAINABLE, closest
from ..runs.run_dir import RunDir, phase_runs


def source_overrides(spec: str, option: str = "--persona-data") -> dict:
    """'brown:R,D' -> {'data.source': 'brown', 'data.genres': ['R', 'D']}; a path stays whole,
    and one that names no corpus is refused under `option`, the command-line option that gave it."""
    name, _, genres = spec.partition(":")
    if name in BUILTIN_CORPORA:
        return {"data.source": name, "data.genres": [g for g in genres.split(",") if g]}
    if not spec:
        raise ConfigError(f"{option} is empty: give a corpus, e.g. brown:R or persona.txt")
    try:
        open_source(DataConfig(source=spec))  # finds its files: where none are, it says why
    except CorpusError as err:
        raise CorpusError(f"{option}: {str(err).removeprefix('data.source: ')}") from None
    return {"data.source": spec, "data.genres": []}


def source_data_config(spec: str, option: str = "--persona-data", **fields) -> DataConfig:
    """A DataConfig that reads SOURCE (as `source_overrides` parses it), with other fields given."""
    overrides = source_overrides(spec, option)
    return DataConfig(**{key.split(".", 1)[1]: value for key, value in overrides.items()}, **fields)


def trained_config(run: RunDir) -> tuple[RunDir, RunConfig]:
    """The run directory holding a run's final model (a curriculum's last phase) and its config."""
    cfg = run.read_config()
    if cfg.phases:
        last = phase_runs(run.path, cfg)[-1]
        if not last.config.is_file():
            raise ConfigError(
                f"{run.path} has not finished its curriculum (phase {cfg.phases[-1].name} has not begun); resume it first"
            )
        run, cfg = last, last.read_config()
    if not run.final_weights.is_file():
        raise ConfigError(f"{run.path} has not finished training (no final.safetensors); finish or resume it first")
    return run, cfg


def persona_config(
    run_path: str | Path,
    persona_data: str,
    trainable: str,
    steps: int,
    lr: float,
    name: str | None = None,
    extra: dict | None = None,
) -> tuple[RunDir, RunConfig]:
    """(the base run, the stage-2 run's config)."""
    base, cfg = trained_config(RunDir(run_path))  # (its plugins imported: their selections count)
    if trainable not in TRAINABLE:
        raise ConfigError(f"--train {trainable!r} is not one of {', '.join(TRAINABLE)}{closest(trainable, TRAINABLE)}")
    if trainable.startswith("self_area") and not cfg.model.self_area.enabled:
        raise ConfigError(
            f"{base.path} was trained without a Self Area, so --train {trainable} has nothing to train: use --train all, "
            "or train a run with model.self_area.enabled = true first (configs/smt_small.toml)"
        )
    fixed = [key for key in extra or {} if key in TOKENIZER_KEYS]
    if fixed:  # the run's tokenizer.json is taken over; the config would have named another
        raise ConfigError(f"a persona run trains on with {base.path}'s own tokenizer, so {', '.join(fixed)} cannot change")
    overrides = {
        **source_overrides(persona_data),
        "data.mixture": {},
        "train.trainable": trainable,
        "train.steps": steps,
        "train.lr": lr,
        "train.warmup_steps": max(1, steps // 20),
        "name": f"{base.path.name}_persona" if name is None else name,
        "out_dir": str(base.path.parent),
        **(extra or {}),
    }
    return base, config_from_dict(apply_overrides(cfg.to_dict(), overrides))
