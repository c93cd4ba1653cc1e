"""Direct logit attribution: how much each component of a decoder writes the answer's logit itself.

The residual stream the final norm reads at the last position is a sum of what each component
wrote into it (module docstring of model/decoder.py):

    x_L = e + p + Σ_l (a_l + m_l) + r    e, p: token and position embeddings (p = 0 for RoPE),
                                         a_l / m_l: block l's attention / MLP output,
                                         r: residual conditioning (the Self Area), zero without it
    a_l = Σ_h W_O[:, h] z_h + b_O        head h's output z_h (hook_z) through its slice of W_O

With the final norm's scale frozen at its value for x_L (TransformerLens's convention), the norm
is affine: LayerNorm(x) = g ⊙ (x − mean x) / σ + b, RMSNorm(x) = g ⊙ x / rms. So with u = W_U[answer]
(minus W_U[wrong] for a logit difference) each component c contributes g ⊙ center(c) / σ · u, and
the contributions plus the norm's bias term b · u sum to the logit (difference) exactly.

`slmlab viz attribute RUN --prompt TEXT` writes RUN/viz/attribution.png (a bar per component, and
the heads as a block × head heatmap) and attribution.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError
from ..model.modes import eval_mode
from ..plotting import pyplot, save_png
from ..tables import markdown_table
from .readout import answer_tokens, block_attention, load_for_readout, metric_label, option_args, residual_blocks, write_readout


@dataclass
class Attribution:
    """Contributions to the metric (module docstring) at the last position: `components` in the
    order they write (token embeddings, position embeddings where the model adds
    any, then each block's attention and MLP, then conditioning when any)
    with the norm's bias term last; `heads` (L, H) splits each attention output (None where the
    attention has no per-head output projection), `heads_bias` (L,) its W_O bias; `metric`: the
    model's own logit (difference)."""

    components: dict[str, float]
    heads: torch.Tensor | None
    heads_bias: torch.Tensor | None
    metric: float


def _frozen_norm(norm: nn.Module, x: torch.Tensor) -> tuple:
    """(c -> the norm's linear part at x's scale, the norm's constant part) for a LayerNorm or
    RMSNorm reading x (d,)."""
    weight = norm.weight.double() if getattr(norm, "weight", None) is not None else torch.ones_like(x)
    if isinstance(norm, nn.LayerNorm):
        sigma = torch.sqrt(x.var(unbiased=False) + norm.eps)
        bias = norm.bias.double() if norm.bias is not None else torch.zeros_like(x)
        return (lambda c: weight * (c - c.mean(-1, keepdim=True)) / sigma), bias
    if isinstance(norm, nn.RMSNorm):
        eps = norm.eps if norm.eps is not None else torch.finfo(torch.float64).eps
        rms = torch.sqrt((x * x).mean() + eps)
        return (lambda c: weight * c / rms), torch.zeros_like(x)
    raise ConfigError(f"direct logit attribution reads a LayerNorm or RMSNorm before the head, not {type(norm).__name__}")


@torch.no_grad()
def logit_attribution(model: nn.Module, idx: torch.Tensor, answer: int, wrong: int | None = None) -> Attribution:
    """idx (1, T) -> each component's direct contribution to logit(answer) (− logit(wrong)) at the
    last position (module docstring)."""
    blocks = residual_blocks(model, "direct logit attribution")
    if not isinstance(model.head, nn.Linear):
        raise ConfigError(f"direct logit attribution needs a linear LM head; model.head is {type(model.head).__name__}")
    if idx.dim() != 2 or idx.shape[0] != 1:
        raise ConfigError(f"give one prompt as a (1, T) tensor of ids, got shape {tuple(idx.shape)}")
    points = {"token embeddings": model.hook_embed, "position embeddings": model.hook_pos_embed}
    for layer, block in enumerate(blocks):
        points[f"block {layer} attention"] = block.hook_attn_out
        points[f"block {layer} MLP"] = block.hook_mlp_out
    attentions = [block_attention(block) for block in blocks]
    per_head = all(attention is not None for attention in attentions)
    seen: dict[str, torch.Tensor] = {}
    handles = [
        p.register_forward_hook(lambda m, a, out, name=name: seen.__setitem__(name, out[0, -1])) for name, p in points.items()
    ]
    if per_head:
        handles += [
            attention.hook_z.register_forward_hook(lambda m, a, out, layer=layer: seen.__setitem__(f"z{layer}", out[0, :, -1]))
            for layer, attention in enumerate(attentions)
        ]
    handles.append(model.norm_f.register_forward_pre_hook(lambda m, args: seen.__setitem__("x_L", args[0][0, -1])))
    with eval_mode(model):
        try:
            logits, _ = model(idx)
        finally:
            for handle in handles:
                handle.remove()
    last = logits[0, -1].double()
    direction = model.head.weight[answer].double() - (model.head.weight[wrong].double() if wrong is not None else 0.0)
    head_bias = model.head.bias.double() if model.head.bias is not None else torch.zeros_like(last)
    head_bias = head_bias[answer] - (head_bias[wrong] if wrong is not None else 0.0)
    x_final = seen["x_L"].double()
    linear, constant = _frozen_norm(model.norm_f, x_final)
    writes = {name: seen[name].double() for name in points if name in seen}  # RoPE adds no position embedding
    conditioning = x_final - sum(writes.values())
    if conditioning.abs().max() > 1e-6 * x_final.abs().max():
        writes["conditioning"] = conditioning
    components = {name: float(linear(c) @ direction) for name, c in writes.items()}
    components["biases (final norm, LM head)"] = float(constant @ direction + head_bias)
    heads_out = heads_bias = None
    if per_head:
        rows, biases = [], []
        for layer, attention in enumerate(attentions):
            proj = attention.proj
            z = seen[f"z{layer}"].double()  # (H, D)
            w = proj.weight.double().view(proj.weight.shape[0], z.shape[0], z.shape[1])  # (d, H, D)
            rows.append(torch.stack([linear(w[:, h] @ z[h]) @ direction for h in range(z.shape[0])]))
            biases.append(
                linear(proj.bias.double()) @ direction
                if proj.bias is not None
                else torch.zeros((), dtype=torch.float64, device=direction.device)
            )
        heads_out, heads_bias = torch.stack(rows), torch.stack(biases)
    metric = float(last[answer] - (last[wrong] if wrong is not None else 0.0))
    return Attribution(components, heads_out, heads_bias, metric)


