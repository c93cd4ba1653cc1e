"""The `slmlab check` properties of decoding (conformance.py has the whole suite): the KV cache
equals recomputation, a left-padded batch decodes each row as its prompt alone, and
torch.compile's capture decodes as eager in a bounded number of graphs. All in float64."""

from __future__ import annotations

import torch

from ..model.generation import left_padded
from ..tables import counted
from .probe import Probe, Result, agrees


def check_kv_cache(probe: Probe) -> Result:
    model = probe.build(torch.float64, moved=True).eval()
    T = probe.T
    schedules = {
        "1 at a time": [1] * T,
        "3 at a time": [3] * (T // 3) + ([T % 3] if T % 3 else []),
        "half, then 1s": [T // 2] + [1] * (T - T // 2),
    }
    worst = 0.0
    with torch.no_grad():
        full = probe.logits(model, probe.tokens)
        for sizes in schedules.values():
            caches, start, pieces = model.make_caches(), 0, []
            for size in sizes:
                pieces.append(model(probe.tokens[:, start : start + size], caches=caches)[0])
                start += size
            worst = max(worst, (torch.cat(pieces, dim=1) - full).abs().max().item())
    passed = agrees(worst, full)
    reason = "" if passed else f"decoding through the KV cache differs from the full forward by {worst:.3g} (float64)"
    return Result(passed, f"{len(schedules)} schedules over {T} tokens, max abs Δ = {worst:.2g}", reason)


def _greedy_logits(model, idx: torch.Tensor, n: int, padding: torch.Tensor | None = None) -> torch.Tensor:
    """(B, n, V): the logits of each of n greedy decoding steps from idx (B, T)."""
    steps = []

    def greedy(logits: torch.Tensor) -> torch.Tensor:
        steps.append(logits)
        return logits.argmax(-1, keepdim=True)

    model.generate(idx, n, sample=greedy, padding=padding)
    return torch.stack(steps, dim=1)


def check_padded_decoding(probe: Probe) -> Result:
    """Where the model says it decodes left-padded batches exactly (`decodes_padded()`: prompts,
    persona-eval and lm-eval then batch prompts of different lengths), greedy decoding of prompts
    of three lengths as one left-padded batch gives each row the logits, step by step, of its
    prompt decoded alone (float64)."""
    model = probe.build(torch.float64, moved=True).eval()
    if not model.decodes_padded():
        return Result(None, "decodes batches of equal-length prompts only")
    lengths = sorted({1, max(1, probe.T // 4), max(1, probe.T // 2)})
    n = max(1, probe.T - lengths[-1] - 2)
    prompts = [probe.tokens[i % len(probe.tokens), :length] for i, length in enumerate(lengths)]
    idx, padding = left_padded([p.tolist() for p in prompts], probe.device)
    with torch.no_grad():
        together = _greedy_logits(model, idx, n, padding)
        alone = [_greedy_logits(model, p[None], n)[0] for p in prompts]
        worst = max((together[i] - logits).abs().max().item() for i, logits in enumerate(alone))
    passed = agrees(worst, *alone)
    reason = (
        ""
        if passed
        else f"decoded in one left-padded batch, a prompt's logits differ from its own decoded alone by {worst:.3g} "
        "(something declared padding_safe reads the padding, or takes only (T,) positions)"
    )
    return Result(passed, f"prompts of {', '.join(map(str, lengths))} tokens, {n} steps, max abs Δ = {worst:.2g}", reason)


class CountingBackend:
    """A torch.compile backend that runs each captured graph as it is and counts them (`graphs`)
    and their nodes (`nodes`: how much was traced)."""

    def __init__(self):
        self.graphs = self.nodes = 0

    def __call__(self, graph_module, example_inputs):
        self.graphs += 1
        self.nodes += len(graph_module.graph.nodes)
        return graph_module.forward


def check_compiled_decoding(probe: Probe) -> Result:
    """What `generate(..., compile=True)` needs of the model's code: Dynamo captures it without
    changing a token, in a bounded number of graphs: a generation over about half the context,
    then one twice as long from a prompt one token longer, ending just inside it (a window
    rebuild is left to the tests: capturing is slow on a large graph, Tape's). The first is long
    enough for a windowed cache to fill and start dropping positions (block-local's, at the tiny
    local_block), a regime with graphs of its own. The prompt is read eagerly (`generate`), so
    only what a step keeps of its length could make graphs per prompt. The captured graphs run
    as captured: inductor's kernels are torch's to test."""
    model = probe.build(torch.float64, moved=True).eval()
    prompt = probe.tokens[:1, : max(1, probe.T // 8)]
    n = (probe.T - prompt.shape[1]) // 2
    backend = CountingBackend()
    torch._dynamo.reset()
    # above the steps taken, so that a model that recompiles at every step shows it instead of
    # falling back to eager at Dynamo's default limit (8) and looking bounded
    with torch._dynamo.config.patch(recompile_limit=64):
        try:
            same = torch.equal(
                model.generate(prompt, n, temperature=0, compile=backend), model.generate(prompt, n, temperature=0)
            )
            graphs = backend.graphs
            per_step = graphs > n // 2  # a graph every other step already: unbounded, no need to go on
            if not per_step:
                other = probe.tokens[:1, : prompt.shape[1] + 1]
                longer = model.generate(other, 2 * n - 1, temperature=0, compile=backend)
                same = same and torch.equal(longer, model.generate(other, 2 * n - 1, temperature=0))
        finally:
            torch._dynamo.reset()
    reasons = [] if same else ["compiled greedy decoding differs from eager decoding"]
    if per_step:
        bounded, figure = False, f"{n} tokens, {counted(graphs, 'graphs')}"
        reasons.append(f"{n} tokens captured {graphs} graphs: it recompiles as it decodes")
    else:
        bounded = backend.graphs == graphs
        figure = f"{2 * n - 1} tokens, {counted(graphs, 'graphs')}" + ("" if bounded else f", then {backend.graphs}")
        if not backend.graphs:  # Dynamo fell back to Python for the whole step: nothing compiles, nothing breaks
            figure += " (nothing captured: --compile decodes it eagerly)"
        if not bounded:
            reasons.append(
                f"a longer generation from another prompt captured {backend.graphs - graphs} new graph(s): "
                "it recompiles as it decodes"
            )
    return Result(same and bounded, figure, "; ".join(reasons))
