"""Time to the first token: the prompt's forward as `generate` runs it, with the LM head over the
prompt's last token only (`logits_to_keep=1`, slmlab since 2026-12-05) against the head over
every prompt position (the full (B, T, V) logits, as before), for a GPT-2 vocabulary, where the
head is large (smat_64m.toml's model: 24 x 384, vocab 50,304, 62M parameters).

A T-token prompt at batch 1 and 8, the two ways taking turns for --rounds rounds after a warm-up
each, medians.

    python -m benchmarks.first_token [--device cuda] [--tokens 256] [--rounds 4]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics

import torch

from slmlab.config import load_config
from slmlab.model import build_model
from slmlab.tables import markdown_table
from slmlab.training.runtime import median_seconds

WAYS = {"head over the last token (slmlab)": {"logits_to_keep": 1}, "head over every position": {}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    device = torch.device(args.device)
    cfg = dataclasses.replace(load_config("configs/smat_64m.toml").model, vocab_size=50304)
    torch.manual_seed(0)
    model = build_model(cfg).to(device).eval()
    print(f"device: {device}, {torch.get_num_threads()} threads, torch {torch.__version__}; {model.describe()}")
    rows = []
    for batch in (1, 8):
        prompt = torch.randint(0, cfg.vocab_size, (batch, args.tokens), device=device)
        times: dict[str, list[float]] = {way: [] for way in WAYS}
        with torch.no_grad():
            for options in WAYS.values():
                model(prompt, caches=model.make_caches(), **options)  # warm-up
            for _ in range(args.rounds):
                for way, options in WAYS.items():
                    step = lambda: model(prompt, caches=model.make_caches(), **options)  # noqa: B023 (called at once)
                    times[way].append(median_seconds(step, 1, device))
        last = statistics.median(times[next(iter(WAYS))])
        for way in WAYS:
            median = statistics.median(times[way])
            rows.append((batch, args.tokens, way, f"{1000 * median:.0f}", f"{median / last:.2f}x"))
    print(markdown_table(("batch", "prompt tokens", "prompt's forward", "ms (median)", "vs slmlab"), rows))


if __name__ == "__main__":
    main()
