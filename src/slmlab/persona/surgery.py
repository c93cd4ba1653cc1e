"""Model surgery: SMT's Self Area inserted into a pretrained Hugging Face causal LM, without
editing its code (`slmlab surgery --hf-model PATH --persona-data SOURCE`).

A forward pre-hook on every decoder layer adds the Self Area's Δ_l = α_l · W_l g to the layer's
input hidden states (the residual stream), the same module the native decoder uses
(variants/self_area.py). With α_l = 0 at insertion the model's outputs are unchanged. Only the
Self Area trains; the base weights are frozen. The module is saved alone (self_area.safetensors
plus self_area.json describing its shape and the base it was trained on) and loads back onto the
same base. Decoder layers are found at the usual places (GPT-2 `transformer.h`, Llama/Mistral/
Phi-3/Qwen `model.layers`, GPT-NeoX `gpt_neox.layers`, ...), else as the shallowest ModuleList of
as many modules as the config has layers (MPT's `transformer.blocks`), never a layer's own list of
experts.
PATH is a local directory (or a .gguf file, read by transformers through the `gguf` package);
nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_model
from torch import nn

from ..config import ConfigError, DataConfig, TrainConfig, build_dataclass
from ..data.corpora import DocumentSelection
from ..data.sampling import WindowSampler, validation_batches
from ..data.split import splits_by_position, validation_ids
from ..data.tokens import TokenSplit
from ..experiments.stats import perplexity_change
from ..files import atomic_write_text, is_run_folder, json_text, read_json, require_fields
from ..phase_progress import PhaseProgress, tracked
from ..runs.checkpoints import CheckpointError, save_weights, verify_file
from ..runs.metrics import MetricsLog
from ..tables import command_line
from ..training.optim import lr_at
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


def check_surgery_folder(folder: Path, overwrite: bool) -> None:
    """The folder surgery writes (self_area.*, metrics.jsonl, summary.json) is new, empty, or an
    earlier surgery's (replaced only with `overwrite`); a run's or any other folder is refused,
    since its metrics.jsonl and summary.json would be replaced."""
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--out {folder} is a file, not a folder; choose another --out")
    if not folder.is_dir() or not any(folder.iterdir()):
        return
    if not (folder / "self_area.json").is_file():
        raise ConfigError(
            f"{folder} holds files that are not a Self Area (its metrics.jsonl, summary.json would be replaced); choose another --out"
        )
    if not overwrite:
        raise ConfigError(f"{folder} already holds a Self Area; choose another --out, or --overwrite to replace it")


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


# ---- loading a base model and persona data ---------------------------------------------------


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


def persona_tokens(data: DataConfig, tokenizer, val_fraction: float = 0.1) -> tuple[TokenSplit, TokenSplit]:
    """The persona corpus through the model's own tokenizer: documents joined by EOS, split into
    train and validation by document (the foundation's hash-ranked split)."""
    docs = list(DocumentSelection(data))
    if not docs:
        raise ConfigError(f"the persona data ({data.source}, genres {data.genres or 'all'}) has no documents")
    ids = [d.id for d in docs]
    val_ids = set() if splits_by_position(ids) else validation_ids(ids, val_fraction)
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    splits = {"train": [], "val": []}
    for doc in docs:
        ids = hf_encode(tokenizer, doc.text, f"persona document '{doc.id}'")["input_ids"]
        splits["val" if doc.id in val_ids else "train"] += [*ids, eos]
    if not splits["val"]:  # one document (or one id): its tail is the validation text
        cut = int(len(splits["train"]) * (1 - val_fraction))
        splits = {"train": splits["train"][:cut], "val": splits["train"][cut:]}
    return tuple(TokenSplit(np.asarray(ids, dtype=np.int64), {"*": (0, len(ids))}) for ids in splits.values())


# ---- training -------------------------------------------------------------------------------


def lm_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logits = model(input_ids=x).logits
    return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())


@torch.no_grad()
def persona_loss(
    model: nn.Module, split: TokenSplit, seq_len: int, batch: int, n_batches: int, device
) -> tuple[float, list[float]]:
    """(the mean cross-entropy over the split's fixed validation sample, each batch's): on windows
    that share no token, in batches of one size (so the mean of the batches' is every token's), so
    that two models' losses compare batch by batch with an interval (experiments/stats.py's
    perplexity_change), as `ablate` compares its interventions."""
    sample = validation_batches(split, seq_len, batch, n_batches, progress="scoring the persona text", disjoint=True)
    batches = [lm_loss(model, x.to(device), y.to(device)).item() for x, y in sample]
    return float(np.mean(batches)), batches


