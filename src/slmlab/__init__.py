"""slmlab: a laboratory for inventing, training and dissecting small language model architectures.

The Python entry points, importable from here (each loads its module, and torch, on first use):

    cfg = slmlab.load_config("configs/quickstart.toml", {"train.steps": 200})
    result = slmlab.train(cfg)                               # -> TrainResult (run_dir, val_loss, ...)
    cfg, model, tokenizer = slmlab.load_run(result.run_dir)  # a finished run, in eval mode
    ids = model.generate(torch.tensor([tokenizer.encode("ROMEO:")]), 100)
    logits, cache = slmlab.run_with_cache(model, ids)        # every hook point's activation
    logits = slmlab.run_with_hooks(model, ids, [("blocks.0.hook_attn_out", lambda out, name: out * 0)])
    model = slmlab.build_model(slmlab.ModelConfig(n_layer=2, d_model=64, n_head=4, vocab_size=256))
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

API = {
    "load_config": "slmlab.config",
    "config_from_dict": "slmlab.config",
    "RunConfig": "slmlab.config",
    "ModelConfig": "slmlab.config",
    "ConfigError": "slmlab.config",
    "train": "slmlab.training",
    "Trainer": "slmlab.training",
    "TrainingCallback": "slmlab.training",
    "load_run": "slmlab.runs",
    "RunDir": "slmlab.runs",
    "build_model": "slmlab.model",
    "run_with_cache": "slmlab.model",
    "run_with_hooks": "slmlab.model",
}
__all__ = ["__version__", *API]


def __getattr__(name: str):
    """slmlab.<name> for the entry points in API, imported when first asked for (`import slmlab`
    alone imports no torch: the CLI answers --help without it)."""
    if name not in API:
        raise AttributeError(f"module 'slmlab' has no attribute {name!r}")
    value = getattr(importlib.import_module(API[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(API))
