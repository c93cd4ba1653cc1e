"""Model surgery: SMT's Self Area inserted into a pretrained Hugging Face causal LM, without
editing its code (`slmlab surgery --hf-model PATH --persona-data SOURCE`).

A forward pre-hook on every decoder layer adds the Self Area's Δ_l = α_l · W_l g to the layer's
input hidden states (the residual stream), the same module the native decoder uses
(variants/self_area.py). With α_l = 0 at insertion the model's outputs are unchanged. Only the
Self Area trains (persona/surgery_training.py); the base weights are frozen. The module is saved
alone (self_area.safetensors plus self_area.json describing its shape and the base it was trained
on) and loads back onto the same base. Decoder layers are found at the usual places (GPT-2
`transformer.h`, Llama/Mistral/Phi-3/Qwen `model.layers`, GPT-NeoX `gpt_neox.layers`, ...), else
as the shallowest ModuleList of as many modules as the config has layers (MPT's
`transformer.blocks`), never a layer's own list of experts.
PATH is a local directory (or a .gguf file, read by transformers through the `gguf` package);
nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model
from torch import nn

from ..config import ConfigError, build_dataclass
from ..files import atomic_write_text, is_run_folder, json_text, read_json, require_fields
from ..phase_progress import PhaseProgress
from ..runs.checkpoints import CheckpointError, save_weights, verify_file
from ..tables import command_line
from ..variants.self_area import SelfArea, SelfAreaConfig
from .hf_text import hf_encode

log = logging.getLogger("slmlab")
LAYER_PATHS = ("model.layers", "transformer.h", "gpt_neox.layers", "model.decoder.layers", "model.language_model.layers")


def text_config(model: nn.Module):
    """The Hugging Face config of `model`'s language model: `config` itself, or its text part for a
    model that reads images too (None for a model without a config)."""
    config = getattr(model, "config", None)
    get = getattr(config, "get_text_config", None)
    return get() if callable(get) else config


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The model's decoder layers: the nn.ModuleList at a usual path (LAYER_PATHS), else the
    shallowest one of `config.num_hidden_layers` modules (the longest where the config does not
    say), so that a list inside a layer (a mixture's experts) is never taken for the layers."""
    for path in LAYER_PATHS:
        try:
            layers = model.get_submodule(path)
        except AttributeError:
            continue
        if isinstance(layers, nn.ModuleList):
            return layers
    lists = [
        (name.count("."), module) for name, module in model.named_modules() if isinstance(module, nn.ModuleList) and len(module)
    ]
    if not lists:
        raise ConfigError(f"no decoder layers found in {type(model).__name__}: it has no nn.ModuleList")
    count = getattr(text_config(model), "num_hidden_layers", None)
    named = [(depth, module) for depth, module in lists if len(module) == count]
    return min(named, key=lambda item: item[0])[1] if named else max(lists, key=lambda item: (len(item[1]), -item[0]))[1]


def _add_guidance(area: SelfArea, layer: int, module: nn.Module, args: tuple, kwargs: dict):
    """Forward pre-hook: hidden_states (first positional or keyword argument) += Δ_layer."""
    if args:
        delta = area.delta(layer, args[0])
        return None if delta is None else ((args[0] + delta, *args[1:]), kwargs)
    hidden = kwargs["hidden_states"]
    delta = area.delta(layer, hidden)
    return None if delta is None else (args, {**kwargs, "hidden_states": hidden + delta})


def insert_self_area(model: nn.Module, cfg: SelfAreaConfig) -> SelfArea:
    """Attach a Self Area to `model` (as `model.self_area`), hook it into every decoder layer and
    freeze every base parameter; returns the module."""
    if cfg.target != "residual":
        raise ConfigError(
            "model surgery adds the guidance to each layer's input (target = residual); sublayer_inputs needs the native decoder"
        )
    if hasattr(model, "self_area"):
        raise ConfigError("this model already has a Self Area")
    layers = decoder_layers(model)
    reference = next(model.parameters())
    area = SelfArea(cfg, text_config(model).hidden_size, len(layers)).to(reference.device)
    for param in model.parameters():
        param.requires_grad_(False)
    model.self_area = area
    for index, layer in enumerate(layers):
        layer.register_forward_pre_hook(functools.partial(_add_guidance, area, index), with_kwargs=True)
    return area


def save_self_area(area: SelfArea, directory: str | Path, base: str) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().contiguous().cpu() for k, v in area.state_dict().items()}
    sha256 = save_weights(weights, directory / "self_area.safetensors")
    meta = {
        "self_area": dataclasses.asdict(area.cfg),
        "d_model": area.proj.shape[1],
        "layers": area.slots,
        "base_model": base,
        "sha256": sha256,  # of self_area.safetensors: safetensors loads a flipped byte in a tensor without a word
    }
    atomic_write_text(directory / "self_area.json", json_text(meta, indent=2) + "\n")
    return directory


