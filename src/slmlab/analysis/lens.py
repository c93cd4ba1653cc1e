"""The logit lens: what a decoder would predict if it stopped after each block.

For a decoder whose blocks l = 0..L-1 read the residual stream x_l (B, T, d_model) at their
hook_resid_pre and whose last block writes x_L (the input of the final norm):

    lens_l = log_softmax(head(norm_f(x_l)))      (B, T, V),  l = 0..L

lens_0 reads the embeddings alone, lens_L is the model's own prediction (its log-softmaxed
logits, exactly). Where the probability of the token that comes next rises from layer to layer
shows where a prediction forms (nostalgebraist's logit lens; TransformerLens's accumulated_resid
with the final norm applied).

`slmlab viz lens RUN --prompt TEXT` writes RUN/viz/lens.png (log p of each next token, layer by
position, each cell labelled with that layer's most likely token) and lens.md (the same as a
table).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError
from ..model.modes import eval_mode
from ..plotting import pyplot, save_png
from ..tables import markdown_table
from .readout import load_for_readout, option_args, residual_blocks, write_readout


@torch.no_grad()
def logit_lens(model: nn.Module, idx: torch.Tensor) -> torch.Tensor:
    """idx (B, T) -> (L + 1, B, T, V) log-probabilities: lens_l for l = 0..L (module docstring)."""
    streams: list[torch.Tensor] = []
    handles = [
        block.hook_resid_pre.register_forward_hook(lambda module, args, out: streams.append(out))
        for block in residual_blocks(model, "the logit lens")
    ]
    handles.append(model.norm_f.register_forward_pre_hook(lambda module, args: streams.append(args[0])))
    with eval_mode(model):
        try:
            model(idx)
        finally:  # before the lens calls norm_f itself
            for handle in handles:
                handle.remove()
        return torch.stack([model.head(model.norm_f(x)).float().log_softmax(-1) for x in streams])


def _layer_names(n_stages: int) -> list[str]:
    return ["embeddings"] + [f"after block {layer}" for layer in range(n_stages - 1)]


def plot_lens(next_logp: torch.Tensor, top: list[list[str]], tokens: list[str], path: Path, title: str) -> Path:
    """Heatmap of log p(next token) (stages, T - 1), each cell labelled with its top-1 token."""
    plt = pyplot()

    stages, positions = next_logp.shape
    fig, ax = plt.subplots(figsize=(2.5 + 0.6 * positions, 1.2 + 0.45 * stages))
    image = ax.imshow(next_logp.cpu().numpy(), cmap="viridis", aspect="auto", vmax=0.0)
    for s in range(stages):
        for t in range(positions):
            bright = image.norm(float(next_logp[s, t])) > 0.6  # viridis turns yellow: dark text reads there
            ax.text(t, s, top[s][t][:6], ha="center", va="center", fontsize=7, color="black" if bright else "white")
    ax.set_xticks(range(positions), [f"{a} → {b}" for a, b in zip(tokens[:-1], tokens[1:])], rotation=90, fontsize=7)
    ax.set_yticks(range(stages), _layer_names(stages), fontsize=8)
    fig.colorbar(image, ax=ax, label="log p(next token)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    save_png(fig, path, dpi=120)
    return path


def lens_report(
    run: str | Path, prompt: str, out: str | Path | None = None, device: str = "auto", checkpoint: str | None = None
) -> tuple[str, list[Path]]:
    """The logit lens of a run on one prompt -> (the Markdown table, files written: lens.png,
    lens.md); `checkpoint`: read that checkpoint's weights instead of the final ones."""
    loaded = load_for_readout(run, device, checkpoint)
    ids = loaded.ids(prompt)
    if len(ids) < 2:
        raise ConfigError("the prompt has fewer than 2 tokens: the lens scores each token's prediction of the next one")
    lens = logit_lens(loaded.model, torch.tensor([ids], device=loaded.device))[:, 0].cpu()  # (stages, T, V)
    next_ids = torch.tensor(ids[1:])
    next_logp = lens[:, :-1].gather(-1, next_ids.expand(lens.shape[0], -1)[..., None])[..., 0]  # (stages, T - 1)
    tokens_only = lens[:, :-1, : loaded.tokenizer.vocab_size]  # a padded embedding's extra ids are no text
    top = [loaded.labels(row.tolist()) for row in tokens_only.argmax(-1)]
    tokens = loaded.labels(ids)
    rows = [
        [name, *(f"{label} ({math.exp(lp):.2f})" for label, lp in zip(top[s], next_logp[s].tolist()))]
        for s, name in enumerate(_layer_names(lens.shape[0]))
    ]
    table = markdown_table(["stage", *(f"{a} → {b}" for a, b in zip(tokens[:-1], tokens[1:]))], rows)
    title = f"{Path(run).name}: logit lens (cells: the most likely next token; colour: log p of the true next token)"
    heading = "Each cell: the stage's most likely next token (p of the true next token, shown in the column header)."
    paths = write_readout(
        loaded,
        out,
        "lens",
        lambda path: plot_lens(next_logp, top, tokens, path, title),
        f"# Logit lens of {Path(run).name}\n\n{heading}\n\n{table}\n",
        ["slmlab", "viz", "lens", str(run), "--prompt", prompt, *option_args(checkpoint=checkpoint)],
    )
    return table, paths
