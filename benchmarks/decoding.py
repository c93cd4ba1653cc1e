"""Decoding speed: tokens/s of `model.generate` with the KV cache, without it, compiled, at batch 1
and 8, as a ratio to the same model's full-sequence forward throughput measured in the same run, for
the two decoder sizes of issue 17, a block-local decoder and a TapeTransformer.

    forward      one no-grad forward pass over T = 512 tokens at batch 1: the ceiling a decoder that
                 had no per-token cost would approach
    cached       `generate` with the KV cache: one token per step through every layer
    recompute    `generate(use_cache=False)`: the whole context again at every step
    8 prompts    prompts of 8 different lengths: one `generate` each (what batching by length
                 amounts to), or one left-padded batch (`generate_many`, each continuation equal to
                 its prompt's alone)
    compiled     cached, `generate(..., compile=True)`: the model through torch.compile with
                 automatic dynamic shapes (compilation, two graphs per batch size, timed apart)

Each model is fresh (random weights: speed does not depend on them), block_size 1024 so that the
512 new tokens never rebuild the cache, a 16-token prompt, sampling at temperature 1. Times are
medians over repeats, with the spread; each model runs in its own fresh process.

    python -m benchmarks.decoding [--new-tokens 512] [--repeats 3] [--compile]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from benchmarks.timing import in_fresh_process
from slmlab.config import ModelConfig
from slmlab.model import build_model
from slmlab.tables import human, markdown_table
from slmlab.training.runtime import sync

MODELS = {
    "quickstart size (4 x 192, char vocab 76)": {"n_layer": 4, "n_head": 4, "d_model": 192, "d_ff": 768, "vocab_size": 76},
    "~10M (6 x 384, vocab 8k)": {"n_layer": 6, "n_head": 6, "d_model": 384, "vocab_size": 8192},
    "block-local, quickstart size (B = 64, RoPE)": {
        **{"n_layer": 4, "n_head": 4, "d_model": 192, "d_ff": 768, "vocab_size": 76},
        **{"attention": "block_local", "local_block": 64, "pos": "rope"},
    },
    "TapeTransformer, tape_small's shape": {
        **{"arch": "tape", "n_head": 4, "d_model": 64, "vocab_size": 65, "pos": "sinusoidal", "head": "student_t"},
        "tape": {"n_critics": 2, "coda_layers": 2, "critic_layers": 2, "rnn_dim": 64},
    },
}


def timed(fn, repeats: int, device: torch.device) -> list[float]:
    """Seconds of `repeats` calls of fn after one warm-up, the device synchronised around each."""
    fn()  # warm-up
    seconds = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def measure(shape: dict, new_tokens: int, repeats: int, compile: bool, device: str = "cpu") -> dict:
    """{setting: (tokens/s median, min, max)} for one model on `device`, its parameter count and
    (compiling) the seconds compilation took."""
    device = torch.device(device)
    torch.manual_seed(0)
    model = build_model(ModelConfig(block_size=1024, **shape)).to(device).eval()
    prompt = torch.randint(0, shape["vocab_size"], (1, 16), device=device)
    results = {}

    def rate(tokens: int, seconds: list[float]) -> tuple[float, float, float]:
        return tokens / statistics.median(seconds), tokens / max(seconds), tokens / min(seconds)

    with torch.no_grad():
        full = torch.randint(0, shape["vocab_size"], (1, 512), device=device)
        results["forward (T=512, batch 1)"] = rate(512, timed(lambda: model(full), repeats, device))

    def generate(batch: int, use_cache: bool = True, n: int = new_tokens, compile: bool = False):
        generator = torch.Generator(device).manual_seed(0)
        return lambda: model.generate(prompt.expand(batch, -1), n, generator=generator, use_cache=use_cache, compile=compile)

    results["cached, batch 1"] = rate(new_tokens, timed(generate(1), repeats, device))
    results["cached, batch 8"] = rate(8 * new_tokens, timed(generate(8), repeats, device))
    results["recompute, batch 1"] = rate(new_tokens // 4, timed(generate(1, False, new_tokens // 4), repeats, device))
    prompts = [torch.randint(0, shape["vocab_size"], (length,)).tolist() for length in range(4, 36, 4)]  # 8 lengths
    n = new_tokens // 4
    one_by_one = lambda: [
        model.generate(torch.tensor([p], device=device), n, generator=torch.Generator(device).manual_seed(0)) for p in prompts
    ]
    results["8 prompts of 4-32 tokens, one at a time"] = rate(8 * n, timed(one_by_one, repeats, device))
    together = lambda: model.generate_many(prompts, n, generators=[torch.Generator(device).manual_seed(0) for _ in prompts])
    results["8 prompts of 4-32 tokens, generate_many"] = rate(8 * n, timed(together, repeats, device))
    if compile:
        start = time.perf_counter()
        for batch in (1, 8):
            generate(batch, n=8, compile=True)()
        results["compile seconds"] = time.perf_counter() - start
        results["cached + compiled, batch 1"] = rate(new_tokens, timed(generate(1, compile=True), repeats, device))
        results["cached + compiled, batch 8"] = rate(8 * new_tokens, timed(generate(8, compile=True), repeats, device))
    results["params"] = sum(p.numel() for p in model.parameters())
    return results


def settings(results: dict) -> list[tuple[str, float, float, float]]:
    """measure()'s results as rows (setting, tokens/s median, slowest, fastest), compiled rows
    labelled with the compilation time."""
    rows = []
    for setting, value in results.items():
        if setting in ("params", "compile seconds"):
            continue
        note = f" (+{results['compile seconds']:.0f} s compiling)" if "compiled" in setting else ""
        rows.append((setting + note, *value))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new-tokens", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also time compiled decoding (generate(..., compile=True))")
    args = parser.parse_args()
    print(f"CPU, {torch.get_num_threads()} threads, torch {torch.__version__}; {args.new_tokens} new tokens, fp32")
    rows = []
    for name, shape in MODELS.items():
        results = in_fresh_process(measure, shape, args.new_tokens, args.repeats, args.compile)
        ceiling = results["forward (T=512, batch 1)"][0]
        for setting, median, low, high in settings(results):
            model = f"{name}, {human(results['params'])}"
            rows.append((model, setting, f"{median:,.0f}", f"{low:,.0f}–{high:,.0f}", f"{median / ceiling:.3f}"))
    print(markdown_table(("model", "decoding", "tokens/s (median)", "range", "vs forward"), rows))


if __name__ == "__main__":
    main()
