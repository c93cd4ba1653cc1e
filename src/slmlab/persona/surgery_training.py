"""`slmlab surgery`'s training: a Self Area inserted into a Hugging Face base model
(persona/surgery.py) trained alone on persona text, scored before and after, and saved.

Nothing of an earlier surgery in the folder is replaced until the new one is trained and scored:
its metrics are written to STAGED_METRICS meanwhile. A stop asked for while the Self Area trains
(Ctrl-C or SIGTERM under training/stopping.py's `stop_at_step_end`) ends the step under way, and
the Self Area trained so far is scored and saved like a finished one (summary.json's `steps`, with
`steps_asked` and `stopped_by`); one asked for once it is trained lets scoring and saving finish.
Anything else that ends the verb early (a second Ctrl-C, an error) removes what it wrote, and the
folder if it made it: the folder is as it was, and the same command can run again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError, DataConfig, TrainConfig
from ..data.corpora import DocumentSelection
from ..data.sampling import WindowSampler, validation_batches
from ..data.split import splits_by_position, validation_ids
from ..data.tokens import TokenSplit
from ..experiments.stats import perplexity_change
from ..files import TEMP_NAME, atomic_write_text, json_text, remove_stale_temps
from ..locks import DirectoryLock
from ..phase_progress import tracked
from ..runs.metrics import MetricsLog
from ..tables import counted
from ..training import stopping
from ..training.optim import lr_at
from ..variants.self_area import SelfArea, SelfAreaConfig
from .hf_text import hf_encode
from .surgery import insert_self_area, load_hf_model, model_context, save_self_area

STAGED_METRICS = "metrics.jsonl.partial"  # the training's metrics until the Self Area is saved
REPLACED = ("summary.json", "metrics.jsonl")  # an earlier surgery's records, removed before its Self Area is replaced


def check_surgery_folder(folder: Path, overwrite: bool) -> None:
    """The folder surgery writes (self_area.*, metrics.jsonl, summary.json) is new, empty but for
    what a surgery killed outright left (STAGED_METRICS, temp files: staged_folder removes them), or
    an earlier surgery's (replaced only with `overwrite`); a run's or any other folder is refused,
    since its metrics.jsonl and summary.json would be replaced."""
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--out {folder} is a file, not a folder; choose another --out")
    if not folder.is_dir() or all(entry.name == STAGED_METRICS or TEMP_NAME.match(entry.name) for entry in folder.iterdir()):
        return
    if not (folder / "self_area.json").is_file():
        raise ConfigError(
            f"{folder} holds files that are not a Self Area (its metrics.jsonl, summary.json would be replaced); choose another --out"
        )
    if not overwrite:
        raise ConfigError(f"{folder} already holds a Self Area; choose another --out, or --overwrite to replace it")


@contextlib.contextmanager
def staged_folder(folder: Path, overwrite: bool) -> Iterator[MetricsLog]:
    """The training's metrics log (STAGED_METRICS in `folder`, made if need be), under the folder's
    lock (one surgery writes it at a time: check_surgery_folder is asked again under it); if the
    block ends early, the log is removed, and `folder` too where this call made it and it is empty."""
    with DirectoryLock(folder, "Self Area folder"):
        remove_stale_temps(folder, everyone=True)  # we hold the lock: no one else writes there
        check_surgery_folder(folder, overwrite)
        made = not folder.is_dir()
        folder.mkdir(parents=True, exist_ok=True)
        staged = folder / STAGED_METRICS
        staged.unlink(missing_ok=True)  # left by a surgery killed outright
        try:
            yield MetricsLog(staged)
        except BaseException:
            staged.unlink(missing_ok=True)
            if made and not any(folder.iterdir()):
                folder.rmdir()
            raise


def persona_tokens(data: DataConfig, tokenizer, val_fraction: float = 0.1) -> tuple[TokenSplit, TokenSplit]:
    """The persona corpus through the model's own tokenizer: documents joined by EOS, split into
    train and validation by document (the foundation's hash-ranked split)."""
    docs = list(DocumentSelection(data))
    if not docs:
        raise ConfigError(f"the persona data ({data.source}, genres {data.genres or 'all'}) has no documents")
    ids = [d.id for d in docs]
    val_ids = set() if splits_by_position(ids) else validation_ids(ids, val_fraction)
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    splits = {"train": [], "val": []}
    for doc in docs:
        ids = hf_encode(tokenizer, doc.text, f"persona document '{doc.id}'")["input_ids"]
        splits["val" if doc.id in val_ids else "train"] += [*ids, eos]
    if not splits["val"]:  # one document (or one id): its tail is the validation text
        cut = int(len(splits["train"]) * (1 - val_fraction))
        splits = {"train": splits["train"][:cut], "val": splits["train"][cut:]}
    return tuple(TokenSplit(np.asarray(ids, dtype=np.int64), {"*": (0, len(ids))}) for ids in splits.values())


def check_persona_windows(train: TokenSplit, val: TokenSplit, seq_len: int) -> None:
    """Each part of the persona text holds a window of `seq_len` + 1 tokens, or a ConfigError
    names surgery's own options (the sampler's message names a run config's settings)."""
    for part, split in (("training", train), ("validation", val)):
        if len(split) < seq_len + 1:
            raise ConfigError(
                f"the persona text's {part} part is {counted(len(split), 'tokens')} in this model's tokenizer, fewer than "
                f"--seq-len + 1 = {seq_len + 1}; give more persona text, or a lower --seq-len"
            )


# ---- training -------------------------------------------------------------------------------


def lm_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logits = model(input_ids=x).logits
    return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())


