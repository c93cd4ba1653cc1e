"""Scoring and sampling a trained run: validation loss and perplexity on its own corpus or another
one, and seeded continuations of a prompt.

`slmlab eval RUN` scores the run's validation split; `--data.source brown` (any data.* override)
scores another corpus or slice through the run's tokenizer (cross-corpus evaluation works for
tokenizers that can encode any text: byte, BPE, GPT-2). `load_for_inference` is the one way the
inference verbs get a model: the fp32 run, or its int8 model on the CPU.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..config import ConfigError, apply_overrides, config_from_dict
from ..data.tokens import prepare_tokens
from ..runs.metrics import perplexity
from ..runs.run_dir import load_run
from ..training import evaluate
from ..training.runtime import resolve_device


def load_for_inference(run: str | Path, device: str = "auto", int8: bool = False, model_overrides: dict | None = None):
    """(config, model, tokenizer, device): the fp32 run, or with int8 its quantised model on CPU."""
    if int8:
        from ..analysis.quantize import load_int8

        if device not in ("auto", "cpu"):
            raise ConfigError("--int8 models run on the CPU; drop --device or use --device cpu")
        if model_overrides:
            raise ConfigError("--rope-scale does not apply to the saved --int8 model; drop one of the two")
        return (*load_int8(run), torch.device("cpu"))
    resolved = resolve_device(device)
    return (*load_run(run, resolved, model_overrides), resolved)


def evaluation_tokens(cfg, tokenizer, split: str = "val", overrides: dict | None = None):
    """(data config, token split) to evaluate on: the run's data with data.* overrides applied
    (another corpus, a slice), tokenized with the run's tokenizer."""
    overrides = overrides or {}
    bad = [k for k in overrides if not k.startswith("data.")]
    if bad:
        raise ConfigError(f"eval takes only data.* overrides, not {bad}")
    data_cfg = config_from_dict(apply_overrides(cfg.to_dict(), overrides)).data if overrides else cfg.data
    _, data = prepare_tokens(data_cfg, tokenizer)
    return data_cfg, data.val if split == "val" else data.train


def score_run(
    run: str | Path, cfg, model, tokenizer, device, split: str = "val", batches: int = 50, data_overrides: dict | None = None
) -> dict:
    """{"run", "source", "split", "loss", "ppl"} on `batches` fixed windows of the split."""
    data_cfg, tokens = evaluation_tokens(cfg, tokenizer, split, data_overrides)
    loss = evaluate(model, tokens, data_cfg.seq_len, cfg.train.batch_size, batches, device, cfg.train.dtype)
    return {"run": str(run), "source": data_cfg.source, "split": split, "loss": loss, "ppl": perplexity(loss)}


def generate_texts(
    model,
    tokenizer,
    cfg,
    device,
    prompt: str,
    num_samples: int = 1,
    max_new_tokens: int = 200,
    temperature: float = 0.8,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int = 0,
    use_cache: bool = True,
) -> list[str]:
    """`num_samples` continuations of `prompt` (one seeded generator for all), decoded with the prompt."""
    ids = tokenizer.encode(prompt)
    if not ids:
        raise ConfigError("--prompt is empty (or holds no character this tokenizer knows): give some text to continue")
    if len(ids) > cfg.model.block_size:
        raise ConfigError(f"--prompt is {len(ids)} tokens but the model's context is {cfg.model.block_size}; shorten it")
    generator = torch.Generator(device=device).manual_seed(seed)
    outputs = []
    for _ in range(num_samples):
        out = model.generate(
            torch.tensor([ids], device=device),
            max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            generator=generator,
            use_cache=use_cache,
        )
        outputs.append(tokenizer.decode(out[0].tolist()))
    return outputs
