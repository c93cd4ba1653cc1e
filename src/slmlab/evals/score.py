"""Scoring and sampling a trained run: validation loss and perplexity on its own corpus or another
one, and seeded continuations of a prompt.

`slmlab eval RUN` scores the run's validation split; `--data.source brown` (any data.* override)
scores another corpus or slice through the run's tokenizer (cross-corpus evaluation works for
tokenizers that can encode any text: byte, BPE, GPT-2). `load_for_inference` is the one way the
inference verbs get a model: the fp32 run, or its int8 model on the CPU.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import ConfigError, DataConfig, apply_overrides, config_from_dict
from ..config.checks import TOKENIZER_KEYS
from ..config.ignored import ignored_settings
from ..data.corpora import CorpusError, DocumentSelection
from ..data.sampling import validation_offsets
from ..data.split import TrainingSide, describe_documents, text_digest
from ..data.tokens import TokenSplit, prepare_tokens
from ..experiments.stats import t_interval
from ..phase_progress import PhaseProgress
from ..runs.metrics import perplexity
from ..runs.run_dir import check_trained_streams, load_run, model_run
from ..tables import counted
from ..training.runtime import resolve_device
from ..training.validation import score_validation
from .text_stream import TextStream

log = logging.getLogger("slmlab")


def load_for_inference(
    run: str | Path, device: str = "auto", int8: bool = False, rope_scale: float | None = None, checkpoint: str | None = None
):
    """(config, model, tokenizer, device): the fp32 run (`checkpoint`: that checkpoint's weights;
    `rope_scale`: its RoPE positions divided by this instead), or with int8 its quantised model
    (of the final weights) on CPU."""
    if int8:
        from ..analysis.quantize import load_int8

        if device not in ("auto", "cpu"):
            raise ConfigError("--int8 models run on the CPU; drop --device or use --device cpu")
        if rope_scale:
            raise ConfigError("--rope-scale does not apply to the saved --int8 model; drop one of the two")
        return (*load_int8(run), torch.device("cpu"))
    if rope_scale:
        _check_rope_scale_applies(run, rope_scale)
    resolved = resolve_device(device)
    return (*load_run(run, resolved, {"rope_scale": rope_scale} if rope_scale else None, checkpoint), resolved)


def trained_context(cfg) -> int:
    """The context the run trained at: its final phase's data.seq_len, never past model.block_size.
    Past it a learned position is untrained and a rotary one extrapolated."""
    return min(cfg.data.seq_len, cfg.model.block_size)


def warn_past_trained_context(length: int, trained: int, block_size: int, what: str) -> None:
    """Warn where `what` (a prompt and its continuation, `length` tokens) runs past the context the
    run trained at in a model whose block_size is larger: a RoPE model of a vast block size read
    positions it never trained on, in silence. (With block_size = the trained context the
    generation's window slides, and nothing is said; `trained` 0 stands for block_size.)"""
    if length > (trained or block_size) < block_size:
        log.warning(
            f"{what} runs to {length} tokens, past the {trained} the run trained at (data.seq_len; model.block_size is "
            f"{block_size}): beyond them the model reads positions it never trained on"
        )


def scoring_window(cfg, asked: int | None = None) -> int:
    """The window a text is scored in (`eval --text`, the lm-eval adapter): `asked` (--context-length)
    where given, up to model.block_size, else the trained context: a RoPE model of block_size
    10**9 trained at 64 tokens scored a whole text in one window, 16% worse in perplexity than in
    windows of 64, and variants of two block sizes compared in windows of two lengths."""
    window = asked or trained_context(cfg)
    if window > cfg.model.block_size:
        raise ConfigError(
            f"--context-length {window} is past the model's context of {cfg.model.block_size} tokens (model.block_size): "
            "give at most that"
        )
    return window


def _check_rope_scale_applies(run: str | Path, rope_scale: float) -> None:
    """--rope-scale on a run whose positions do not read model.rope_scale (learned, sinusoidal)
    would score the unscaled model under the scaled label, and the scale it trained with would
    score (and pair) the model against itself: both refused, naming the option."""
    _, cfg = model_run(run)
    scaled = config_from_dict(apply_overrides(cfg.to_dict(), {"model.rope_scale": rope_scale}))
    if any(key == "model.rope_scale" for key, _ in ignored_settings(scaled.phase_configs())):
        raise ConfigError(
            f"--rope-scale {rope_scale:g} would change nothing: {run} has model.pos = {cfg.model.pos!r}, "
            "which does not read rope_scale; drop --rope-scale"
        )
    if rope_scale == cfg.model.rope_scale:
        raise ConfigError(
            f"--rope-scale {rope_scale:g} is the rope_scale {run} trained with (model.rope_scale): it would change nothing "
            "and compare the model with itself; drop --rope-scale or give another scale"
        )


@dataclass
class EvaluationSlice:
    """What an evaluation scores: the data config, its token split, a description of the slice,
    how many documents it covers (`coverage` in words: a corpus of one document is split by
    position), and how many of those the run trained on (None: not counted, for the train split)."""

    data: DataConfig
    tokens: TokenSplit
    description: str
    documents: int
    coverage: str
    train_overlap: int | None


def describe_selection(data: DataConfig) -> str:
    """'brown (genres a, b; max_year 1600; first 20 documents)': a selection in one line."""
    filters = [f"genres {', '.join(data.genres)}"] if data.genres else []
    filters += [f"max_year {data.max_year}"] if data.max_year else []
    filters += [f"first {counted(data.max_documents, 'documents')}"] if data.max_documents else []
    return data.source + (f" ({'; '.join(filters)})" if filters else "")


def train_overlap(run_data: DataConfig, scored: DataConfig, scored_ids: set[str] | None) -> int:
    """How many of the scored documents (ids in the `scored` selection; None: all of them, a
    single document split by position) the run trained on, compared by text, so a document
    reached through another path, filter or source counts too."""
    selection = DocumentSelection(run_data)
    run_docs = [(doc.id, text_digest(doc.text)) for doc in selection]
    side = TrainingSide(selection, run_data.val_fraction)  # its split, from the ids that pass read
    scored_docs = [text_digest(doc.text) for doc in DocumentSelection(scored) if scored_ids is None or doc.id in scored_ids]
    if side.by_position:  # the run trained on the start of its text, the end held out (no document is)
        same_cut = scored_ids is None and scored_docs == [d for _, d in run_docs] and scored.val_fraction == run_data.val_fraction
        if same_cut:
            return 0
    trained = {digest for i, digest in run_docs if i not in side.held_out}
    return sum(digest in trained for digest in scored_docs)


def evaluation_tokens(run: str | Path, cfg, tokenizer, split: str = "val", overrides: dict | None = None) -> EvaluationSlice:
    """The tokens to evaluate on: the run's data with data.* overrides applied (another corpus, a
    slice), tokenized with the run's tokenizer, with the slice described and, for the validation
    split of a slice, its documents checked against the run's training split (the split rule
    makes the count 0; a document duplicated across the split would show here). The run's own
    data (no overrides) is checked to give the token streams `run` trained on."""
    overrides = overrides or {}
    bad = [k for k in overrides if not k.startswith("data.")]
    if bad:
        raise ConfigError(f"eval takes only data.* overrides, not {bad}")
    fixed = [k for k in overrides if k in TOKENIZER_KEYS]
    if fixed:
        raise ConfigError(
            f"eval scores with the run's own tokenizer, so {', '.join(fixed)} cannot change; "
            "to compare tokenizers, train a run with each and compare bits per byte"
        )
    data_cfg = config_from_dict(apply_overrides(cfg.to_dict(), overrides)).data if overrides else cfg.data
    _, data = prepare_tokens(data_cfg, tokenizer)
    if not overrides:
        check_trained_streams(run, cfg, data.manifest["sha256"])
    documents = data.manifest["documents"][split]
    if split != "val":
        overlap = None
    elif overrides and documents:
        try:
            overlap = train_overlap(cfg.data, data_cfg, set(data.manifest["val_ids"]) or None)  # none: split by position
        except CorpusError as err:  # the run's own corpus moved, or is relative to another folder
            log.warning("not counted how many scored documents the run trained on: its own corpus cannot be read (%s)", err)
            overlap = None
    else:
        overlap = 0  # the run's own validation split
    if overlap:
        log.warning("%d of the %d documents scored were in the run's training split: the score is optimistic", overlap, documents)
    tokens = data.val if split == "val" else data.train
    coverage = describe_documents(data.manifest, split)
    return EvaluationSlice(data_cfg, tokens, describe_selection(data_cfg), documents, coverage, overlap)


def score_run(
    run: str | Path, cfg, model, tokenizer, device, split: str = "val", batches: int = 50, data_overrides: dict | None = None
) -> dict:
    """{"run", "source", "slice", "split", "documents", "coverage", "train_overlap", "tokens",
    "windows", "window", "loss", "loss_low", "loss_high", "ppl", "bpb"} on `batches` batches of the
    split's fixed windows: a sample of its `tokens` ("windows" of "window" tokens, evenly spaced),
    not every token (`eval --text` scores every token of a file once). "loss_low"/"loss_high": the
    95% CI of the loss over the batches, where the windows share no token (NaN where they
    overlap, on a split shorter than the windows asked, or for one batch)."""
    part = evaluation_tokens(run, cfg, tokenizer, split, data_overrides)
    token_bytes = torch.from_numpy(tokenizer.token_bytes())
    per_batch: list[float] = []
    loss, bpb = score_validation(
        model, part.tokens, part.data.seq_len, cfg.train.batch_size, batches, device, cfg.train.dtype, token_bytes=token_bytes,
        progress=f"scoring {run}", batch_losses=per_batch,
    )  # fmt: skip
    offsets = validation_offsets(len(part.tokens), part.data.seq_len, cfg.train.batch_size, batches)
    apart = bool((np.diff(offsets) >= part.data.seq_len).all())  # then every batch is whole: an interval over them
    low, high = t_interval(per_batch) if apart else (math.nan, math.nan)
    return {
        "run": str(run),
        "source": part.data.source,
        "slice": part.description,
        "split": split,
        "documents": part.documents,
        "coverage": part.coverage,
        "train_overlap": part.train_overlap,
        "tokens": len(part.tokens),
        "windows": len(offsets),
        "window": part.data.seq_len,
        "batches": len(per_batch),
        "loss": loss,
        "loss_low": low,
        "loss_high": high,
        "ppl": perplexity(loss),
        "bpb": bpb,
    }


def prompt_ids(tokenizer, prompt: str, context: int) -> list[int]:
    """The prompt's token ids, refused in one line when they do not fit the model's context (an
    empty prompt is the caller's to word: what it needs the text for differs)."""
    ids = tokenizer.encode(prompt)
    if len(ids) > context:
        raise ConfigError(f"the prompt is {len(ids)} tokens but the model's context is {context}; shorten it")
    return ids


def announce_compile(compile: bool) -> None:
    """One line before compiled decoding's silent first steps (the compiling), said once its
    prompts have been read and found to fit: a refused prompt is not preceded by it."""
    if compile:
        log.info("decoding through torch.compile: the first steps compile (seconds to a minute on CPU)")


def generate_texts(
    model,
    tokenizer,
    cfg,
    device,
    prompt: str,
    num_samples: int = 1,
    max_new_tokens: int = 200,
    temperature: float = 0.8,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int = 0,
    use_cache: bool = True,
    compile: bool = False,
    write: Callable[[str], object] | None = None,
    stop_at_eos: bool = True,
    progress: str = "",
) -> list[str]:
    """`num_samples` continuations of `prompt`, sampled as one batch (one seeded generator), decoded
    with the prompt (`compile`: through torch.compile, GenerationMixin.generate). `stop_at_eos`:
    a continuation ends before the tokenizer's end-of-text id (where it has one: documents are
    joined by it), as Hugging Face's generate stops; off, sampling goes on past it. `write`: with
    one sample, is given the text as it comes, the prompt first (TextStream: the pieces join to
    the text returned); else `progress` labels the tokens generated (PhaseProgress; "" = none)."""
    ids = prompt_ids(tokenizer, prompt, cfg.model.block_size)
    if not ids:
        raise ConfigError("the prompt is empty (or holds no character this tokenizer knows): give some text to continue")
    warn_past_trained_context(len(ids) + max_new_tokens, trained_context(cfg), cfg.model.block_size, "the text")
    announce_compile(compile)
    stop = tokenizer.eos_id if stop_at_eos else None
    stream = TextStream(tokenizer, write) if write is not None and num_samples == 1 else None
    if stream is not None:
        stream.push(ids)

    shown = PhaseProgress(progress if stream is None else "", num_samples * max_new_tokens, "tokens")

    def step_done(sequence: torch.Tensor) -> bool:
        """After each decoding step: the new token shown (one sample), or counted."""
        if stream is None:
            shown.update(num_samples)
            return False
        newest = sequence[0, -1:].tolist()
        if newest != [stop]:  # the end-of-text id ends the sample, and is no text of it
            stream.push(newest)
        return False  # never ends the generation itself

    generator = torch.Generator(device=device).manual_seed(seed)
    with shown:
        out = model.generate(
            torch.tensor([ids], device=device).expand(num_samples, -1),  # one row, seen num_samples times
            max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            generator=generator,
            use_cache=use_cache,
            compile=compile,
            vocab_size=tokenizer.vocab_size,
            until=step_done,
            stop_token=stop,
        )
    if stream is not None:
        stream.close()
    continuations = [row[len(ids) :] for row in out.tolist()]
    if stop is not None:  # rows that ended before the last one sampled on
        continuations = [tokenizer.until_eos(continuation) for continuation in continuations]
    return [tokenizer.decode(ids + continuation) for continuation in continuations]
