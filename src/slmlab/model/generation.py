"""Sampling from any slmlab language model: the KV-cached generation loop shared by architectures.

A model that mixes this in provides `cfg.block_size`, `make_caches()` (whatever per-layer state
incremental decoding needs; the first entry has `.length`; optionally sized: `make_caches(max_len)`) and `forward(idx, caches=...)`.

`generate` continues a batch of equal-length prompts; `generate_many` continues prompts of any
lengths in batches: left-padded (the caches carry each row's padding, attention masks it and
positions count from each row's first token) where the model `decodes_padded()`, else grouped by
length. Each row may have its own generator and stops at its own stop token, so every
continuation equals the one its prompt would get alone. Either may run its steps through
torch.compile (`compile=True`, `compiled`): the same tokens, a bounded number of graphs.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

import torch
from torch import nn

from ..config.checks import check_whole_number
from ..errors import CheckpointError, ConfigError
from ..phase_progress import PhaseProgress
from ..tables import counted
from .compiled_decoding import compiled, compiling_drops_hooks, room_for_graphs
from .decoding_layout import MAX_ROWS, DecodingLayout
from .decoding_room import check_decoding_room, check_forward_room
from .inputs import outside_vocabulary
from .modes import eval_mode
from .sampling import NOT_FINITE, check_sampling, sample_next, unusable_rows


class GenerationMixin:
    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = 0,
        top_p: float | None = 1.0,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
        stop_token: int | None = None,
        until: Callable[[torch.Tensor], bool] | None = None,
        sample: Callable[[torch.Tensor], torch.Tensor] | None = None,
        padding: torch.Tensor | None = None,
        compile: bool | str | Callable = False,
        vocab_size: int | None = None,
    ) -> torch.Tensor:
        """Extend idx (B, T) by up to max_new_tokens sampled tokens -> (B, T + n). Generation
        stops early once every row has sampled `stop_token`, or once `until(idx)` is True.
        `sample(logits (B, V)) -> (B, 1)` replaces the sampling options (generate_many's per-row
        generators). `padding` (B,): row i of idx starts with padding[i] pad tokens; the caches
        carry it (for a model that `decodes_padded()`, and a prompt plus new tokens that fit the
        context: a sliding window would cut rows at different places). `compile`: every step runs
        the model through torch.compile (`compiled`; docs/performance.md says where it pays):
        True for inductor, or a torch.compile backend by name or as a callable; the prompt (and a
        rebuilt window) is read into the caches eagerly: compiled, each prompt length, and each
        branch on it (block-local's blocks, Tape's recurrence unrolled), would be graphs of its
        own. `vocab_size`: the tokenizer's; ids from it up to the model's (padded) vocabulary are
        never sampled.

        With the KV cache, each step runs only the new token. When the context reaches
        block_size, the cache is rebuilt from the last block_size // 2 tokens (a sliding window).
        Decoding one or two rows on CPU multiplies the wide linear layers by (in, out) copies of
        their weights, made for the call (decoding_layout.py: the same products, faster). On a
        Linux CPU, a generation whose caches, once filled, would outgrow RAM and swap is refused
        when the prompt has been read, before a token is sampled (decoding_room.py)."""
        self._check_prompt(idx)
        self._check_counts(max_new_tokens, vocab_size, stop_token)
        if idx.shape[1] > self.cfg.block_size:
            raise ConfigError(
                f"the prompt has {idx.shape[1]} tokens but the model's context is {self.cfg.block_size}; shorten it"
            )
        check_sampling(temperature, top_k, top_p)
        _check_callbacks(until=until, sample=sample)
        _check_generator("generator", generator)
        if not isinstance(use_cache, bool):
            raise ConfigError(f"use_cache must be True or False, got {use_cache!r}")
        if padding is not None:
            _check_padding(padding, idx)
            if not self.decodes_padded():
                raise ConfigError(
                    "this model does not decode left-padded batches exactly (decodes_padded() is False): "
                    "give prompts of equal length, or generate_many, which groups them by length"
                )
            if not (use_cache and idx.shape[1] + max_new_tokens <= self.cfg.block_size):
                raise ConfigError("a left-padded batch decodes with the KV cache and within the model's context only")
        layout = DecodingLayout(self, enabled=idx.shape[0] <= MAX_ROWS)  # decoding_layout.py says why
        if compile and compiling_drops_hooks(self):
            compile = False
        with eval_mode(self), layout, room_for_graphs(bool(compile)):
            model = compiled(self, "inductor" if compile is True else compile) if compile else self
            caches, pending, longest = None, idx, idx.shape[1] + max_new_tokens
            last_logits = {"logits_to_keep": 1} if keeps_logits(type(self)) else {}  # the head for the last token only
            first = functools.partial(
                self._first_rows, idx, padding=padding, positions=idx.shape[1] if use_cache else 0, **last_logits
            )
            check_forward_room(self, *idx.shape, first)
            stopped = torch.zeros(idx.shape[0], dtype=torch.bool, device=idx.device)
            unusable = torch.zeros_like(stopped)  # rows whose logits were NaN or +inf at some step: checked once, at the end
            for _ in range(max_new_tokens):
                if use_cache:
                    prefill = caches is None or caches[0].length + pending.shape[1] > self.cfg.block_size
                    if prefill:
                        window = idx[:, -(self.cfg.block_size // 2 or 1) :] if caches is not None else idx
                        caches = padded_caches(self, padding, None if compile else longest)  # compiled: one shape
                        pending = window
                    logits, _ = (self if prefill else model)(pending, caches=caches, **last_logits)
                    if pending is idx:  # the prompt's forward allocated the caches: will they fit filled?
                        check_decoding_room(self, caches, idx.shape[0], idx.shape[1] + max_new_tokens)
                else:
                    logits, _ = model(idx[:, -self.cfg.block_size :], **last_logits)
                last = logits[:, -1, :vocab_size]
                unusable |= unusable_rows(last)
                next_id = sample(last) if sample is not None else sample_next(last, temperature, top_k, top_p, generator)
                idx = torch.cat([idx, next_id], dim=1)
                pending = next_id
                if stop_token is not None:
                    stopped |= next_id[:, 0] == stop_token
                    if bool(stopped.all()):
                        break
                if until is not None and until(idx):
                    break
        if bool(unusable.any()):  # greedy decoding too: argmax of NaN logits is a token, silently
            raise CheckpointError(NOT_FINITE)
        return idx

    def _first_rows(self, idx: torch.Tensor, rows: int, padding: torch.Tensor | None, positions: int, **keep) -> tuple:
        """The prompt's forward of the batch's first `rows` rows, into fresh caches holding `positions`
        (0: none, as without the cache) -> (logits, caches): what check_forward_room measures."""
        caches = padded_caches(self, None if padding is None else padding[:rows], positions) if positions else None
        return self(idx[:rows, -self.cfg.block_size :], **({"caches": caches} if caches else {}), **keep)[0], caches

    def _check_prompt(self, idx: torch.Tensor) -> None:
        """A (B, T) tensor of token ids this model has, B >= 1, T >= 1 (checked once per call)."""
        if not isinstance(idx, torch.Tensor):
            raise ConfigError(
                f"the prompt must be a (batch, tokens) tensor of token ids, got a {type(idx).__name__}: "
                "give torch.tensor([ids]), or a list of id lists to generate_many"
            )
        if idx.dim() != 2 or not _holds_whole_numbers(idx):
            raise ConfigError(
                f"the prompt must be a (batch, tokens) tensor of token ids, got {idx.dtype} of shape {tuple(idx.shape)}"
            )
        if idx.shape[0] == 0:
            raise ConfigError(f"the prompt batch of shape {tuple(idx.shape)} has no rows: give at least one prompt")
        if idx.shape[1] == 0:
            raise ConfigError("the prompt is empty: give at least one token")
        bad = outside_vocabulary(idx, self.cfg.vocab_size)  # on any device: once per generation
        if bad is not None:
            raise ConfigError(
                f"the prompt holds token id {bad}, outside this model's vocabulary "
                f"0..{self.cfg.vocab_size - 1}: encode it with the run's tokenizer"
            )

    def _check_counts(self, max_new_tokens, vocab_size, stop_token) -> None:
        """max_new_tokens a whole number >= 0; vocab_size (when given) 1..the model's vocabulary;
        stop_token (when given) an id of it: one it can never sample would stop nothing, silently."""
        check_whole_number("max_new_tokens", max_new_tokens, 0)
        if vocab_size is not None and not 0 < vocab_size <= self.cfg.vocab_size:
            raise ConfigError(
                f"vocab_size = {vocab_size} must be in 1..{self.cfg.vocab_size} (the tokenizer's, at most the model's)"
            )
        if stop_token is not None:
            check_whole_number("stop_token", stop_token, 0)
            if stop_token >= self.cfg.vocab_size:
                raise ConfigError(f"stop_token = {stop_token} is no id of this model: give one of 0..{self.cfg.vocab_size - 1}")

    def decodes_padded(self) -> bool:
        """Whether a left-padded batch decodes exactly (an architecture that masks padding says so)."""
        return False

    @torch.no_grad()
    def generate_many(
        self,
        prompts: list[list[int]],
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = 0,
        top_p: float | None = 1.0,
        generators: list[torch.Generator | None] | None = None,
        stop_token: int | None = None,
        batch_size: int = 16,
        until: Callable[[torch.Tensor], bool] | None = None,
        compile: bool | str | Callable = False,
        vocab_size: int | None = None,
        progress: str = "",
    ) -> list[list[int]]:
        """Each prompt's continuation (ids after the prompt, up to and including `stop_token`),
        `batch_size` prompts at a time; `until(continuations (B, n))`, checked after each token,
        ends a batch early (a stop string every row has produced, say; rows may run past their
        own stop, for the caller to cut). `generators[i]` samples row i, so a continuation does not
        depend on the batch it ran in. Batches of unequal lengths are left-padded where the model
        decodes them exactly and the longest prompt plus `max_new_tokens` fits the context
        (no sliding window), else split into groups of equal length. `compile` and `vocab_size` as
        in `generate`; `progress`: a label to show the tokens generated under (PhaseProgress,
        counted at every step, so one long batch shows progress too)."""
        check_sampling(temperature, top_k, top_p)
        self._check_counts(max_new_tokens, vocab_size, stop_token)
        check_whole_number("batch_size", batch_size, 1)
        if compile and compiling_drops_hooks(self):  # said once here, not per batch
            compile = False
        _check_callbacks(until=until)
        if not isinstance(progress, str):
            raise ConfigError(f"progress must be a label (a string; '' = none), got {progress!r:.40}")
        if generators is not None:
            if not isinstance(generators, (list, tuple)):
                raise ConfigError(f"generators must be a list, one per prompt, or None; got {type(generators).__name__}")
            if len(generators) != len(prompts):
                raise ConfigError(
                    f"{counted(len(generators), 'generators')} for {counted(len(prompts), 'prompts')}: give one per prompt, or none"
                )
            for i, generator in enumerate(generators):
                _check_generator(f"generators[{i}]", generator)
        if isinstance(prompts, torch.Tensor):
            prompts = prompts.tolist()  # (B, T) -> B lists of ids; any other shape is refused below
        if not all(isinstance(ids, (list, tuple)) and all(isinstance(i, int) for i in ids) for ids in prompts):
            raise ConfigError("prompts must be a list of prompts, each a list of token ids (one prompt: [ids])")
        generators = generators or [None] * len(prompts)
        for ids in prompts:
            if not ids or len(ids) > self.cfg.block_size:
                raise ConfigError(f"a prompt of {len(ids)} tokens: give 1 to {self.cfg.block_size} tokens (the model's context)")
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        out: list[list[int] | None] = [None] * len(prompts)
        with PhaseProgress(progress, len(prompts) * max_new_tokens, "tokens") as shown:
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                lengths = {len(prompts[i]) for i in batch}
                fits = max(lengths) + max_new_tokens <= self.cfg.block_size
                groups = [batch] if len(lengths) == 1 or (fits and self.decodes_padded()) else _by_length(batch, prompts)
                for group in groups:
                    goal = shown.done + len(group) * max_new_tokens
                    rows = self._continue_rows(
                        [prompts[i] for i in group],
                        max_new_tokens,
                        temperature,
                        top_k,
                        top_p,
                        [generators[i] for i in group],
                        stop_token,
                        until,
                        compile,
                        vocab_size,
                        lambda tokens=len(group): shown.update(tokens),  # a decoding step: a token per row
                    )
                    for i, row in zip(group, rows):
                        out[i] = row
                    if shown.done < goal:  # what an early stop left undone
                        shown.update(goal - shown.done)
        return out

    def _continue_rows(
        self, prompts, max_new_tokens, temperature, top_k, top_p, generators, stop_token, until, compile, vocab_size, step_done
    ) -> list[list[int]]:
        """One batch through `generate`: equal lengths as they are (sliding window included),
        unequal ones left-padded; `step_done()` after each decoding step (but one that a stop token ends)."""
        idx, padding = left_padded(prompts, next(self.parameters()).device)
        width = idx.shape[1]
        sampler = _RowSampler(temperature, top_k, top_p, generators)

        def done(sequence: torch.Tensor) -> bool:
            step_done()
            return until is not None and until(sequence[:, width:])

        padding = None if len({len(p) for p in prompts}) == 1 else padding
        limits = {"stop_token": stop_token, "until": done, "vocab_size": vocab_size}
        full = self.generate(idx, max_new_tokens, sample=sampler, padding=padding, compile=compile, **limits)
        rows = []
        for row in full[:, width:].tolist():
            if stop_token is not None and stop_token in row:
                row = row[: row.index(stop_token) + 1]
            rows.append(row)
        return rows


def _check_callbacks(**callbacks) -> None:
    """Each of until / sample is None or a callable (called per step: a wrong one would fail
    inside the loop, after the prompt's forward pass)."""
    for name, value in callbacks.items():
        if value is not None and not callable(value):
            raise ConfigError(f"{name} must be a function (or None), got {type(value).__name__} {value!r:.40}")


def _check_generator(name: str, generator) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ConfigError(f"{name} must be a torch.Generator (or None), got {type(generator).__name__} {generator!r:.40}")


def _holds_whole_numbers(tensor: torch.Tensor) -> bool:
    """An integer dtype: not floating point, complex or bool (token ids, pad counts)."""
    return not (tensor.dtype.is_floating_point or tensor.dtype.is_complex or tensor.dtype == torch.bool)


def _check_padding(padding, idx: torch.Tensor) -> None:
    """padding (B,): whole numbers, each row keeping at least one token of its prompt (idx (B, T))."""
    B, T = idx.shape
    if not isinstance(padding, torch.Tensor) or padding.shape != (B,) or not _holds_whole_numbers(padding):
        got = f"{padding.dtype} of shape {tuple(padding.shape)}" if isinstance(padding, torch.Tensor) else type(padding).__name__
        raise ConfigError(f"padding must be a ({B},) tensor of whole numbers, one per prompt row; got {got}")
    if bool((padding < 0).any()) or bool((padding >= T).any()):
        raise ConfigError(f"padding holds {padding.tolist()!r:.60}: each row's count of pad tokens must be in 0..{T - 1}")


@functools.cache
def keeps_logits(architecture: type) -> bool:
    """Whether the architecture's forward takes `logits_to_keep` (protocol.py: optional; a
    plugin's may not): generation then computes the prompt's head (B, T, V) for its last token
    only, (B, 1, V): a GPT-2 vocabulary's head was a third of a 256-token prompt's forward."""
    return "logits_to_keep" in inspect.signature(architecture.forward).parameters


@functools.cache
def sizes_caches(architecture: type) -> bool:
    """Whether the architecture's make_caches takes `max_len` (protocol.py: optional; a plugin's
    may not): the most positions a use will append, at most block_size."""
    return "max_len" in inspect.signature(architecture.make_caches).parameters


def padded_caches(model: nn.Module, padding: torch.Tensor | None, positions: int | None = None) -> list:
    """The model's fresh KV caches (make_caches), each told the batch's left padding (B,) when
    there is one: attention and extensions then leave it out (KVCache.padding). `positions`: the
    most that will be appended; where the architecture sizes its caches, a whole-context one then
    holds that many rather than block_size (a window keeps its own), so that a model of a vast
    context (RoPE's block_size = 10**9) decodes a short text without reserving memory for the whole."""
    sized = positions is not None and sizes_caches(type(model))
    caches = model.make_caches(min(positions, model.cfg.block_size)) if sized else model.make_caches()
    if padding is not None:
        for cache in caches:
            cache.padding = padding
    return caches


def left_padded(prompts: list[list[int]], device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(idx (B, W), padding (B,)): the prompts as one batch of their longest length W, row i
    starting with padding[i] = W - len(prompts[i]) pad tokens (id 0), as `generate(padding=)` reads it."""
    width = max(len(p) for p in prompts)
    idx = torch.tensor([[0] * (width - len(p)) + list(p) for p in prompts], device=device)
    return idx, torch.tensor([width - len(p) for p in prompts], device=device)


def _by_length(batch: list[int], prompts: list[list[int]]) -> list[list[int]]:
    groups: dict[int, list[int]] = {}
    for i in batch:
        groups.setdefault(len(prompts[i]), []).append(i)
    return list(groups.values())


class _RowSampler:
    """Next tokens (B, 1) from logits (B, V), row i drawn with generators[i]: the same draws the
    row would get alone."""

    def __init__(self, temperature, top_k, top_p, generators):
        self.options, self.generators = (temperature, top_k, top_p), generators

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        if len(set(map(id, self.generators))) == 1:  # one generator (or none) for the batch
            return sample_next(logits, *self.options, self.generators[0])
        return torch.cat([sample_next(logits[i : i + 1], *self.options, g) for i, g in enumerate(self.generators)])
