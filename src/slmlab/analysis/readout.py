"""What the viz verbs that read a trained run on a prompt share (lens, patch, attribute): the
decoder structure they read (its blocks' residual stream, each block's attention), loading the run
with the identity of its weights, the answer token a metric reads, and writing the figure and
table into RUN/viz (or --out) recorded as derived from those weights."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError
from ..files import atomic_write_text
from ..model.attention import CausalSelfAttention
from ..model.hooks import HookPoint
from ..model.modes import eval_mode
from ..tables import command_line


def residual_blocks(model: nn.Module, reader: str) -> list[nn.Module]:
    """The blocks of a decoder whose residual stream runs between them (each with hook_resid_pre,
    hook_attn_out and hook_mlp_out) into a final norm, in order; any other model is refused in one
    line naming `reader`, the tool that wanted to read it."""
    blocks = list(getattr(model, "blocks", None) or [])
    points = ("hook_resid_pre", "hook_attn_out", "hook_mlp_out")
    if (
        not blocks
        or not all(isinstance(getattr(b, p, None), HookPoint) for b in blocks for p in points)
        or not hasattr(model, "norm_f")
    ):
        arch = getattr(getattr(model, "cfg", None), "arch", type(model).__name__)
        raise ConfigError(f"{reader} reads a decoder's residual stream between its blocks; model.arch = {arch!r} has none")
    return blocks


def block_attention(block: nn.Module) -> CausalSelfAttention | None:
    """The block's one backbone attention, whose heads are read at its hook_z (None when it has
    none or several)."""
    found = [module for module in block.modules() if isinstance(module, CausalSelfAttention)]
    return found[0] if len(found) == 1 else None


@dataclass
class LoadedRun:
    run: Path
    cfg: object
    model: nn.Module
    tokenizer: object
    device: torch.device
    weights: str  # SHA-256 of the weights loaded (runs/derived.py)
    checkpoint: str | None = None  # the checkpoint read (None: the run's final weights)

    def folder(self, out: str | Path | None) -> Path:
        """Where a readout writes: `out`, else RUN/viz, or RUN/viz/<checkpoint> for a checkpoint's
        weights (kept apart from the final weights' files, which the report shows)."""
        folder = Path(out) if out else self.run / "viz" / (self.checkpoint or "")
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def ids(self, prompt: str) -> list[int]:
        """The prompt's token ids, refused when longer than the model's context."""
        from ..evals.score import prompt_ids

        return prompt_ids(self.tokenizer, prompt, self.cfg.model.block_size)

    def labels(self, ids: list[int]) -> list[str]:
        """Each id's text as a label showing every character (⏎ a newline, ␣ a space: token_labels)."""
        from ..training.frames import token_labels

        return token_labels(self.tokenizer, ids)


def load_for_readout(run: str | Path, device: str = "auto", checkpoint: str | None = None) -> LoadedRun:
    """The run's model (`checkpoint`: that checkpoint's weights) with what a readout needs."""
    from ..runs.derived import weights_identity
    from ..runs.run_dir import load_run
    from ..training.runtime import resolve_device

    resolved = resolve_device(device)
    weights = weights_identity(run, checkpoint)  # before loading: what the files are derived from
    cfg, model, tokenizer = load_run(run, resolved, checkpoint=checkpoint)
    return LoadedRun(Path(run), cfg, model, tokenizer, resolved, weights, checkpoint)


def one_token(tokenizer, text: str, flag: str) -> int:
    ids = tokenizer.encode(text)
    if len(ids) != 1:
        raise ConfigError(f"{flag} {text!r} is {len(ids)} tokens for this tokenizer: give one token")
    return ids[0]


def answer_tokens(loaded: LoadedRun, idx: torch.Tensor, answer: str | None, wrong: str | None) -> tuple[int, int | None]:
    """(answer id, wrong id or None): --answer's one token, by default the model's most likely next
    token after idx (1, T) among the tokenizer's (a padded embedding's extra ids are no text);
    --wrong's one token, which must differ from the answer."""
    if answer is None:
        with torch.no_grad(), eval_mode(loaded.model):
            answer_id = int(loaded.model(idx)[0][0, -1, : loaded.tokenizer.vocab_size].argmax())
    else:
        answer_id = one_token(loaded.tokenizer, answer, "--answer")
    wrong_id = None if wrong is None else one_token(loaded.tokenizer, wrong, "--wrong")
    if wrong_id == answer_id:
        raise ConfigError(f"--wrong {wrong!r} is the answer itself: give another token")
    return answer_id, wrong_id


def metric_label(loaded: LoadedRun, answer_id: int, wrong_id: int | None, alone: str) -> str:
    """ "logit('a') - logit('b')", or with no wrong token `alone` of the answer: "log p('a')"."""
    answer = repr(loaded.labels([answer_id])[0])
    return f"{alone}({answer})" if wrong_id is None else f"logit({answer}) - logit({loaded.labels([wrong_id])[0]!r})"


def write_readout(
    loaded: LoadedRun, out: str | Path | None, stem: str, draw: Callable[[Path], Path], markdown: str, command: list[str]
) -> list[Path]:
    """Write <stem>.png (`draw(path)`) and <stem>.md (`markdown`) into loaded.folder(out), and
    record them as derived from the weights read by `command` -> the paths written."""
    from ..runs.derived import record_derived

    folder = loaded.folder(out)
    paths = [draw(folder / f"{stem}.png"), folder / f"{stem}.md"]
    atomic_write_text(paths[1], markdown)
    record_derived(loaded.run, paths, command_line(*command), loaded.weights)
    return paths


def option_args(**options: str | None) -> list[str]:
    """['--answer', 'x', ...] for the options given (None: left out), to record a command."""
    return [part for name, value in options.items() if value is not None for part in (f"--{name}", value)]
