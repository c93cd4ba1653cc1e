"""Frames of attention over training (`train --viz-every N`, `slmlab viz animate RUN`): the first
validation window coloured by the attention each token receives and by its next-token loss, above
the training loss and its EWMA. Saved by a training callback into RUN/viz/frames/frame_<step>.png."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..model.attention_maps import capture_attention, require_attention, token_scores
from ..plotting import pyplot, save_png
from .callbacks import TrainingCallback


def token_labels(tokenizer, ids: list[int]) -> list[str]:
    """Each id's text as a label that shows every character: a newline as ⏎, a space as ␣ (' the'
    reads ␣the), other control characters as their Unicode control pictures (a tab ␉, NUL ␀, DEL
    ␡), which would otherwise print as nothing or break a table's line; a token with no text
    of its own (a byte of a longer character) as ·."""
    return [tokenizer.decode([i]).translate(VISIBLE) or "·" for i in ids]


VISIBLE = {**{code: 0x2400 + code for code in range(0x20)}, ord("\n"): "⏎", ord(" "): "␣", 0x7F: "␡"}


PER_LINE = 24


def draw_coloured_text(ax, tokens: list[str], score: torch.Tensor, label: str) -> None:
    """Tokens in rows of PER_LINE on one axis, each on a background coloured by its score."""
    plt = pyplot()

    ax.axis("off")
    cmap = plt.get_cmap("magma_r")
    values = score.detach().float().cpu().numpy()
    top = float(values.max()) or 1.0
    lines = (len(tokens) + PER_LINE - 1) // PER_LINE
    ax.set_title(label, fontsize=10, loc="left")
    for start in range(0, len(tokens), PER_LINE):
        y = 1 - (start // PER_LINE + 0.5) / max(lines, 1)
        for j, tok in enumerate(tokens[start : start + PER_LINE]):
            value = values[start + j] / top
            ax.text(
                j / PER_LINE,
                y,
                tok,
                fontsize=9,
                va="center",
                transform=ax.transAxes,
                family="monospace",
                color="white" if value > 0.6 else "black",
                bbox={"facecolor": cmap(value), "edgecolor": "none", "pad": 1.5},
            )


def ewma(values: list[float], alpha: float = 0.3) -> list[float]:
    out, current = [], None
    for value in values:
        current = value if current is None else alpha * value + (1 - alpha) * current
        out.append(current)
    return out


@torch.no_grad()
def training_frame(
    model: nn.Module, tokenizer, window: list[int], history: list[tuple[int, float]], step: int, path: Path
) -> Path:
    """One frame: the window coloured by the attention each token receives and by its loss (the
    prediction of token t+1 at t), and the training loss with its EWMA up to `step`."""
    plt = pyplot()
    import torch.nn.functional as F

    device = next(model.parameters()).device
    idx = torch.tensor([window], device=device)
    maps, logits = capture_attention(model, idx[:, :-1])
    received, _ = token_scores(maps)
    token_loss = F.cross_entropy(logits[0].float(), idx[0, 1:], reduction="none")
    tokens = token_labels(tokenizer, window[:-1])
    lines = (len(tokens) + PER_LINE - 1) // PER_LINE
    fig = plt.figure(figsize=(12, 2 * (0.45 * lines + 0.6) + 2.6))
    grid = fig.add_gridspec(3, 1, height_ratios=[0.45 * lines + 0.6, 0.45 * lines + 0.6, 2.2])
    draw_coloured_text(fig.add_subplot(grid[0]), tokens, received, "attention received")
    draw_coloured_text(fig.add_subplot(grid[1]), tokens, token_loss, "loss of the next-token prediction")
    ax = fig.add_subplot(grid[2])
    steps, losses = zip(*history) if history else ((step,), (float("nan"),))
    ax.plot(steps, losses, color="tab:blue", alpha=0.4, label="loss")
    ax.plot(steps, ewma(list(losses)), color="tab:blue", label="EWMA")
    ax.set_xlabel("step")
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.suptitle(f"step {step}   loss {losses[-1]:.3f}   EWMA {ewma(list(losses))[-1]:.3f}", fontsize=11)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_png(fig, path, dpi=80)
    return path


class AttentionFrames(TrainingCallback):
    """Every `every` steps, the frame of the first validation window (up to 64 tokens) with the
    training loss so far, drawn by rank 0 from the whole model (gathered by every rank when FSDP
    shards it)."""

    def __init__(self, every: int, model: nn.Module):
        require_attention(model, "train.viz_every")
        self.every = every

    def on_step(self, trainer) -> None:
        if trainer.step % self.every:
            return
        model = trainer.whole_model()  # a collective when the model is sharded
        if trainer.world.is_main:
            history = [(r["step"], r["loss"]) for r in trainer.metrics.read() if r.get("loss") is not None]
            window = trainer.data.val.tokens[: min(64, trainer.cfg.data.seq_len) + 1].astype("int64").tolist()
            path = trainer.run.path / "viz" / "frames" / f"frame_{trainer.step:06d}.png"
            training_frame(model, trainer.tokenizer, window, history, trainer.step, path)
