"""Activation patching: which activations carry the difference between two prompts' predictions.

Two prompts of the same length in tokens: a clean one, and a corrupted one that differs where it
matters (a name, a number). A metric m reads the logits at the last position:

    m = log p(answer)                          (no wrong answer given)
    m = logit(answer) - logit(wrong)           (TransformerLens's logit difference)

The answer defaults to the clean prompt's most likely next token. While the model reads the
corrupted prompt, one activation at a time is given its value from the clean run, and the change
is scored as

    score = (m_patched - m_corrupt) / (m_clean - m_corrupt)

1: this activation alone restores the clean prediction; 0: it carries none of the difference.
Patched by block l and position t: the residual stream entering the block (hook_resid_pre), the
attention's output (hook_attn_out) and the MLP's (hook_mlp_out); by block and head, over all
positions at once: head h's output z_h before the output projection (hook_z). This is Meng et
al.'s causal tracing with clean activations restored, and TransformerLens's
`patching.get_act_patch_resid_pre` / `get_act_patch_attn_head_out_all_pos`.

Each (activation, block) is one forward pass of a batch holding the corrupted prompt once per
position (or head), row t patched at position t (row h at head h); a long prompt's rows are
split over several passes of at most ROW_TOKENS tokens.

`slmlab viz patch RUN --clean TEXT --corrupt TEXT` writes RUN/viz/patch.png (one heatmap per kind
of activation) and patch.md (the scores as tables).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError
from ..model.modes import eval_mode
from ..phase_progress import PhaseProgress
from ..plotting import pyplot, save_png
from ..tables import counted, markdown_table
from .readout import (
    LoadedRun,
    answer_tokens,
    block_attention,
    load_for_readout,
    metric_label,
    option_args,
    residual_blocks,
    write_readout,
)

POSITION_POINTS = ("hook_resid_pre", "hook_attn_out", "hook_mlp_out")
POINT_TITLES = {
    "hook_resid_pre": "residual stream entering the block",
    "hook_attn_out": "attention output",
    "hook_mlp_out": "MLP output",
    "hook_z": "head outputs, all positions",
}
SAME_METRIC = 1e-4  # nats: below this the two prompts' metrics leave nothing to restore
ROW_TOKENS = 2**16  # tokens per patched forward pass: a long prompt's positions take several


@dataclass
class Patching:
    """Scores (module docstring): `by_position[point]` (L, T) for each of POSITION_POINTS,
    `by_head` (L, H) (None: the blocks' attention has no hook_z), and the metric on either prompt."""

    by_position: dict[str, torch.Tensor]
    by_head: torch.Tensor | None
    clean: float
    corrupt: float


def last_token_metric(answer: int, wrong: int | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """logits (B, T, V) -> (B,): log p(answer) at the last position, or with `wrong` the logit
    difference logit(answer) - logit(wrong) there."""

    def metric(logits: torch.Tensor) -> torch.Tensor:
        last = logits[:, -1].float()
        return last.log_softmax(-1)[:, answer] if wrong is None else last[:, answer] - last[:, wrong]

    return metric


def _patch_each(
    model: nn.Module,
    point: nn.Module,
    corrupt: torch.Tensor,
    source: torch.Tensor,
    score: Callable[[torch.Tensor], torch.Tensor],
    progress: PhaseProgress,
) -> torch.Tensor:
    """(n,) scores, n = len(source): the corrupted prompt read with `point`'s output at index i of
    its axis 1 (a position of a (B, T, d) activation, a head of a (B, H, T, D) one) set to
    source[i], its value in the clean run; one row per index, ROW_TOKENS tokens per forward pass,
    each row counted by `progress`."""
    n, T = source.shape[0], corrupt.shape[1]
    per_pass = max(1, ROW_TOKENS // T)
    scores = []
    for start in range(0, n, per_pass):
        index = torch.arange(start, min(n, start + per_pass), device=corrupt.device)
        rows = torch.arange(len(index), device=corrupt.device)

        def patch(module, args, out, rows=rows, index=index):
            out = out.clone()
            out[rows, index] = source[index]
            return out

        handle = point.register_forward_hook(patch)
        try:
            scores.append(score(model(corrupt.expand(len(index), T))[0]))
        finally:
            handle.remove()
        progress.update(len(index))
    return torch.cat(scores)


@torch.no_grad()
def activation_patching(
    model: nn.Module, clean: torch.Tensor, corrupt: torch.Tensor, metric: Callable[[torch.Tensor], torch.Tensor]
) -> Patching:
    """clean, corrupt: (1, T) token ids of the same length; metric: logits (B, T, V) -> (B,)."""
    blocks = residual_blocks(model, "activation patching")
    if clean.dim() != 2 or clean.shape[0] != 1 or clean.shape != corrupt.shape:
        raise ConfigError(
            f"the clean and corrupted prompts must be one row each of the same number of tokens, got "
            f"{tuple(clean.shape)} and {tuple(corrupt.shape)}"
        )
    heads = [attention.hook_z if (attention := block_attention(block)) else None for block in blocks]
    points = {(name, layer): getattr(block, name) for layer, block in enumerate(blocks) for name in POSITION_POINTS}
    points.update({("hook_z", layer): point for layer, point in enumerate(heads) if point is not None})
    cache: dict[tuple[str, int], torch.Tensor] = {}
    handles = [
        point.register_forward_hook(lambda module, args, out, key=key: cache.__setitem__(key, out[0]))
        for key, point in points.items()
    ]
    with eval_mode(model):
        try:
            m_clean = float(metric(model(clean)[0])[0])
        finally:
            for handle in handles:
                handle.remove()
        m_corrupt = float(metric(model(corrupt)[0])[0])
        if abs(m_clean - m_corrupt) < SAME_METRIC:
            raise ConfigError(
                f"the clean and corrupted prompts give the same metric ({m_clean:.4f}): there is no difference for a "
                "patch to restore; make them differ where the answer depends on it, or choose another --answer"
            )

        def score(logits: torch.Tensor) -> torch.Tensor:
            return ((metric(logits) - m_corrupt) / (m_clean - m_corrupt)).cpu()

        def scores(name: str) -> torch.Tensor:  # (L, T) or (L, H)
            return torch.stack(
                [
                    _patch_each(model, points[name, layer], corrupt, cache[name, layer], score, shown)
                    for layer in range(len(blocks))
                ]
            )

        patched = [name for name in (*POSITION_POINTS, "hook_z") if name != "hook_z" or all(p is not None for p in heads)]
        total = sum(len(cache[name, layer]) for name in patched for layer in range(len(blocks)))
        with PhaseProgress("activation patching", total, "patches") as shown:  # (L x 3T + L x H) passes' rows: minutes at T = 512
            by_position = {name: scores(name) for name in POSITION_POINTS}
            by_head = scores("hook_z") if "hook_z" in patched else None
    return Patching(by_position, by_head, m_clean, m_corrupt)


def plot_patching(result: Patching, positions: list[str], path: Path, title: str) -> Path:
    """One heatmap per kind of activation (blocks down, positions or heads across), scores in
    [-1, 1] coloured red (restores the clean prediction) to blue (pushes it further away)."""
    plt = pyplot()

    panels = [(name, result.by_position[name], positions) for name in POSITION_POINTS]
    if result.by_head is not None:
        panels.append(("hook_z", result.by_head, [f"head {h}" for h in range(result.by_head.shape[1])]))
    layers = result.by_position[POSITION_POINTS[0]].shape[0]
    width = 2.5 + 0.5 * len(positions)
    fig, axes = plt.subplots(len(panels), 1, figsize=(width, 1.0 + len(panels) * (1.1 + 0.4 * layers)), squeeze=False)
    for ax, (name, scores, labels) in zip(axes[:, 0], panels):
        image = ax.imshow(scores.cpu().numpy(), cmap="RdBu_r", vmin=-1.0, vmax=1.0, aspect="auto")
        ax.set_xticks(range(len(labels)), labels, rotation=90 if name != "hook_z" else 0, fontsize=7)
        ax.set_yticks(range(layers), [f"block {layer}" for layer in range(layers)], fontsize=8)
        ax.set_title(f"{POINT_TITLES[name]} ({name})", fontsize=9)
        fig.colorbar(image, ax=ax, label="score")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_png(fig, path, dpi=120)
    return path


def _cell(score: float) -> str:
    """A score to two decimals, rounding noise of either sign shown as 0.00 (not -0.00)."""
    return f"{0.0 if abs(score) < 0.005 else score:.2f}"


def _position_labels(loaded: LoadedRun, clean: list[int], corrupt: list[int]) -> list[str]:
    """Each position's corrupted token, with the clean one after a slash where they differ."""
    pairs = zip(loaded.labels(corrupt), loaded.labels(clean))
    return [f"{t}: {bad}" if bad == good else f"{t}: {bad}/{good}" for t, (bad, good) in enumerate(pairs)]


def patching_report(
    run: str | Path,
    clean: str,
    corrupt: str,
    answer: str | None = None,
    wrong: str | None = None,
    out: str | Path | None = None,
    device: str = "auto",
    checkpoint: str | None = None,
) -> tuple[str, list[Path]]:
    """Activation patching of a run on one pair of prompts -> (the Markdown report, files written:
    patch.png, patch.md); `checkpoint`: read that checkpoint's weights instead of the final ones."""
    loaded = load_for_readout(run, device, checkpoint)
    clean_ids, corrupt_ids = loaded.ids(clean), loaded.ids(corrupt)
    if not clean_ids or len(clean_ids) != len(corrupt_ids):
        raise ConfigError(
            f"the clean prompt is {counted(len(clean_ids), 'tokens')} and the corrupted one {len(corrupt_ids)}: patching compares "
            "them position by position, so give two non-empty prompts of the same length in tokens"
        )
    clean_t, corrupt_t = (torch.tensor([ids], device=loaded.device) for ids in (clean_ids, corrupt_ids))
    answer_id, wrong_id = answer_tokens(loaded, clean_t, answer, wrong)
    result = activation_patching(loaded.model, clean_t, corrupt_t, last_token_metric(answer_id, wrong_id))
    measured = metric_label(loaded, answer_id, wrong_id, "log p")
    positions = _position_labels(loaded, clean_ids, corrupt_ids)
    sections = [
        f"Metric at the last position: {measured}; clean {result.clean:.4f}, corrupted {result.corrupt:.4f}. "
        "Score: (patched - corrupted) / (clean - corrupted); 1 restores the clean prediction."
    ]
    for name in POSITION_POINTS:
        rows = [[f"block {layer}", *(_cell(v) for v in row.tolist())] for layer, row in enumerate(result.by_position[name])]
        sections.append(f"## {POINT_TITLES[name]} ({name})\n\n" + markdown_table(["", *positions], rows))
    if result.by_head is not None:
        rows = [[f"block {layer}", *(_cell(v) for v in row.tolist())] for layer, row in enumerate(result.by_head)]
        heads = [f"head {h}" for h in range(result.by_head.shape[1])]
        sections.append(f"## {POINT_TITLES['hook_z']} (hook_z)\n\n" + markdown_table(["", *heads], rows))
    text = "\n\n".join(sections)
    title = f"{Path(run).name}: activation patching, {measured}"
    paths = write_readout(
        loaded,
        out,
        "patch",
        lambda path: plot_patching(result, positions, path, title),
        f"# Activation patching of {Path(run).name}\n\n{text}\n",
        [
            "slmlab",
            "viz",
            "patch",
            str(run),
            "--clean",
            clean,
            "--corrupt",
            corrupt,
            *option_args(answer=answer, wrong=wrong, checkpoint=checkpoint),
        ],
    )
    return text, paths
