"""Attention visualisation: `slmlab viz attention RUN --prompt TEXT`.

No architecture builds attention matrices in training (fused SDPA); here they are computed on
demand for one prompt. A forward hook on every attention pattern (any model: backbone, SMAT,
block-local, SMT, Tape) receives the final queries and keys (after RoPE and score extensions such
as SMAT's extra dimensions) and the scale, and rebuilds

    P = softmax(q kᵀ · scale, over the keys the pattern lets each query see)   (heads, T, T)

which is exactly the attention the model applied (tested: P v equals the pattern's output).
Outputs in RUN/viz/: one heatmap grid per attention module (a panel per head, token labels), the
prompt as coloured text by the attention each token receives and gives, and with `--export
bertviz` the maps and tokens in the form bertviz's head_view/model_view take.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..model.attention import CausalSelfAttention


@dataclass
class AttentionMap:
    name: str  # the attention module's name, e.g. "blocks.2.attn"
    probs: torch.Tensor  # (heads, Tq, Tk), rows sum to 1
    values: torch.Tensor  # (heads, Tk, D) as the pattern received them
    output: torch.Tensor  # (heads, Tq, D) what the pattern returned


@torch.no_grad()
def capture_attention(model: nn.Module, idx: torch.Tensor) -> tuple[list[AttentionMap], torch.Tensor]:
    """Run model on idx (1, T) in eval mode -> (every attention module's probabilities, the logits)."""
    maps, handles = [], []
    for name, module in model.named_modules():
        if isinstance(module, CausalSelfAttention):
            def hook(pattern, args, output, name=name):
                q, k, v, scale, q_start = args
                scores = (q[0].float() @ k[0].float().transpose(-2, -1)) * scale
                visible = pattern.visible(q.shape[2], k.shape[2], q_start, q.device)
                probs = scores.masked_fill(~visible, float("-inf")).softmax(-1)
                maps.append(AttentionMap(name, probs, v[0].float(), output[0].float()))

            handles.append(module.pattern.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        logits, _ = model(idx)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return maps, logits


def token_labels(tokenizer, ids: list[int]) -> list[str]:
    return [tokenizer.decode([i]).replace("\n", "⏎") or "·" for i in ids]


def _file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")


def plot_heatmaps(maps: list[AttentionMap], tokens: list[str], out: Path) -> list[Path]:
    """One PNG per attention module: a grid with one heatmap per head."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths, T = [], len(tokens)
    show_labels = T <= 64
    for index, amap in enumerate(maps):
        heads = amap.probs.shape[0]
        cols = min(4, heads)
        rows = (heads + cols - 1) // cols
        size = 2.2 + 0.12 * T if show_labels else 3.2
        fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False)
        for h, ax in enumerate(axes.flat):
            if h >= heads:
                ax.axis("off")
                continue
            ax.imshow(amap.probs[h].cpu().numpy(), cmap="viridis", vmin=0, vmax=1)
            ax.set_title(f"head {h}", fontsize=9)
            if show_labels:
                ax.set_xticks(range(T), tokens, rotation=90, fontsize=6)
                ax.set_yticks(range(T), tokens, fontsize=6)
            else:
                ax.set_xticks([])
                ax.set_yticks([])
        fig.suptitle(f"{amap.name}: attention (rows: queries, columns: keys)", fontsize=10)
        fig.tight_layout()
        path = out / f"attention_{index:02d}_{_file_name(amap.name)}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def token_scores(maps: list[AttentionMap]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per token, over every module and head: the mean attention it receives from the queries that
    can see it, and the share of its own attention it gives to other tokens (1 − P_tt)."""
    probs = torch.stack([m.probs for m in maps if m.probs.shape[-1] == m.probs.shape[-2]])  # (M, H, T, T)
    seen_by = (probs > 0).float().sum(dim=(0, 1, 2)).clamp_min(1)
    received = probs.sum(dim=(0, 1, 2)) / seen_by
    given = 1 - probs.diagonal(dim1=-2, dim2=-1).mean(dim=(0, 1))
    return received, given


PER_LINE = 24


def draw_coloured_text(ax, tokens: list[str], score: torch.Tensor, label: str) -> None:
    """Tokens in rows of PER_LINE on one axis, each on a background coloured by its score."""
    import matplotlib.pyplot as plt

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
            ax.text(j / PER_LINE, y, tok, fontsize=9, va="center", transform=ax.transAxes, family="monospace",
                    color="white" if value > 0.6 else "black",
                    bbox={"facecolor": cmap(value), "edgecolor": "none", "pad": 1.5})


def plot_coloured_text(tokens: list[str], scores: dict[str, torch.Tensor], path: Path, title: str = "") -> Path:
    """The text, once per score, each token on a background coloured by its score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = (len(tokens) + PER_LINE - 1) // PER_LINE
    fig, axes = plt.subplots(len(scores), 1, figsize=(12, (0.45 * lines + 0.6) * len(scores)), squeeze=False)
    for ax, (label, score) in zip(axes[:, 0], scores.items()):
        draw_coloured_text(ax, tokens, score, label)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


# ---- attention over training: frames and an animation --------------------------------------


def ewma(values: list[float], alpha: float = 0.3) -> list[float]:
    out, current = [], None
    for value in values:
        current = value if current is None else alpha * value + (1 - alpha) * current
        out.append(current)
    return out


@torch.no_grad()
def training_frame(model: nn.Module, tokenizer, window: list[int], history: list[tuple[int, float]], step: int, path: Path) -> Path:
    """One frame: the window coloured by the attention each token receives and by its loss (the
    prediction of token t+1 at t), and the training loss with its EWMA up to `step`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
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
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def animate(frames_dir: Path, out: Path, fps: int = 4) -> list[Path]:
    """Assemble the frames into out.gif (Pillow) and, when ffmpeg is present, out.mp4."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import animation

    frames = sorted(frames_dir.glob("frame_*.png"))
    if not frames:
        raise FileNotFoundError(f"no frames in {frames_dir}; train with --viz-every N first")
    images = [plt.imread(f) for f in frames]
    height, width = images[0].shape[:2]
    fig = plt.figure(figsize=(width / 80, height / 80), dpi=80)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.axis("off")
    shown = ax.imshow(images[0])
    movie = animation.FuncAnimation(fig, lambda i: shown.set_data(images[i]) or [shown], frames=len(images), interval=1000 / fps)
    written = [out.with_suffix(".gif")]
    movie.save(written[0], writer=animation.PillowWriter(fps=fps))
    if animation.writers.is_available("ffmpeg"):
        written.append(out.with_suffix(".mp4"))
        movie.save(written[1], writer=animation.FFMpegWriter(fps=fps))
    plt.close(fig)
    return written


def export_bertviz(maps: list[AttentionMap], tokens: list[str], out: Path) -> Path:
    """attention_bertviz.pt ({"attention": [(1, heads, T, T) per module], "tokens", "layers"}) for
    `bertviz.head_view(data["attention"], data["tokens"])`, and the same as JSON."""
    attention = [m.probs[None].cpu() for m in maps]
    torch.save({"attention": attention, "tokens": tokens, "layers": [m.name for m in maps]}, out / "attention_bertviz.pt")
    payload = {"tokens": tokens, "layers": [m.name for m in maps], "attention": [a.tolist() for a in attention]}
    (out / "attention_bertviz.json").write_text(json.dumps(payload))
    return out / "attention_bertviz.pt"
