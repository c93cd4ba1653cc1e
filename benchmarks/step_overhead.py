"""Training-step overhead: slmlab's real training loop against a minimal nanoGPT-style loop.

The reference is written here, as nanoGPT writes it: plain modules (no hook points, no extension
dispatch), full logits and `F.cross_entropy`, `torch.optim.AdamW` configured as nanoGPT configures it
on CPU (decay / no-decay groups, betas (0.9, 0.95), not fused), the learning rate set every step,
gradients clipped to 1.0 and one `.item()` per step. Both train the same char-level Shakespeare
tokens (nanoGPT's shakespeare_char setting) at the same shapes, with dropout 0.

slmlab is measured through `slmlab.training.train` itself: its tokens/s per logging window of 10
steps (evaluation excluded, as the trainer records them in metrics.jsonl); the reference is timed
over windows of 10 steps the same way. Each measurement runs in a fresh process, and the two take
turns for several rounds; the table gives the median over rounds of each window median, and the
ratio. `--compile` adds slmlab with `train.compile = true` (compilation timed apart by the trainer).

    python -m benchmarks.step_overhead                  # needs the corpus: slmlab data download shakespeare
    python -m benchmarks.step_overhead --rounds 3 --steps 60 --compile
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.timing import in_fresh_process
from slmlab.config import config_from_dict
from slmlab.tables import markdown_table

SHAPES = {
    "4 x 128, T=64, batch 12 (nanoGPT's CPU recipe)": {"n_layer": 4, "n_head": 4, "d_model": 128, "seq": 64, "batch": 12},
    "6 x 384, T=256, batch 8": {"n_layer": 6, "n_head": 6, "d_model": 384, "seq": 256, "batch": 8},
}
WINDOW = 10  # steps per timed window (slmlab's log_every)


def run_config(shape: dict, steps: int, out: str, compile: bool = False):
    return config_from_dict(
        {
            "name": "bench",
            "out_dir": out,
            "model": {k: shape[k] for k in ("n_layer", "n_head", "d_model")} | {"block_size": shape["seq"], "dropout": 0.0},
            "data": {"source": "shakespeare", "tokenizer": "char", "seq_len": shape["seq"]},
            "train": {
                "steps": steps,
                "batch_size": shape["batch"],
                "lr": 1e-3,
                "warmup_steps": 10,
                "weight_decay": 0.1,
                "grad_clip": 1.0,
                "eval_every": steps,
                "eval_batches": 1,
                "log_every": WINDOW,
                "checkpoint_every": 0,
                "sample_tokens": 0,
                "compile": compile,
            },
        }
    )


def slmlab_rate(shape: dict, steps: int, compile: bool = False) -> float:
    """Median tokens/s over slmlab's own logging windows (the first, warm-up window left out)."""
    from slmlab.training import train

    with tempfile.TemporaryDirectory() as out:
        result = train(run_config(shape, steps, out, compile), progress=False)
        records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(r["tokens_per_s"] for r in records[1:] if "tokens_per_s" in r)


# ---- the reference: nanoGPT's model and loop, minimal -----------------------------------------
class Attention(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads, self.c_attn, self.c_proj = heads, nn.Linear(d, 3 * d), nn.Linear(d, d)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in self.c_attn(x).split(C, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


class Block(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.ln_1, self.attn, self.ln_2 = nn.LayerNorm(d), Attention(d, heads), nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(approximate="tanh"), nn.Linear(4 * d, d))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class NanoGPT(nn.Module):
    def __init__(self, vocab: int, seq: int, n_layer: int, d_model: int, n_head: int):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d_model), nn.Embedding(seq, d_model)
        self.h = nn.ModuleList(Block(d_model, n_head) for _ in range(n_layer))
        self.ln_f, self.lm_head = nn.LayerNorm(d_model), nn.Linear(d_model, vocab, bias=False)
        self.wte.weight = self.lm_head.weight

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def reference_rate(shape: dict, steps: int) -> float:
    """Median tokens/s over windows of WINDOW steps of the nanoGPT-style loop on the same tokens."""
    from slmlab.data.tokens import prepare_tokens

    cfg = run_config(shape, steps, tempfile.gettempdir())
    tokenizer, data = prepare_tokens(cfg.data, None)
    tokens = np.asarray(data.train.tokens)
    torch.manual_seed(cfg.train.seed)
    seq, batch = shape["seq"], shape["batch"]
    model = NanoGPT(tokenizer.vocab_size, seq, shape["n_layer"], shape["d_model"], shape["n_head"])
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.95))

    def get_lr(step: int) -> float:  # nanoGPT's warmup + cosine
        if step < 10:
            return 1e-3 * (step + 1) / 10
        return 1e-4 + 0.5 * (1 + math.cos(math.pi * (step - 10) / (steps - 10))) * (1e-3 - 1e-4)

    def get_batch():
        starts = torch.randint(len(tokens) - seq - 1, (batch,))
        x = torch.stack([torch.from_numpy(tokens[i : i + seq].astype(np.int64)) for i in starts])
        y = torch.stack([torch.from_numpy(tokens[i + 1 : i + 1 + seq].astype(np.int64)) for i in starts])
        return x, y

    rates = []
    for window in range(steps // WINDOW):
        start = time.perf_counter()
        for step in range(window * WINDOW, (window + 1) * WINDOW):
            for group in optimizer.param_groups:
                group["lr"] = get_lr(step)
            x, y = get_batch()
            loss = model(x, y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            loss.item()
        rates.append(WINDOW * batch * seq / (time.perf_counter() - start))
    return statistics.median(rates[1:])


def measure(shape: dict, rounds: int, steps: int, compile: bool = False) -> dict[str, list[float]]:
    """{loop: its tokens/s in each round}: the reference and slmlab (and slmlab compiled) taking
    turns, each measurement in a fresh process."""
    measured: dict[str, list[float]] = {"nanoGPT-style reference": [], "slmlab": []}
    if compile:
        measured["slmlab, compiled"] = []
    for _ in range(rounds):
        measured["nanoGPT-style reference"].append(in_fresh_process(reference_rate, shape, steps))
        measured["slmlab"].append(in_fresh_process(slmlab_rate, shape, steps))
        if compile:
            measured["slmlab, compiled"].append(in_fresh_process(slmlab_rate, shape, steps, True))
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="turns each side takes (fresh processes)")
    parser.add_argument("--steps", type=int, default=60, help="training steps per measurement (windows of 10)")
    parser.add_argument("--compile", action="store_true", help="also measure slmlab with train.compile = true")
    args = parser.parse_args()
    print(f"CPU, {torch.get_num_threads()} threads, torch {torch.__version__}; {args.rounds} rounds x {args.steps} steps, fp32")
    rows = []
    for name, shape in SHAPES.items():
        measured = measure(shape, args.rounds, args.steps, args.compile)
        base = statistics.median(measured["nanoGPT-style reference"])
        for label, rates in measured.items():
            rate = statistics.median(rates)
            spread = f"{min(rates):,.0f}–{max(rates):,.0f}"
            rows.append((name, label, f"{rate:,.0f}", spread, f"{rate / base:.2f}x"))
    print(markdown_table(("shape", "loop", "tokens/s (median)", "range over rounds", "vs reference"), rows))


if __name__ == "__main__":
    main()