@torch.no_grad()
def persona_loss(
    model: nn.Module, split: TokenSplit, seq_len: int, batch: int, n_batches: int, device
) -> tuple[float, list[float]]:
    """(the mean cross-entropy over the split's fixed validation sample, each batch's): on windows
    that share no token, in batches of one size (so the mean of the batches' is every token's), so
    that two models' losses compare batch by batch with an interval (experiments/stats.py's
    perplexity_change), as `ablate` compares its interventions."""
    sample = validation_batches(split, seq_len, batch, n_batches, progress="scoring the persona text", disjoint=True)
    batches = [lm_loss(model, x.to(device), y.to(device)).item() for x, y in sample]
    return float(np.mean(batches)), batches


def train_self_area(
    model: nn.Module,
    area: SelfArea,
    train: TokenSplit,
    steps: int,
    lr: float,
    batch: int,
    seq_len: int,
    seed: int = 0,
    metrics: MetricsLog | None = None,
    log_every: int = 10,
) -> int:
    """AdamW on the Self Area's parameters only (warmup over 5% of the steps, then cosine to 10%),
    the steps' progress shown (PhaseProgress) -> the number of steps trained: `steps`, or fewer
    where a stop was asked for (training/stopping.py, armed by the caller; the step under way
    ends first)."""
    device = next(area.parameters()).device
    sampler = WindowSampler(train, seq_len, batch, seed)
    optimizer = torch.optim.AdamW(area.parameters(), lr=lr, weight_decay=0.0)
    schedule = TrainConfig(steps=steps, lr=lr, warmup_steps=max(1, steps // 20), min_lr_ratio=0.1)
    model.train()
    done = 0
    for step in tracked(range(steps), "training the Self Area", steps, "steps"):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, schedule)
        x, y = sampler.next_batch()
        loss = lm_loss(model, x.to(device), y.to(device))
        loss.backward()
        nn.utils.clip_grad_norm_(area.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        done = step + 1
        stop = stopping.requested() is not None
        if metrics is not None and (done % log_every == 0 or done == steps or stop):
            alpha = area.alpha.abs().mean().item()
            metrics.append({"step": done, "loss": loss.item(), "lr": lr_at(step, schedule), "alpha_mean": alpha})
        if stop:
            break
    model.eval()
    return done


def surgery(
    hf_model: str | Path,
    persona_data: str,
    out: str | Path | None = None,
    steps: int = 200,
    lr: float = 1e-2,
    batch_size: int = 4,
    seq_len: int = 128,
    self_dim: int = 128,
    token_dependent: bool = False,
    seed: int = 0,
    overwrite: bool = False,
    device: str = "auto",
    reading: dict | None = None,
) -> tuple[nn.Module, object, dict, Path]:
    """Insert a Self Area into the base model, train it alone on persona text, save it (with
    metrics.jsonl and summary.json) -> (model, tokenizer, summary, folder). `reading`: DataConfig
    fields on how the persona files are read (text_field, doc_separator). A stop asked for while
    it trains saves the Self Area trained so far (module docstring)."""
    from ..training.runtime import resolve_device
    from .stage2 import source_data_config

    resolved = resolve_device(device)
    folder = Path(out or f"runs/surgery_{Path(hf_model).stem}")
    check_surgery_folder(folder, overwrite)  # before the base model loads (seconds to minutes)
    persona = source_data_config(persona_data, **(reading or {}))
    model, tokenizer = load_hf_model(hf_model, resolved)
    context = model_context(model)
    if context and seq_len > context:
        raise ConfigError(
            f"--seq-len {seq_len} exceeds the {context}-token context of {hf_model}; give --seq-len {context} or less"
        )
    train_split, val_split = persona_tokens(persona, tokenizer)
    check_persona_windows(train_split, val_split, seq_len)
    area = insert_self_area(model, SelfAreaConfig(enabled=True, self_dim=self_dim, token_dependent=token_dependent))
    with staged_folder(folder, overwrite) as metrics:
        before, before_batches = persona_loss(model, val_split, seq_len, batch_size, 8, resolved)
        with stopping.armed():  # a stop asked for from here on ends training; the rest finishes
            trained = train_self_area(model, area, train_split, steps, lr, batch_size, seq_len, seed, metrics)
            stopped_by = stopping.requested() if trained < steps else None
            after, after_batches = persona_loss(model, val_split, seq_len, batch_size, 8, resolved)
            for name in REPLACED:  # missing, rather than describing the Self Area replaced, should this be cut short
                (folder / name).unlink(missing_ok=True)
            save_self_area(area, folder, str(hf_model))
            metrics.path.replace(folder / "metrics.jsonl")
            summary = {
                "base_model": str(hf_model),
                "persona_data": persona_data,
                "steps": trained,
                **({"steps_asked": steps, "stopped_by": stopped_by} if stopped_by else {}),
                "self_area_params": sum(p.numel() for p in area.parameters()),
                "base_params": sum(p.numel() for n, p in model.named_parameters() if not n.startswith("self_area.")),
                "persona_val_loss_before": before,
                "persona_val_loss_after": after,
                "persona_ppl_change": perplexity_change(after - before, after_batches, before_batches),  # paired by batch
                "persona_val_batches": len(after_batches),
            }
            atomic_write_text(folder / "summary.json", json_text(summary, indent=2) + "\n")
    return model, tokenizer, summary, folder
