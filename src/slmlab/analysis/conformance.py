"""`slmlab check CONFIG`: the conformance suite for any model a config builds (built-in or plugin).

The model is rebuilt at tiny shapes (tiny_models.py: each shape setting shrunk only where the config
still checks) on the CPU, or on the device `--device` names (its kernels checked in float64 against
the same weights and inputs), then each property is measured and judged:

| property | holds when |
| --- | --- |
| causality (train, eval) | changing the tokens at positions >= t never changes the logits at positions < t |
| batch independence | a row's logits do not depend on the other rows of its batch |
| KV cache | decoding in chunks (1 at a time, 3 at a time, half then singles) through the caches equals the full forward, past any local window |
| left-padded batch | where the model decodes left-padded batches (`decodes_padded()`), greedy decoding of prompts of three lengths in one batch gives each row its prompt's logits alone, step by step |
| compiled decoding | greedy decoding through torch.compile's capture (Dynamo, graphs run as captured) equals eager decoding, and a longer generation captures no new graph |
| gradients | every trainable parameter gets a finite, non-zero gradient (frozen = requires_grad False) |
| determinism | the same seed builds the same weights and one training step gives bit-identical loss and weights |
| save/load | weights written to safetensors and read into a fresh model give identical logits |
| loss at init | the initial loss is within 10% of ln V (the model starts uncommitted) |
| overfit one batch | within 100 AdamW steps on one batch, its loss falls below a third of the initial |
| naive reference | for every registered registry.NAIVE_REFERENCES entry that applies to a layer, and every NAIVE_MODEL_REFERENCES entry that applies to the model: the output and gradients equal it in float64 |

The properties that compare two computations (causality, batches, caches, padding, compiling,
save/load, references) run on the model moved off its init (Probe.build's `moved`), so a path a
zero-initialised gate shuts at init is probed too; the others run on the model as built.

Each property yields pass / fail / n/a with its measured figure; a property whose code raises is a
failure whose reason is the exception, in one line. The decoding properties live in
decoding_checks.py, the shared Probe and Result in probe.py.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_model

from ..config import ModelConfig, RunConfig, offset_seed
from ..model.auxiliary import objective
from ..model.protocol import attention_modules
from ..phase_progress import tracked
from ..registry import NAIVE_MODEL_REFERENCES, NAIVE_REFERENCES
from ..runs.checkpoints import load_weights
from ..tables import counted, markdown_table
from . import references  # noqa: F401  (registers the built-in attention's and decoder's naive references)
from .decoding_checks import check_compiled_decoding, check_kv_cache, check_padded_decoding
from .probe import Probe, Result, agrees
from .tiny_models import tiny_config


def check_causality(probe: Probe, mode: str) -> Result:
    model = probe.build(torch.float64, moved=True)
    model.train(mode == "train")
    worst = 0.0
    with torch.no_grad():
        full = probe.logits(model, probe.tokens, seed=1)
        for t in sorted({1, probe.T // 2, probe.T - 1}):
            changed = probe.tokens.clone()
            changed[:, t:] = (changed[:, t:] + 1 + torch.arange(probe.T - t, device=probe.device)) % probe.cfg.vocab_size
            after = probe.logits(model, changed, seed=1)[:, :t]
            worst = max(worst, (full[:, :t] - after).abs().max().item())
    passed = agrees(worst, full)
    reason = (
        ""
        if passed
        else f"changing tokens at positions >= t changed logits before t by {worst:.3g} ({mode} mode): the future leaks"
    )
    return Result(passed, f"max abs Δ logits<t = {worst:.2g}", reason)


def check_batch_independence(probe: Probe) -> Result:
    model = probe.build(torch.float64, moved=True).eval()
    with torch.no_grad():
        together = probe.logits(model, probe.tokens)
        alone = torch.cat([probe.logits(model, probe.tokens[i : i + 1]) for i in range(len(probe.tokens))])
    worst = (together - alone).abs().max().item()
    passed = agrees(worst, alone)
    reason = "" if passed else f"a row's logits change with the other rows of its batch (by {worst:.3g})"
    return Result(passed, f"max abs Δ = {worst:.2g}", reason)


def _gradients(model, probe: Probe) -> dict[str, torch.Tensor | None]:
    model.zero_grad(set_to_none=True)
    objective(model, model(probe.tokens, probe.targets)[1]).backward()
    return {n: p.grad for n, p in model.named_parameters() if p.requires_grad}


def check_gradients(probe: Probe) -> Result:
    """Non-zero at init, or after one AdamW step: a zero-initialised gate (α = 0) blocks the
    gradient of what it gates at step 0 only, and opens on the first step."""
    model = probe.build().train()
    grads = _gradients(model, probe)
    late = [n for n, g in grads.items() if g is None or not g.abs().sum().item() > 0]
    if late:
        torch.optim.AdamW(model.parameters(), lr=1e-3).step()
        grads.update({n: g for n, g in _gradients(model, probe).items() if n in late})
    missing = [n for n, g in grads.items() if g is None or not g.abs().sum().item() > 0]
    broken = [n for n, g in grads.items() if g is not None and not torch.isfinite(g).all()]
    frozen = sum(not p.requires_grad for p in model.parameters())
    figure = f"{len(grads) - len(missing) - len(broken)}/{len(grads)} tensors"
    figure += (f", {len(late) - len(missing)} after one step" if len(late) > len(missing) else "") + (
        f", {frozen} frozen" if frozen else ""
    )
    if broken:
        return Result(False, figure, f"non-finite gradient in {', '.join(broken[:3])}")
    if missing:
        return Result(False, figure, f"no gradient reaches {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
    return Result(True, figure)


def _one_step(probe: Probe) -> tuple[float, torch.nn.Module]:
    model = probe.build().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    torch.manual_seed(offset_seed(probe.seed, 1))
    _, loss = model(probe.tokens, probe.targets)
    objective(model, loss).backward()
    optimizer.step()
    return loss.item(), model


def check_determinism(probe: Probe) -> Result:
    (loss_a, a), (loss_b, b) = _one_step(probe), _one_step(probe)
    same = loss_a == loss_b and all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    return Result(
        same,
        "bit-identical" if same else f"losses {loss_a!r} vs {loss_b!r}",
        "" if same else "the same seed gave different weights or loss after one step",
    )


def check_save_load(probe: Probe) -> Result:
    model = probe.build(moved=True).eval()  # away from the init, so a parameter left out shows
    fresh = Probe(probe.cfg, offset_seed(probe.seed, 7), probe.device).build().eval()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "weights.safetensors"
        save_model(model, str(path))
        load_weights(fresh, path)
    with torch.no_grad():
        worst = (probe.logits(model, probe.tokens) - probe.logits(fresh, probe.tokens)).abs().max().item()
    passed = worst == 0.0
    return Result(
        passed,
        f"max abs Δ = {worst:.2g}",
        "" if passed else f"reloaded weights give different logits (by {worst:.3g}): state not in the state dict?",
    )


def check_initial_loss(probe: Probe) -> Result:
    model = probe.build().eval()
    with torch.no_grad():
        loss = model(probe.tokens, probe.targets)[1].item()
    expected = math.log(probe.cfg.vocab_size)
    passed = abs(loss - expected) <= 0.1 * expected
    figure = f"{loss:.3f} vs ln V = {expected:.3f}"
    return Result(
        passed,
        figure,
        "" if passed else f"initial loss {loss:.3f} is far from ln V = {expected:.3f}: check the init or the head's scale",
    )


def check_overfit(probe: Probe, steps: int = 100) -> Result:
    """Up to `steps` AdamW steps on one batch, stopping once its loss is below a third of the first."""
    model = probe.build().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    batch, targets = probe.tokens[:1], probe.tokens[:1].roll(-1, dims=1)
    first = last = math.nan
    for taken in range(1, steps + 1):
        _, loss = model(batch, targets)
        optimizer.zero_grad(set_to_none=True)
        objective(model, loss).backward()
        optimizer.step()
        last = loss.item()
        first = last if taken == 1 else first
        if last < first / 3:
            break
    passed = math.isfinite(last) and last < first / 3
    return Result(
        passed,
        f"loss {first:.2f} -> {last:.2f} in {counted(taken, 'steps')}",
        "" if passed else f"{steps} steps on one batch only took the loss from {first:.2f} to {last:.2f}: the model cannot learn",
    )


def _differences(
    probe: Probe, fast: torch.Tensor, naive: torch.Tensor, inputs: list[torch.Tensor], generator
) -> tuple[float, float, bool]:
    """(max abs Δ of the outputs, max abs Δ of the gradients of a random weighting of them with
    respect to `inputs`, whether both agree in float64 (`agrees`, each gradient at its own scale));
    inf and disagreement where one side has a gradient and the other none."""
    weights = probe.randn(*fast.shape, generator=generator)
    grads_fast = torch.autograd.grad((fast * weights).sum(), inputs, allow_unused=True)
    grads_naive = torch.autograd.grad((naive * weights).sum(), inputs, allow_unused=True)
    worst_out = (fast - naive).abs().max().item()
    worst_grad, agreed = 0.0, agrees(worst_out, naive)
    for a, b in zip(grads_fast, grads_naive):
        if (a is None) != (b is None):
            worst_grad, agreed = math.inf, False
        elif a is not None:
            difference = (a - b).abs().max().item()
            worst_grad, agreed = max(worst_grad, difference), agreed and agrees(difference, b)
    return worst_out, worst_grad, agreed


def check_naive_references(probe: Probe) -> Result:
    """Each attention layer's output and gradients against every registered naive reference that
    applies to it, then the whole model's logits and the gradients of every parameter against
    every whole-model reference that applies, in eval mode: dropout is no part of the definitions."""
    model = probe.build(torch.float64, moved=True).eval()
    positions = torch.arange(probe.T, device=probe.device)
    generator = torch.Generator().manual_seed(probe.seed)
    compared: dict[str, tuple[float, float, bool]] = {}  # label -> (max abs Δ out, Δ grad, agreed)
    for name, attention in attention_modules(model):
        h = probe.randn(2, probe.T, probe.cfg.d_model, generator=generator, requires_grad=True)
        for label, reference in NAIVE_REFERENCES.items():
            naive = reference(attention, h, positions)
            if naive is not None:
                inputs = [h, *(p for p in attention.parameters() if p.requires_grad)]
                compared[f"{label}@{name}"] = _differences(probe, attention(h, positions), naive, inputs, generator)
    layers = len(compared)
    for label, reference in NAIVE_MODEL_REFERENCES.items():
        naive = reference(model, probe.tokens)
        if naive is not None:
            inputs = [p for p in model.parameters() if p.requires_grad]
            compared[f"{label} (whole model)"] = _differences(probe, model(probe.tokens)[0], naive, inputs, generator)
    if not compared:
        return Result(None, "no registered reference applies")
    worst_out, worst_grad = (max(d[i] for d in compared.values()) for i in range(2))
    failing = [label for label, (_, _, agreed) in compared.items() if not agreed]
    more = f" and {len(failing) - 3} more" if len(failing) > 3 else ""
    scope = counted(layers, "layers") + (" + whole model" if len(compared) > layers else "")
    figure = f"{scope}: max abs Δ out = {worst_out:.2g}, Δ grad = {worst_grad:.2g}"
    return Result(
        not failing,
        figure,
        f"the fast path differs from its naive reference ({', '.join(failing[:3])}{more}): output by {worst_out:.3g}, "
        f"gradients by {worst_grad:.3g}"
        if failing
        else "",
    )


@dataclass
class Outcome:
    name: str
    result: Result


PROPERTIES: tuple[tuple[str, Callable[[Probe], Result]], ...] = (
    ("causality (train)", lambda probe: check_causality(probe, "train")),
    ("causality (eval)", lambda probe: check_causality(probe, "eval")),
    ("batch independence", check_batch_independence),
    ("KV cache = recomputation", check_kv_cache),
    ("left-padded batch = alone", check_padded_decoding),
    ("compiled decoding = eager", check_compiled_decoding),
    ("gradients", check_gradients),
    ("determinism", check_determinism),
    ("save/load round trip", check_save_load),
    ("loss at init ≈ ln V", check_initial_loss),
    ("overfit one batch", check_overfit),
    ("naive reference (float64)", check_naive_references),
)


def run_checks(cfg: RunConfig, seed: int = 0, device: torch.device | str = "cpu") -> tuple[ModelConfig, list[Outcome]]:
    """Every property, on `cfg`'s model at tiny shapes on `device` -> (the tiny ModelConfig, outcomes)."""
    model_cfg = tiny_config(cfg)
    probe = Probe(model_cfg, seed, device)
    probe.build()  # a config no model can be built from is its one ConfigError, not a failure per property
    outcomes = []
    for name, check in tracked(PROPERTIES, "checking", len(PROPERTIES), "properties"):
        try:
            result = check(probe)
        except Exception as err:  # a property whose code raises is a failure, in one line
            first = str(err).splitlines()[0] if str(err) else ""
            result = Result(False, "raised", f"{type(err).__name__}: {first}")
        outcomes.append(Outcome(name, result))
    return model_cfg, outcomes


VERDICT = {True: "pass", False: "FAIL", None: "n/a"}


def outcome_table(outcomes: list[Outcome]) -> str:
    """One model: property, result, measured figure."""
    return markdown_table(
        ["property", "result", "measured"], [[o.name, VERDICT[o.result.passed], o.result.figure] for o in outcomes]
    )


def comparison_table(outcomes: dict[str, list[Outcome]]) -> str:
    """Several models (a sweep's variants): one result column each."""
    labels = list(outcomes)
    rows = [[name] + [VERDICT[outcomes[label][i].result.passed] for label in labels] for i, (name, _) in enumerate(PROPERTIES)]
    return markdown_table(["property", *labels], rows)
