"""The Python entry points `import slmlab` offers (slmlab/__init__.py): each resolves to the
object it names, lazily (importing slmlab alone imports no torch), and together they train,
read back, sample from and look inside a run."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest
import torch

import slmlab


def test_every_entry_point_is_the_object_it_names_and_none_needs_torch_to_import_slmlab():
    for name, module in slmlab.API.items():
        assert getattr(slmlab, name) is getattr(importlib.import_module(module), name)
    assert set(slmlab.API) <= set(dir(slmlab)) and set(slmlab.__all__) == {"__version__", *slmlab.API}
    with pytest.raises(AttributeError, match="module 'slmlab' has no attribute 'trian'"):
        slmlab.trian  # noqa: B018
    code = "import sys, slmlab; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_the_docstrings_session_trains_reads_back_samples_and_caches(micro_toml):
    cfg = slmlab.load_config(micro_toml, {"train.steps": 4, "name": "api"})
    result = slmlab.train(cfg, progress=False)
    cfg, model, tokenizer = slmlab.load_run(result.run_dir)
    ids = model.generate(torch.tensor([tokenizer.encode("ab")]), 5, temperature=0)
    assert ids.shape == (1, 7)
    logits, cache = slmlab.run_with_cache(model, ids, names=lambda name: name.endswith("hook_z"))
    assert logits.shape == (1, 7, cfg.model.vocab_size) and len(cache) == cfg.model.n_layer
    fresh = slmlab.build_model(cfg.model)
    assert sum(p.numel() for p in fresh.parameters()) == sum(p.numel() for p in model.parameters())
