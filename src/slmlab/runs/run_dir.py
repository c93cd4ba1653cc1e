"""Run directories: the unit of record.

runs/<name>/config.json        the resolved config, exactly what ran
runs/<name>/plugins/           the plugins it used: their source and manifest.json (SHA-256s)
runs/<name>/metrics.jsonl      one JSON object per logged step
runs/<name>/tokenizer.json     the tokenizer it used
runs/<name>/checkpoints/       step_N.safetensors + step_N.state.pt + step_N.sha256.json, `latest`
runs/<name>/final.safetensors  weights at the end
runs/<name>/summary.json       final validation loss/ppl, throughput, peak memory, parameters, final.safetensors' SHA-256
runs/<name>/tensorboard/, wandb/, trackers.json   what train.trackers wrote (and tracker run ids)
runs/<name>/lm_eval/           lm-evaluation-harness results (slmlab lm-eval)
runs/<name>/derived.json       which weights each file another command wrote here came from (derived.py)
runs/.<name>.lock              the writer lock (slmlab/locks.py), beside the directory
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .. import plugins
from ..config import ConfigError, RunConfig, apply_overrides, check_no_ignored_setting, config_from_dict
from ..config.loading import SECTION_NAMES
from ..data.tokenizer_kinds import BUILT_IN_TOKENIZERS, load_tokenizer
from ..data.tokenizers import Tokenizer
from ..errors import RunFileError
from ..files import atomic_write_text, read_json, remove_stale_temps, require_fields, sha256_file
from ..locks import DirectoryLock
from ..model import build_model
from ..tables import command_line, counted
from .checkpoints import CheckpointError, checksums, existing_checkpoint, final_weights_fix, latest_checkpoint, load_weights
from .located import located, trained_from_hint
from .metrics import MetricsLog, perplexity

log = logging.getLogger("slmlab")
RENAME = "pick another --name or --out_dir"  # a refused run folder's advice, where `train` or `persona` writes it
SUMMARY_FIELDS = {"step": int, "val_loss": (int, float), "val_ppl": (int, float, type(None))}  # null: exp(val_loss) overflowed


def _exact_perplexity(record: dict) -> None:
    """A summary's val_ppl, derived again from its val_loss (exp): the file cannot hold one past float64's
    range (JSON's null), and slmlab before 2026-12-05 capped it at exp(50); the rest reads back as written."""
    if isinstance(record.get("val_loss"), (int, float)):
        record["val_ppl"] = perplexity(record["val_loss"])


@dataclass(frozen=True)
class RunDir:
    path: Path

    def __post_init__(self) -> None:
        """A path given as a str is made a Path; anything that is no path is refused in one line
        (load_run(5) raised TypeError from inside pathlib)."""
        if not isinstance(self.path, (str, os.PathLike)):
            raise ConfigError(f"a run directory is a path, got {type(self.path).__name__} {self.path!r}")
        object.__setattr__(self, "path", Path(self.path))

    config = property(lambda self: self.path / "config.json")
    plugin_dir = property(lambda self: self.path / "plugins")  # plugin sources and manifest.json (slmlab/plugins.py)
    metrics = property(lambda self: self.path / "metrics.jsonl")
    tokenizer = property(lambda self: self.path / "tokenizer.json")
    checkpoints = property(lambda self: self.path / "checkpoints")
    final_weights = property(lambda self: self.path / "final.safetensors")
    summary = property(lambda self: self.path / "summary.json")

    # What slmlab writes in a run directory (shell patterns): `--overwrite` removes these and
    # nothing else, and the temp files of interrupted writes to them (".<name>.<random>").
    OWNED = (
        "config.json",
        "plugins",
        "metrics.jsonl",
        "tokenizer.json",
        "checkpoints",
        "final.safetensors",
        "summary.json",
        "viz",
        "ablations.json",
        "ablations.md",
        "quantize.md",
        "model_int8.pt",
        "model_int8.sha256.json",
        "persona_eval.json",
        "persona_gain.json",
        "stage2.json",
        "report.md",
        "report.html",
        "training.png",
        "prompts_*.md",
        "eval_*.json",
        "eval_*.png",
        "tensorboard",
        "wandb",
        "trackers.json",
        "lm_eval",
        "derived.json",
    )
    PHASES = "phase*_*"  # a curriculum's phase sub-runs: run directories themselves

    @classmethod
    def for_config(cls, cfg: RunConfig) -> RunDir:
        return cls(Path(cfg.out_dir) / cfg.name)

    def holds_run(self) -> bool:
        return self.path.exists() and any(self.path.iterdir())

    def check_writable(self, rename: str = RENAME) -> None:
        """The directory is a plain folder inside its parent (not a link out of it, not a file), and
        its parent a folder (or not yet there); `rename`: the refusals' advice, the writing verb's."""
        parent = self.path.parent
        if parent.exists() and not parent.is_dir():
            raise ConfigError(f"out_dir {parent} is a file, not a folder; set --out_dir to a folder")
        if self.path.is_symlink() and self.path.resolve().parent == parent.resolve():
            raise ConfigError(
                f"{self.path} is a link to {parent / self.path.resolve().name}: give that name (a run is written, and locked, "
                "under one name only)"
            )
        if self.path.is_symlink() or (self.path.exists() and self.path.resolve().parent != parent.resolve()):
            raise ConfigError(f"{self.path} leads outside {parent} (a link?); slmlab writes a run only inside its out_dir")
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"{self.path} is a file, not a run directory; {rename}")

    def ensure_free(self, overwrite: bool, starts_from: Path | None = None, rename: str = RENAME) -> None:
        """Refuse to reuse a directory that holds a run unless told to overwrite it, and refuse a
        non-empty directory that is not a slmlab run in any case (--overwrite never deletes it).
        `starts_from`: the run whose weights the new one loads (persona stage 2, a curriculum
        phase); this directory may not be it or hold it, or --overwrite would delete them (`rename`:
        as check_writable's)."""
        start = Path(starts_from).resolve() if starts_from is not None else None
        if start is not None and self.path.resolve() in (start, *start.parents):
            raise ConfigError(
                f"{self.path} holds the run this one starts from ({starts_from}): writing there (with "
                "--overwrite) would delete the weights it loads; pick another --name"
            )
        self.check_writable(rename)
        if not self.holds_run():
            return
        if not self.config.is_file():
            raise ConfigError(f"{self.path} holds files that are not a slmlab run; {rename}")
        if not overwrite:
            raise ConfigError(
                f"{self.path} already holds a run; resume it with {command_line('slmlab', 'train', '--resume', self.path)} or pick another --name"
            )

    def create(self, cfg: RunConfig, overwrite: bool = False) -> None:
        """Make the directory for a new run (replacing an old run's files only when `overwrite`)."""
        self.ensure_free(overwrite)
        plugins.check_current(cfg.plugins)
        if self.holds_run():
            kept = self.remove_owned()
            if kept:
                log.warning("%s: kept %s slmlab did not write: %s", self.path, counted(len(kept), "files"), ", ".join(kept[:5]))
        self.path.mkdir(parents=True, exist_ok=True)
        if cfg.plugins:
            plugins.record(self.plugin_dir, cfg.plugins)
        self.write_config(cfg)

    def remove_owned(self) -> list[str]:
        """Delete what slmlab wrote here (OWNED, and phase sub-runs recursively); return the
        names of the entries left in place. A folder this user may not change is refused before
        anything is deleted, and config.json goes last: a removal stopped half-way (a file that
        cannot be deleted, Ctrl-C) leaves a run that --overwrite can remove again."""
        owned = sorted(
            (entry for entry in self.path.iterdir() if not entry.is_symlink() and self._owned(entry.name)),
            key=lambda entry: entry == self.config,
        )
        self._check_removable(owned)
        for entry in owned:
            if not self._is_phase(entry):
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
            else:  # a phase sub-run: only its own files, then the folder if that empties it
                phase = RunDir(entry)
                if phase.config.is_file():
                    phase.remove_owned()
                if not any(entry.iterdir()):
                    entry.rmdir()
        return sorted(entry.name for entry in self.path.iterdir())

    def _check_removable(self, entries: list[Path]) -> None:
        """Refuse (before deleting anything) when a folder that holds one of `entries`, or one
        inside them, does not let this user delete from it (a phase sub-run checks its own)."""
        removed_whole = [entry for entry in entries if entry.is_dir() and not self._is_phase(entry)]
        folders = [self.path] + [Path(root) for entry in removed_whole for root, _, _ in os.walk(entry)]
        for folder in folders:
            if not os.access(folder, os.W_OK | os.X_OK):
                raise ConfigError(
                    f"cannot overwrite {self.path}: this user may not delete files in {folder}; change its permissions "
                    "(chmod, chown) or pick another --name"
                )

    def _is_phase(self, entry: Path) -> bool:
        """Whether `entry` (one of this run's) is a curriculum phase's sub-run, not one of its files."""
        return entry.name not in self.OWNED and fnmatch.fnmatch(entry.name, self.PHASES)

    def _owned(self, name: str) -> bool:
        patterns = (*self.OWNED, *(f".{p}.*" for p in self.OWNED), f".{self.PHASES}.lock", ".derived.lock")
        return any(fnmatch.fnmatch(name, p) for p in patterns) or (
            fnmatch.fnmatch(name, self.PHASES) and (self.path / name).is_dir()
        )

    def write_config(self, cfg: RunConfig) -> None:
        atomic_write_text(self.config, json.dumps(cfg.to_dict(), indent=2) + "\n")

    def check_is_run(self) -> None:  # a ConfigError saying what the path is, where it holds no config.json
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"{self.path} is a file, not a run directory")
        if not self.config.exists():
            what = " (no config.json)" if self.path.exists() else ": it does not exist"
            raise ConfigError(f"{self.path} is not a run directory{what}{runs_inside(self.path)}")

    def read_config(self) -> RunConfig:
        self.check_is_run()
        fix = "it is the record of what ran: restore it from a copy of the run"
        values = read_json(self.config, "run config", ConfigError, fix)
        lacking = [name for name in SECTION_NAMES if isinstance(values, dict) and name not in values]
        if lacking:  # every run records them: defaults in their place would be another model
            sections = " and ".join(f"[{name}]" for name in lacking)
            raise ConfigError(f"run config {self.config} lacks the {sections} every run records: {fix}")
        specs = values.get("plugins") if isinstance(values, dict) else None
        if specs and isinstance(specs, list):
            plugins.activate_recorded(self.plugin_dir, specs, self.path)
        try:
            cfg = config_from_dict(values)
        except ConfigError as err:
            raise ConfigError(f"run config {self.config} does not load: {err}") from None
        return located(cfg, self.path)  # its relative data paths, from the folder it trained in

    def read_metrics(self) -> list[dict]:
        return MetricsLog(self.metrics).read()

    def read_summary(self) -> dict:
        """summary.json, checked ({} while the run has not finished)."""
        if not self.summary.exists():
            return {}
        fix = f"delete it and run `{command_line('slmlab', 'train', '--resume', self.path)}` to write it again from the final checkpoint"
        summary = read_json(self.summary, "run summary", RunFileError, fix)
        require_fields(summary, SUMMARY_FIELDS, self.summary, "run summary", RunFileError, fix)
        for record in (summary, *(p for p in summary.get("phases") or () if isinstance(p, dict))):  # a curriculum's phases
            _exact_perplexity(record)
        return summary

    def read_tokenizer(self, model_vocab_size: int, named: str = "") -> Tokenizer:
        """The run's tokenizer, checked against the SHA-256 a finished run's summary recorded (a
        file edited or damaged into other valid JSON), to fit its model (`model_vocab_size`, the
        run config's: a larger tokenizer, another run's, would index past the embedding; 0: not
        resolved yet) and to be of the kind the config names (`named`, its data.tokenizer: a
        built-in kind must be the file's)."""
        recorded = self.read_summary().get("tokenizer_sha256")  # none while unfinished, or from older slmlab
        if isinstance(recorded, str) and self.tokenizer.is_file() and sha256_file(self.tokenizer) != recorded:
            raise RunFileError(
                f"{self.tokenizer} is not the tokenizer {self.path} trained with (its SHA-256 differs from the one "
                f"{self.summary.name} recorded); restore it from a copy of the run"
            )
        tokenizer = load_tokenizer(self.tokenizer)
        if 0 < model_vocab_size < tokenizer.vocab_size:
            raise RunFileError(
                f"{self.tokenizer} has {tokenizer.vocab_size} tokens but the run's model has {model_vocab_size}: "
                "it is not this run's tokenizer; restore it from a copy of the run"
            )
        if named and named != tokenizer.kind and BUILT_IN_TOKENIZERS & {named, tokenizer.kind}:
            raise RunFileError(
                f"{self.path}: config.json says data.tokenizer = {named!r} but tokenizer.json is a {tokenizer.kind!r} "
                "tokenizer: one of them was edited or replaced; restore it from a copy of the run"
            )
        return tokenizer

    def lock(self) -> DirectoryLock:
        """Check the directory can be written, take this run's writer lock (RunInUseError naming
        the holder if another process has it), then delete temp files that killed writes left here."""
        self.check_writable()
        lock = DirectoryLock(self.path, "run").acquire()
        remove_stale_temps(self.path, everyone=True)
        self._remove_old_temps()
        return lock

    def _remove_old_temps(self) -> None:
        """Temp files named as slmlab before 0.2 named them (".<file>.<random>", no PID) beside the
        run's own files: we hold the lock, so nobody is writing them."""
        places = ((self.path, self.OWNED), (self.checkpoints, ("step_*", "latest")))
        for folder, patterns in places:
            if not folder.is_dir():
                continue
            for entry in folder.glob(".*"):
                stem = entry.name[1:].rsplit(".", 1)[0]
                if entry.is_file() and not entry.is_symlink() and any(fnmatch.fnmatch(stem, p) for p in patterns):
                    entry.unlink(missing_ok=True)


