"""What stage 2 bought (`slmlab persona`): the persona run's validation perplexity against its base
run's, both scored on the persona run's held-out windows, paired by batch.

The persona run's own summary has one figure, its loss after fine-tuning; whether that is lower
than the base model's on the same text, by more than the choice of windows moves it, needs the
base model scored on the same windows: Δ% = 100 (exp(loss_after − loss_before) − 1) with its 95%
CI from the batches' paired differences (experiments/stats.py's perplexity_change), on windows
that share no token. Written to RUN/persona_gain.json.

A persona run records its base when it starts (RUN/stage2.json: the base's path relative to RUN and
the identity of its weights), so that a run stopped and finished with `slmlab train --resume` is
scored against the same base when it ends, as one finished by `slmlab persona` is.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..data.tokens import prepare_tokens
from ..errors import RunFileError, SlmlabError
from ..experiments.stats import perplexity_change
from ..files import atomic_write_text, json_text, read_json
from ..runs.derived import record_derived, weights_identity
from ..runs.run_dir import load_run
from ..tables import command_line
from ..training.runtime import resolve_device
from ..training.validation import evaluate_by_batch

GAIN_FILE = "persona_gain.json"
BASE_FILE = "stage2.json"


def record_base(run: str | Path, base: str | Path) -> None:
    """Write RUN/stage2.json: the run `run` starts from `base`'s final weights (persona stage 2)."""
    record = {"base": os.path.relpath(Path(base).resolve(), Path(run).resolve()), "base_weights": weights_identity(base)}
    atomic_write_text(Path(run) / BASE_FILE, json_text(record, indent=2) + "\n")


def recorded_base(run: str | Path) -> tuple[Path | None, str]:
    """(the base run to score `run` against, "") for a persona run whose base is still the one it
    started from; (None, why not) for a persona run whose base is gone or retrained since; (None,
    "") for any other run."""
    path = Path(run) / BASE_FILE
    if not path.is_file():
        return None, ""
    fix = f"delete {path} (the run then has no stage-2 gain)"
    record = read_json(path, "record of the stage-2 base", RunFileError, fix)
    if not isinstance(record.get("base"), str) or not isinstance(record.get("base_weights"), str):
        raise RunFileError(f"{path} is damaged: it names no base run; {fix}")
    base = Path(os.path.normpath(Path(run) / record["base"]))
    try:
        same = weights_identity(base) == record["base_weights"]
    except (OSError, SlmlabError):
        return None, f"its base run {base} is gone or cannot be read"
    return (base, "") if same else (None, f"its base run {base} holds other weights than the ones it started from")


def persona_gain(base: str | Path, run: str | Path, device: str = "auto") -> dict:
    """{"base", "val_loss_before", "val_loss_after", "batches", "delta_pct", "delta_pct_low",
    "delta_pct_high", "p"}: `run` (a finished persona run) against `base` (the run it started
    from) on `run`'s validation sample, also written to RUN/persona_gain.json."""
    resolved = resolve_device(device)
    weights = weights_identity(run)
    cfg, model, tokenizer = load_run(run, resolved)
    _, data = prepare_tokens(cfg.data, tokenizer)
    sample = (data.val, cfg.data.seq_len, cfg.train.batch_size, cfg.train.eval_batches, resolved, cfg.train.dtype)
    after, after_batches = evaluate_by_batch(model, *sample, progress=f"scoring {run} on its persona windows")
    del model
    _, base_model, _ = load_run(base, resolved)
    before, before_batches = evaluate_by_batch(base_model, *sample, progress=f"scoring {base} on them")
    gain = {
        "base": str(base),
        "val_loss_before": before,
        "val_loss_after": after,
        "batches": len(after_batches),
        **perplexity_change(after - before, after_batches, before_batches),
    }
    path = Path(run) / GAIN_FILE
    atomic_write_text(path, json_text(gain, indent=2) + "\n")
    record_derived(run, [path], command_line("slmlab", "persona", base, "..."), weights)
    return gain
