"""Attention visualisation: `slmlab viz attention RUN --prompt TEXT`.

The maps come from model/attention_maps.py (exactly the attention each module applied, rebuilt
on demand for one prompt). Outputs in RUN/viz/: one heatmap grid per attention module (a panel per head, token labels), the
prompt as coloured text by the attention each token receives and gives, and with `--export
bertviz` the maps and tokens in the form bertviz's head_view/model_view take.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import torch

from ..errors import ConfigError, RunFileError
from ..files import atomic_write, atomic_write_text
from ..model.attention_maps import AttentionMap
from ..phase_progress import PhaseProgress
from ..plotting import pyplot, save_png
from ..tables import command_line
from ..training.frames import PER_LINE, draw_coloured_text

log = logging.getLogger("slmlab")


def _file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")


def plot_heatmaps(maps: list[AttentionMap], tokens: list[str], out: Path) -> list[Path]:
    """One PNG per attention module: a grid with one heatmap per head."""
    plt = pyplot()

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
        save_png(fig, path, dpi=100)
        paths.append(path)
    return paths


def plot_coloured_text(tokens: list[str], scores: dict[str, torch.Tensor], path: Path, title: str = "") -> Path:
    """The text, once per score, each token on a background coloured by its score."""
    plt = pyplot()

    lines = (len(tokens) + PER_LINE - 1) // PER_LINE
    fig, axes = plt.subplots(len(scores), 1, figsize=(12, (0.45 * lines + 0.6) * len(scores)), squeeze=False)
    for ax, (label, score) in zip(axes[:, 0], scores.items()):
        draw_coloured_text(ax, tokens, score, label)
    if title:
        fig.suptitle(title, fontsize=10)
    save_png(fig, path, dpi=110, bbox_inches="tight")
    return path


def save(movie, path: Path, writer, frames: int) -> None:
    """Write `movie` through `writer` (atomically, as every file), its frames' progress shown."""
    with PhaseProgress(f"writing {path}", frames, "frames") as progress:
        atomic_write(
            path, lambda tmp: movie.save(tmp, writer=writer, progress_callback=lambda i, n: progress.update()), keep_suffix=True
        )


def animate(frames_dir: Path, out: Path, fps: int = 4) -> list[Path]:
    """Assemble the frames into out.gif (Pillow) and, when ffmpeg is present, out.mp4."""
    plt = pyplot()
    from matplotlib import animation

    frames = sorted(frames_dir.glob("frame_*.png"))
    if not frames:
        raise ConfigError(f"no frames in {frames_dir}; train with --viz-every N first")
    images = [_frame(plt, f) for f in frames]
    height, width = images[0].shape[:2]
    fig = plt.figure(figsize=(width / 80, height / 80), dpi=80)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.axis("off")
    shown = ax.imshow(images[0])
    movie = animation.FuncAnimation(fig, lambda i: shown.set_data(images[i]) or [shown], frames=len(images), interval=1000 / fps)
    written = [out.with_suffix(".gif")]
    save(movie, written[0], animation.PillowWriter(fps=fps), len(images))
    if animation.writers.is_available("ffmpeg"):
        written.append(out.with_suffix(".mp4"))
        save(movie, written[1], animation.FFMpegWriter(fps=fps), len(images))
    else:
        log.warning("no MP4: ffmpeg is not installed (install it to get %s too)", out.with_suffix(".mp4"))
    plt.close(fig)
    return written


def _frame(plt, path: Path):
    """A saved frame's pixels, or one line naming a damaged one (Pillow says so as SyntaxError)."""
    try:
        return plt.imread(path)
    except (OSError, SyntaxError, ValueError) as err:
        raise RunFileError(f"viz frame {path} is damaged ({err}); delete it to animate the others") from None


def export_bertviz(maps: list[AttentionMap], tokens: list[str], out: Path) -> Path:
    """attention_bertviz.pt ({"attention": [(1, heads, T, T) per module], "tokens", "layers"}) for
    `bertviz.head_view(data["attention"], data["tokens"])`, and the same as JSON."""
    attention = [m.probs[None].cpu() for m in maps]
    data = {"attention": attention, "tokens": tokens, "layers": [m.name for m in maps]}
    atomic_write(out / "attention_bertviz.pt", lambda tmp: torch.save(data, tmp))
    payload = {"tokens": tokens, "layers": [m.name for m in maps], "attention": [a.tolist() for a in attention]}
    atomic_write_text(out / "attention_bertviz.json", json.dumps(payload))
    return out / "attention_bertviz.pt"


def attention_report(
    run: str | Path,
    prompt: str,
    out: str | Path | None = None,
    export: str | None = None,
    device: str = "auto",
    checkpoint: str | None = None,
) -> tuple[int, int, list[Path], Path]:
    """Heatmaps of every attention module, the prompt coloured by attention received and given,
    and (export="bertviz") the maps for bertviz -> (modules, tokens, files written, folder);
    `checkpoint`: read that checkpoint's weights instead of the final ones."""
    from ..model.attention_maps import capture_attention, require_attention, token_scores
    from ..runs.derived import record_derived
    from .readout import load_for_readout, option_args

    loaded = load_for_readout(run, device, checkpoint)
    require_attention(loaded.model, "slmlab viz attention")
    ids = loaded.ids(prompt)
    if not ids:
        raise ConfigError("the prompt is empty: give some text to look at")
    folder = loaded.folder(out)
    maps, _ = capture_attention(loaded.model, torch.tensor([ids], device=loaded.device))
    tokens = loaded.labels(ids)
    paths = plot_heatmaps(maps, tokens, folder)
    received, given = token_scores(maps)
    paths.append(
        plot_coloured_text(
            tokens,
            {"attention received": received, "attention given to other tokens": given},
            folder / "attention_text.png",
            f"{Path(run).name}: mean over {len(maps)} attention modules",
        )
    )
    if export == "bertviz":
        paths.append(export_bertviz(maps, [loaded.tokenizer.decode([i]) for i in ids], folder))  # the text, not labels
    command = ["slmlab", "viz", "attention", str(run), "--prompt", prompt, *option_args(checkpoint=checkpoint)]
    record_derived(run, paths, command_line(*command), loaded.weights)
    return len(maps), len(ids), paths, folder