def phase_runs(path: str | Path, cfg: RunConfig, begun: bool = False) -> list[RunDir]:
    """A curriculum's phase sub-runs in order (empty for a single run): all of them, or with
    `begun` those that have begun (they hold their config)."""
    phases = [RunDir(Path(path) / cfg.phase(index).name) for index in range(len(cfg.phases))]
    return [phase for phase in phases if phase.config.is_file()] if begun else phases


def runs_inside(folder: Path) -> str:
    """ "; it holds runs (a sweep, or an out_dir): name one, e.g. FOLDER/x" for a folder of runs
    given where one run is asked for, else ""."""
    inside = sorted(p.parent for p in folder.glob("*/config.json")) if folder.is_dir() else []
    return f"; it holds runs (a sweep, or an out_dir): name one, e.g. {inside[0]}" if inside else ""


def with_token_offsets(runs: list[RunDir]) -> list[tuple[RunDir, int, list[dict]]]:
    """(run, offset, its metrics records) for runs trained one after another (a curriculum's
    phases, each counting its tokens from its own start): `offset` is the tokens trained before
    it, so offset + record["tokens"] counts from the start of the first."""
    found, offset = [], 0
    for run in runs:
        records = run.read_metrics()
        found.append((run, offset, records))
        offset += max((r["tokens"] for r in records if isinstance(r.get("tokens"), (int, float))), default=0)
    return found