def load_self_area(model: nn.Module, directory: str | Path) -> SelfArea:
    """Insert the Self Area saved in `directory` into `model` (the base it was trained on)."""
    directory = Path(directory)
    where = directory / "self_area.json"
    fix = "give the directory `slmlab surgery` wrote, or run surgery again"
    meta = read_json(where, "Self Area description", CheckpointError, fix)
    fields = {"self_area": dict, "d_model": int, "layers": int, "base_model": str}
    require_fields(meta, fields, where, "Self Area description", CheckpointError, fix)
    try:
        cfg = build_dataclass(SelfAreaConfig, meta["self_area"], "self_area")
    except ConfigError as err:
        raise CheckpointError(f"Self Area description {where} is damaged ({err}); {fix}") from None
    if meta["d_model"] != (width := text_config(model).hidden_size):
        raise CheckpointError(
            f"{directory} was trained on a base with hidden size {meta['d_model']} ({meta['base_model']}), this model has {width}"
        )
    area = insert_self_area(model, cfg)
    if area.slots != meta["layers"]:
        raise CheckpointError(f"{directory} was trained on a base with {meta['layers']} layers, this model has {area.slots}")
    recorded = meta.get("sha256")  # absent from the descriptions of older slmlab
    if recorded is not None and not isinstance(recorded, str):
        raise CheckpointError(f"Self Area description {where} is damaged (its sha256 is not text); {fix}")
    verify_file(directory / "self_area.safetensors", recorded)
    try:
        load_model(area, str(directory / "self_area.safetensors"), device=str(next(area.parameters()).device))
    except (SafetensorError, OSError, RuntimeError) as err:
        raise CheckpointError(
            f"{directory / 'self_area.safetensors'} is missing, corrupt or of another shape ({str(err).splitlines()[0]})"
        ) from None
    return area


# ---- loading a base model -------------------------------------------------------------------


def load_hf_model(path: str | Path, device: torch.device):
    """(model, tokenizer) from a local directory or .gguf file; nothing is downloaded."""
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        raise ConfigError("model surgery needs transformers: pip install 'slmlab[hf]'") from None
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"--hf-model {path} does not exist (a local model directory or .gguf file)")
    if path.is_dir() and not (path / "config.json").is_file():
        raise ConfigError(f"--hf-model {path} has no config.json: give a transformers model folder (or a .gguf file)")
    if path.is_dir() and is_run_folder(path):
        raise ConfigError(
            f"--hf-model {path} is a slmlab run, not a transformers model: export it first "
            f"({command_line('slmlab', 'export', path, '--to', 'hf')} OUT), or train a Self Area into it with slmlab persona"
        )
    kwargs = {"local_files_only": True}
    if path.suffix.lower() == ".gguf":
        path, kwargs["gguf_file"] = path.parent, path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, **kwargs)
    except Exception as err:  # OSError, ValueError, pickle's UnpicklingError (a refused or damaged .bin), EOFError, ...
        first = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise ConfigError(f"transformers cannot load {path}: {type(err).__name__}: {first[:200]}") from None
    return model.to(device).eval(), tokenizer


def model_context(model: nn.Module) -> int | None:
    """A Hugging Face model's context length in tokens (None where its config does not say)."""
    config = text_config(model)
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)


def load_with_self_area(hf_model: str | Path, directory: str | Path, device: str = "auto"):
    """(model, tokenizer) of a base model with the Self Area saved in `directory` inserted."""
    from ..training.runtime import resolve_device

    model, tokenizer = load_hf_model(hf_model, resolve_device(device))
    load_self_area(model, directory)
    summary = Path(directory) / "summary.json"
    try:  # the training's record, for a word where it was cut short: the Self Area loads without it
        record = read_json(summary, "surgery summary", CheckpointError, "") if summary.is_file() else {}
    except CheckpointError:
        record = {}
    if record.get("stopped_by"):
        log.warning(
            "%s: this Self Area trained %s of %s steps (stopped by %s)",
            directory, record.get("steps"), record.get("steps_asked"), record["stopped_by"],
        )  # fmt: skip
    return model, tokenizer


def greedy_continuation(model: nn.Module, tokenizer, prompt: str, max_new_tokens: int) -> str:
    """A greedy continuation through Hugging Face's `model.generate`, decoded with the prompt."""
    return prompt + hf_continuations(model, tokenizer, [prompt], max_new_tokens, sample=False)[0]


@torch.no_grad()
def hf_continuations(
    model: nn.Module,
    tokenizer,
    prompts: list[str],
    max_new_tokens: int,
    seed: int = 0,
    sample: bool = True,
    batch_size: int = 16,
) -> list[str]:
    """One continuation per prompt (sampled at temperature 0.8, top-k 50, or greedy), through
    Hugging Face's own batched generation: prompts left-padded, `batch_size` at a time, with the
    attention mask (the model places each row's positions from it); a tokenizer with neither a pad
    nor an end-of-text token continues one prompt at a time, unpadded. One seeded generator state
    for the whole list, so the result is reproducible for a given batch size. A prompt that leaves
    no room for `max_new_tokens` in the model's context is a ConfigError. Several prompts show
    their progress (PhaseProgress)."""
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        batch_size = 1
    context = model_context(model)
    padding_side, own_pad = tokenizer.padding_side, tokenizer.pad_token_id
    tokenizer.padding_side, tokenizer.pad_token_id = "left", pad
    torch.manual_seed(seed)
    options = {"do_sample": True, "temperature": 0.8, "top_k": 50} if sample else {"do_sample": False}
    texts = []
    try:
        with PhaseProgress("generating" if len(prompts) > 1 else "", len(prompts), "prompts") as shown:
            for start in range(0, len(prompts), batch_size):
                chunk = prompts[start : start + batch_size]
                batch = hf_encode(tokenizer, chunk, "the prompt", return_tensors="pt", padding=pad is not None).to(device)
                width = batch["input_ids"].shape[1]
                if context and width + max_new_tokens > context:
                    raise ConfigError(
                        f"a prompt of {width} tokens and {max_new_tokens} new ones exceed the model's {context}-token context; "
                        f"give at most {max(context - width, 0)} new tokens, or a shorter prompt"
                    )
                out = model.generate(**batch, max_new_tokens=max_new_tokens, pad_token_id=pad, **options)
                texts += tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
                shown.update(len(out))
    finally:  # the caller's tokenizer as it was
        tokenizer.padding_side, tokenizer.pad_token_id = padding_side, own_pad
    return texts