def train_self_area(
    model: nn.Module,
    area: SelfArea,
    train: TokenSplit,
    steps: int,
    lr: float,
    batch: int,
    seq_len: int,
    seed: int = 0,
    metrics: MetricsLog | None = None,
    log_every: int = 10,
) -> None:
    """AdamW on the Self Area's parameters only (warmup over 5% of the steps, then cosine to 10%),
    the steps' progress shown (PhaseProgress)."""
    device = next(area.parameters()).device
    sampler = WindowSampler(train, seq_len, batch, seed)
    optimizer = torch.optim.AdamW(area.parameters(), lr=lr, weight_decay=0.0)
    schedule = TrainConfig(steps=steps, lr=lr, warmup_steps=max(1, steps // 20), min_lr_ratio=0.1)
    model.train()
    for step in tracked(range(steps), "training the Self Area", steps, "steps"):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, schedule)
        x, y = sampler.next_batch()
        loss = lm_loss(model, x.to(device), y.to(device))
        loss.backward()
        nn.utils.clip_grad_norm_(area.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if metrics is not None and ((step + 1) % log_every == 0 or step + 1 == steps):
            metrics.append(
                {"step": step + 1, "loss": loss.item(), "lr": lr_at(step, schedule), "alpha_mean": area.alpha.abs().mean().item()}
            )
    model.eval()


# ---- the verb's two uses: train a Self Area into a base model, generate with one ---------------


def surgery(
    hf_model: str | Path,
    persona_data: str,
    out: str | Path | None = None,
    steps: int = 200,
    lr: float = 1e-2,
    batch_size: int = 4,
    seq_len: int = 128,
    self_dim: int = 128,
    token_dependent: bool = False,
    seed: int = 0,
    overwrite: bool = False,
    device: str = "auto",
    reading: dict | None = None,
) -> tuple[nn.Module, object, dict, Path]:
    """Insert a Self Area into the base model, train it alone on persona text, save it (with
    metrics.jsonl and summary.json) -> (model, tokenizer, summary, folder). `reading`: DataConfig
    fields on how the persona files are read (text_field, doc_separator)."""
    from ..training.runtime import resolve_device
    from .stage2 import source_data_config

    resolved = resolve_device(device)
    folder = Path(out or f"runs/surgery_{Path(hf_model).stem}")
    check_surgery_folder(folder, overwrite)  # before the base model loads (seconds to minutes)
    persona = source_data_config(persona_data, **(reading or {}))
    model, tokenizer = load_hf_model(hf_model, resolved)
    context = model_context(model)
    if context and seq_len > context:
        raise ConfigError(
            f"--seq-len {seq_len} exceeds the {context}-token context of {hf_model}; give --seq-len {context} or less"
        )
    train_split, val_split = persona_tokens(persona, tokenizer)
    area = insert_self_area(model, SelfAreaConfig(enabled=True, self_dim=self_dim, token_dependent=token_dependent))
    before, before_batches = persona_loss(model, val_split, seq_len, batch_size, 8, resolved)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.jsonl").unlink(missing_ok=True)
    train_self_area(model, area, train_split, steps, lr, batch_size, seq_len, seed, MetricsLog(folder / "metrics.jsonl"))
    after, after_batches = persona_loss(model, val_split, seq_len, batch_size, 8, resolved)
    save_self_area(area, folder, str(hf_model))
    summary = {
        "base_model": str(hf_model),
        "persona_data": persona_data,
        "steps": steps,
        "self_area_params": sum(p.numel() for p in area.parameters()),
        "base_params": sum(p.numel() for n, p in model.named_parameters() if not n.startswith("self_area.")),
        "persona_val_loss_before": before,
        "persona_val_loss_after": after,
        "persona_ppl_change": perplexity_change(after - before, after_batches, before_batches),  # paired by batch
        "persona_val_batches": len(after_batches),
    }
    atomic_write_text(folder / "summary.json", json_text(summary, indent=2) + "\n")
    return model, tokenizer, summary, folder


def load_with_self_area(hf_model: str | Path, directory: str | Path, device: str = "auto"):
    """(model, tokenizer) of a base model with the Self Area saved in `directory` inserted."""
    from ..training.runtime import resolve_device

    model, tokenizer = load_hf_model(hf_model, resolve_device(device))
    load_self_area(model, directory)
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