def model_run(path: str | Path) -> tuple[RunDir, RunConfig]:
    """The run directory that holds a run's model, and its config: the run itself, or a
    curriculum's last phase (while the curriculum is unfinished, the last phase that started)."""
    run = RunDir(path)
    cfg = run.read_config()
    if cfg.phases:
        started = phase_runs(path, cfg, begun=True)
        if not started:
            raise ConfigError(f"{path} has not started training (none of its phases has begun); train it first")
        if len(started) < len(cfg.phases):  # phases begin in order
            log.info("%s has not finished its curriculum: using its latest phase, %s", path, started[-1].path.name)
        run = started[-1]
        cfg = run.read_config()
    return run, cfg


def check_trained_streams(path: str | Path, cfg: RunConfig, streams: dict) -> None:
    """Refuse to score a run on its own corpus (`cfg.data`, which gave token files whose SHA-256s
    are `streams`) where that corpus no longer gives the token streams the run trained on (its
    summary's data_sha256; unchecked while it has not finished): files edited or added since, or a
    relative data.source that names another corpus from this folder, were scored in silence as the
    run's validation split."""
    trained_on = model_run(path)[0].read_summary().get("data_sha256")
    if isinstance(trained_on, dict) and trained_on != streams:
        source = cfg.data.source
        raise ConfigError(
            f"{path} trained on other text than data.source '{source}' gives now (its files changed since, or the "
            "path names another corpus from this folder), so its validation split is not the one it held out; "
            f"restore the corpus, or score this text as another corpus with --data.source {command_line(source)}"
            f"{trained_from_hint(cfg, Path(path))}"
        )