def plot_attribution(result: Attribution, path: Path, title: str) -> Path:
    """A bar per component (red raises the metric, blue lowers it) and, where the attention splits
    by head, a block × head heatmap of the heads' shares."""
    plt = pyplot()

    names, values = list(result.components), list(result.components.values())
    panels = 2 if result.heads is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 1.2 + 0.3 * len(names)), squeeze=False)
    bars = axes[0, 0]
    bars.barh(range(len(names)), values, color=["#b2182b" if v > 0 else "#2166ac" for v in values])
    bars.set_yticks(range(len(names)), names, fontsize=8)
    bars.invert_yaxis()
    bars.axvline(0.0, color="black", linewidth=0.8)
    bars.set_xlabel("direct contribution")
    bars.set_title(f"sum {sum(values):.3f} = the model's {result.metric:.3f}", fontsize=9)
    if result.heads is not None:
        heads = axes[0, 1]
        limit = float(result.heads.abs().max()) or 1.0
        image = heads.imshow(result.heads.cpu().numpy(), cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
        heads.set_xticks(range(result.heads.shape[1]), [f"head {h}" for h in range(result.heads.shape[1])], fontsize=8)
        heads.set_yticks(range(result.heads.shape[0]), [f"block {b}" for b in range(result.heads.shape[0])], fontsize=8)
        heads.set_title("attention heads (hook_z through W_O)", fontsize=9)
        fig.colorbar(image, ax=heads, label="direct contribution")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_png(fig, path, dpi=120)


def attribution_report(
    run: str | Path,
    prompt: str,
    answer: str | None = None,
    wrong: str | None = None,
    out: str | Path | None = None,
    device: str = "auto",
    checkpoint: str | None = None,
) -> tuple[str, list[Path]]:
    """Direct logit attribution of a run's prediction after one prompt -> (the Markdown report,
    files written: attribution.png, attribution.md); `checkpoint`: read that checkpoint's weights
    instead of the final ones."""
    loaded = load_for_readout(run, device, checkpoint)
    ids = loaded.ids(prompt)
    if not ids:
        raise ConfigError("the prompt is empty (or holds no text this tokenizer knows): give some text to continue")
    idx = torch.tensor([ids], device=loaded.device)
    answer_id, wrong_id = answer_tokens(loaded, idx, answer, wrong)
    result = logit_attribution(loaded.model, idx, answer_id, wrong_id)
    measured = metric_label(loaded, answer_id, wrong_id, "logit")
    rows = [[name, f"{value:+.4f}"] for name, value in result.components.items()]
    rows.append(["sum", f"{sum(result.components.values()):+.4f}"])
    sections = [
        f"Direct contributions to {measured} after the prompt's last token (the final norm's scale frozen at its "
        f"value there); the model's own: {result.metric:+.4f}.",
        markdown_table(["component", "contribution"], rows),
    ]
    if result.heads is not None:
        H = result.heads.shape[1]
        head_rows = [
            [f"block {layer}", *(f"{v:+.4f}" for v in row.tolist()), f"{float(result.heads_bias[layer]):+.4f}"]
            for layer, row in enumerate(result.heads)
        ]
        sections.append("## Attention heads\n\n" + markdown_table(["", *(f"head {h}" for h in range(H)), "W_O bias"], head_rows))
    text = "\n\n".join(sections)
    title = f"{Path(run).name}: direct logit attribution of {measured}"
    paths = write_readout(
        loaded,
        out,
        "attribution",
        lambda path: plot_attribution(result, path, title),
        f"# Direct logit attribution of {Path(run).name}\n\n{text}\n",
        [
            "slmlab",
            "viz",
            "attribute",
            str(run),
            "--prompt",
            prompt,
            *option_args(answer=answer, wrong=wrong, checkpoint=checkpoint),
        ],
    )
    return text, paths
