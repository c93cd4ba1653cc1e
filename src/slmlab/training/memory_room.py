"""Refuse, before anything is written, a training run this machine's memory cannot hold.

On Linux, memory is lent before it exists (overcommit): a model whose weights, gradients and
optimizer state outgrow the machine's RAM and swap is built anyway, and the kernel's out-of-memory
killer ends the process part-way, with no message (sometimes another process with it), after
`--overwrite` has cleared the old run. A typo does it: model.block_size = 100000000 with learned
positions is a table of 10^8 x d_model. So the trainer first counts, on a copy of the model built
on the meta device (shapes only: no memory, no arithmetic, no random initial values):

    need = weights and buffers + optimizer state + max(gradients, activations)

with the activations those one micro-batch keeps for backward (`traced_activation_bytes`) and
AdamW's state its two moments (another optimizer's is not counted). This is a lower bound of the
peak: before backward starts the forward's activations are all alive, and at its end the
gradients are; the optimizer's state lives from the first step on. So only a run that cannot fit
is refused. The model is not even built where the least it holds (`accounting.least_size`:
n_layer times one block's parameters and modules) needs more than the machine has: building 10^9
blocks, even on the meta device, would take hours and ~50 KB of memory each. Tracing the
activations takes from 0.1 s to seconds (a TapeTransformer's recurrence), so it runs only where
they might not fit: where GENEROUS times the decoder's own count,
(9 d_model + 2 d_ff) fp32 values per token and layer, would not (SMAT and the TapeTransformer
keep up to ~6 times that). A CUDA or MPS device refuses an allocation past its memory at once,
with an error the CLI words (errors.out_of_memory); macOS swaps rather than kills.
"""

from __future__ import annotations

import contextlib

import torch

from ..config import ConfigError, RunConfig
from ..errors import TRAINING_MEMORY_ADVICE
from ..host_memory import host_memory_bytes
from ..model.accounting import BYTES, least_size, meta_model, traced_activation_bytes
from ..tables import human
from ..torchrun_env import env_int
from .distributed import World
from .optim import select_trainable

OPTIMIZER_STATE_COPIES = {"adamw": 2}  # copies of each trainable parameter the optimizer keeps: exp_avg, exp_avg_sq
GENEROUS = 16  # times the decoder's activations per token and layer: a bound to decide whether to trace


def training_need(cfg: RunConfig, rows: int, shards: int = 1, room: int | None = None, past: int | None = None) -> dict | None:
    """Bytes one training process must hold at its peak, at least (the module's docstring):
    {"weights", "optimizer", "gradients", "modules", "activations" (None: not traced), "need"}, and
    the model's largest tensor ("largest": its name, "largest_size": its elements; None where the
    least the model holds needs more than `past`, by default `room`: then it is not built,
    `_least_need`). `rows`: the process's rows of a micro-batch; `shards`: the processes FSDP
    spreads weights, gradients and optimizer state over (1: each holds them all); `room`: the bytes
    the process may use; activations are traced only where GENEROUS times the decoder's count of
    them would not fit beside the rest (None: always).
    None for a model that cannot be built on the meta device (a plugin that reads values while it
    builds): then nothing is checked."""
    m = cfg.model
    least = _least_need(cfg, shards)
    past = room if past is None else past
    if past is not None and least["need"] > past:  # refused unbuilt: model.n_layer = 10**9 would take hours to build
        return least
    try:
        model = meta_model(m)
    except (NotImplementedError, RuntimeError):
        return None
    select_trainable(model, cfg.train.trainable)
    tensors = dict((*model.named_parameters(), *model.named_buffers()))
    weights = sum(t.numel() * t.element_size() for t in tensors.values())
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    need = {
        "weights": weights // shards,
        "optimizer": OPTIMIZER_STATE_COPIES.get(cfg.train.optimizer, 0) * trainable // shards,
        "gradients": trainable // shards,
        "modules": least["modules"],  # the blocks' Python objects, where there are many (accounting.least_size)
        "activations": None,  # not traced
    }
    fixed = need["weights"] + need["optimizer"] + need["modules"]
    generous = GENEROUS * rows * cfg.data.seq_len * m.n_layer * (9 * m.d_model + 2 * m.ff_dim) * 4
    if room is None or fixed + generous > room:
        with contextlib.suppress(NotImplementedError, RuntimeError):  # a forward that reads values: not counted
            need["activations"] = traced_activation_bytes(model, rows, cfg.data.seq_len, cfg.train.dtype)
    need["need"] = fixed + max(need["gradients"], need["activations"] or 0)
    need["largest"] = max(tensors, key=lambda name: tensors[name].numel())
    need["largest_size"] = tensors[need["largest"]].numel()
    return need


def _least_need(cfg: RunConfig, shards: int) -> dict:
    """`training_need`'s count from the least the model holds (`accounting.least_size`: its
    blocks' parameters and modules), without building it; activations not counted."""
    parameters, modules = least_size(cfg.model)
    weights = parameters * BYTES["fp32"] // shards
    trainable = weights if cfg.train.trainable == "all" else 0
    optimizer = OPTIMIZER_STATE_COPIES.get(cfg.train.optimizer, 0) * trainable
    need = {"weights": weights, "optimizer": optimizer, "gradients": trainable, "modules": modules, "activations": None}
    return {**need, "need": sum(value or 0 for value in need.values()), "largest": None}


def check_training_room(cfg: RunConfig, device: torch.device, world: World) -> None:
    """Refuse (ConfigError, one line) a run whose training processes on this machine (torchrun's
    LOCAL_WORLD_SIZE, each with its rows of the batch) need more memory than it has
    (`training_need` each; FSDP shards the weights over the whole world); on Linux CPU runs only
    (the module's docstring says why)."""
    have = host_memory_bytes() if device.type == "cpu" else None
    if have is None:
        return
    rows = len(range(cfg.train.batch_size)[world.rows(cfg.train.batch_size)])
    shards = world.size if cfg.train.parallel == "fsdp" else 1
    processes = env_int("LOCAL_WORLD_SIZE", 1) if world.distributed else 1
    need = training_need(cfg, rows, shards, have // processes)
    if need is None or need["need"] * processes <= have:
        return
    each = f"{processes} processes x " if processes > 1 else ""
    counted = [key for key in ("weights", "optimizer", "gradients", "modules", "activations") if need.get(key)]
    parts = ", ".join(f"{key} {human(need[key], 'B')}" for key in counted)
    if need["largest"] and need["weights"] > (need["activations"] or 0):  # the model itself: name where it is largest
        parts += f"; the largest tensor, {need['largest']}, holds {human(need['largest_size'])} values"
    raise ConfigError(
        f"training this model needs at least {each}{human(need['need'], 'B')} of memory ({parts}), but this machine has "
        f"{human(have, 'B')} (RAM and swap): {TRAINING_MEMORY_ADVICE}"
    )


def runs_that_fit(configs: list[RunConfig], slots: int) -> tuple[int, int]:
    """(parallel runs, bytes the largest needs): at most `slots` of the CPU runs `configs` (vocab
    resolved) side by side on this machine, as many as its memory holds for the one that needs
    most (`training_need`), at least one (a run that cannot fit alone refuses itself when it
    starts). On Linux only, as `check_training_room`; elsewhere (slots, 0)."""
    have = host_memory_bytes()
    if have is None:
        return slots, 0
    needs = [training_need(cfg, cfg.train.batch_size, room=have // slots, past=have) for cfg in configs]
    largest = max((need["need"] for need in needs if need is not None), default=0)
    return max(1, min(slots, have // largest if largest else slots)), largest