def model_weights(run: RunDir, checkpoint: str | int | None = None) -> tuple[Path, str | None]:
    """The weights file a run's model loads from, and its recorded SHA-256 (None where none was
    recorded): checkpoint `checkpoint` (step_NNNNNN) when named, else final.safetensors once the
    run finished, else its latest checkpoint."""
    if checkpoint is not None:
        name = existing_checkpoint(run.checkpoints, checkpoint)
        return run.checkpoints / f"{name}.safetensors", checksums(run.checkpoints, name).get(f"{name}.safetensors")
    summary = run.read_summary()
    if run.final_weights.is_file():
        return run.final_weights, summary.get("final_sha256")
    if "final_sha256" in summary:  # a finished run must have its final weights
        raise CheckpointError(
            f"{run.final_weights} is missing, though {run.path} finished training with it: {final_weights_fix(run, summary)}"
        )
    name = latest_checkpoint(run.checkpoints)
    if name is None:
        raise CheckpointError(f"{run.path} has no final.safetensors and no checkpoint yet")
    return run.checkpoints / f"{name}.safetensors", checksums(run.checkpoints, name).get(f"{name}.safetensors")


def final_weights_intact(run: RunDir, summary: dict) -> bool:
    """Whether a finished run's final.safetensors is there and is the file its summary recorded."""
    recorded = summary.get("final_sha256")
    return run.final_weights.is_file() and (recorded is None or sha256_file(run.final_weights) == recorded)


