"""Remote-code export: any slmlab architecture as a `SlmlabForCausalLM` (modeling_slmlab.py).

`hf_config_values(cfg)` is what config.json carries (the run's model section, its plugins' sources);
`build_from_hf_config` is what the exported model runs when Hugging Face loads it: the plugins
imported from their embedded, SHA-256-checked sources, then slmlab's `build_model`;
`masked_logits` is its forward over a padded batch.
"""

from __future__ import annotations

import torch

from .. import __version__, plugins
from ..config import RunConfig, config_from_dict
from ..data.corpora.fetch import cache_dir
from ..model import build_model
from ..model.generation import padded_caches


def hf_config_values(cfg: RunConfig) -> dict:
    """The slmlab part of an exported config.json."""
    return {"slmlab_model": cfg.model.to_dict(), "slmlab_plugins": plugins.embed(cfg.plugins), "slmlab_version": __version__}


def build_from_hf_config(config):
    """An slmlab model (untrained weights) from a `SlmlabConfig`."""
    specs = plugins.activate_embedded(config.slmlab_plugins, cache_dir() / "exported_plugins")
    model = dict(config.slmlab_model)
    cfg = config_from_dict({"plugins": specs, "model": model, "data": {"seq_len": model.get("block_size", 1)}})
    return build_model(cfg.model)


def masked_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """input_ids (B, T) and a Hugging Face attention_mask (B, T) of 1 (token) and 0 (padding) ->
    logits (B, T, V). Each row's tokens must be one run: padding before them (left, as
    `generate()` pads) and/or after them (right, as scoring pads). Right padding changes nothing
    before it in a causal model, so the logits at the tokens are each row's alone. Left padding
    goes through slmlab's padded decoding (positions count from each row's first token, attention
    never reads the padding), exact only where the model `decodes_padded()`; elsewhere it is
    refused. The logits at padding positions mean nothing."""
    if attention_mask is None:
        return model(input_ids)[0]
    mask = torch.as_tensor(attention_mask, device=input_ids.device)
    if mask.shape != input_ids.shape or bool(((mask != 0) & (mask != 1)).any()):
        raise ValueError(
            f"attention_mask must be 0/1 of the input_ids' shape {tuple(input_ids.shape)}, got {mask.dtype} of shape "
            f"{tuple(mask.shape)}"
        )
    real = mask.bool()
    counts = real.sum(1)
    first = real.int().argmax(1)  # each row's first token (0 where the row has none)
    if bool((counts == 0).any()) or bool(
        (real.cumsum(1)[torch.arange(len(real), device=real.device), first + counts - 1] != counts).any()
    ):
        raise ValueError("each row of attention_mask must hold its tokens as one run, padding only before and/or after them")
    if not bool(first.any()):  # no left padding
        return model(input_ids)[0]
    if not model.decodes_padded():
        raise ValueError(
            f"this model ({model.describe()}) does not decode left-padded batches exactly: give prompts of equal length, "
            "or pad on the right to score them"
        )
    return model(input_ids, caches=padded_caches(model, first, input_ids.shape[1]))[0]