def load_run(
    path: str | Path, device: str | torch.device = "cpu", model_overrides: dict | None = None, checkpoint: str | int | None = None
) -> tuple[RunConfig, nn.Module, Tokenizer]:
    """The config, trained model (final weights, else the latest checkpoint) and tokenizer of a run.

    `model_overrides` ({"rope_scale": 2.0}) change model fields that carry no weights;
    `checkpoint` (step_NNNNNN, or its step: 200): that checkpoint's weights (of a curriculum's model phase)."""
    run, cfg = model_run(path)
    recorded_model = cfg.model
    if model_overrides:
        cfg = config_from_dict(apply_overrides(cfg.to_dict(), {f"model.{k}": v for k, v in model_overrides.items()}))
        check_no_ignored_setting(cfg, keys={f"model.{k}" for k in model_overrides})
    tokenizer = run.read_tokenizer(cfg.model.vocab_size, cfg.data.tokenizer)
    model = build_model(cfg.model)
    weights, sha256 = model_weights(run, checkpoint)
    if checkpoint is None and weights != run.final_weights:
        log.info("%s has not finished training: using its latest checkpoint, %s", run.path, weights.stem)
    fix = final_weights_fix(run, run.read_summary()) if weights == run.final_weights else ""
    load_weights(model, weights, sha256, recorded_model, fix)
    return cfg, model.to(device).eval(), tokenizer
