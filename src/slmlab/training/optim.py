"""Optimizers (registry.OPTIMIZERS; AdamW with decoupled weight decay on matrices only), the
selection of trainable parameters (registry.TRAINABLE), the step that can be skipped on the
device, and the LR schedule (warmup, then cosine or warmup-stable-decay)."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import ConfigError, TrainConfig
from ..registry import OPTIMIZERS, TRAINABLE, require_members


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay 2-D+ weights of linear layers; not norms, biases or embeddings (incl. a tied head)."""
    embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay = [], []
    for param in model.parameters():
        if not param.requires_grad:
            continue
        (decay if param.dim() >= 2 and id(param) not in embedding_ids else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def select_trainable(model: nn.Module, which: str) -> int:
    """Freeze every parameter outside the selection `which` names (registry.TRAINABLE: "all", or
    a variant's, e.g. SMT's stage-2 "self_area"); returns the number of trainable parameters."""
    selected = TRAINABLE[which](model)
    if selected is not None:
        keep = {id(p) for p in selected}
        for param in model.parameters():
            param.requires_grad_(id(param) in keep)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


TRAINABLE.register("all", lambda model: None)  # None: nothing is frozen


FUSED_DEVICES = ("cuda", "cpu", "mps", "xpu")


# what the trainer calls of an optimizer (its state goes through torch.distributed.checkpoint)
OPTIMIZER_MEMBERS = ("param_groups", "step", "zero_grad")


def build_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """The optimizer `train.optimizer` names (registry.OPTIMIZERS)."""
    built = OPTIMIZERS[cfg.optimizer](model, cfg, device)
    return require_members(built, "optimizer", cfg.optimizer, OPTIMIZER_MEMBERS)


@OPTIMIZERS.register("adamw")
def build_adamw(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW, with the fused kernel wherever PyTorch has one (CUDA, CPU, MPS, XPU)."""
    fused = device.type in FUSED_DEVICES
    return torch.optim.AdamW(
        param_groups(model, cfg.weight_decay),
        lr=cfg.lr,
        betas=(cfg.beta1, cfg.beta2),
        fused=fused,
        foreach=None if fused else True,
    )


class Optimizers:
    """Several optimizers stepped as one. `param_groups` lists every group (the schedule sets
    each group's lr through it); checkpoints go through torch.distributed.checkpoint, which takes
    the list `optimizers` and keys every state by parameter name."""

    def __init__(self, *optimizers: torch.optim.Optimizer):
        self.optimizers = list(optimizers)
        self.defaults: dict = {}

    @property
    def param_groups(self) -> list[dict]:
        return [group for optimizer in self.optimizers for group in optimizer.param_groups]

    def step(self) -> None:
        for optimizer in self.optimizers:
            optimizer.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)


def muon_matrices(model: nn.Module) -> list[nn.Parameter]:
    """The hidden 2-D weight matrices Muon orthogonalises: every trainable 2-D parameter except
    embeddings and the LM head (tied or not)."""
    excluded = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    head = getattr(model, "head", None)
    if head is not None and getattr(head, "weight", None) is not None:
        excluded.add(id(head.weight))
    return [p for p in model.parameters() if p.requires_grad and p.dim() == 2 and id(p) not in excluded]


@OPTIMIZERS.register("muon")
def build_muon(model: nn.Module, cfg: TrainConfig, device: torch.device) -> Optimizers:
    """PyTorch's Muon (torch >= 2.9; momentum 0.95, Nesterov, decoupled weight decay) on the
    hidden matrices, AdamW without weight decay on embeddings, head, norms, biases and gains,
    stepped as one. Muon's update is scaled to AdamW's RMS
    (adjust_lr_fn="match_rms_adamw", Moonlight's rule), so one train.lr and schedule serve both."""
    if not hasattr(torch.optim, "Muon"):
        raise ConfigError(f"train.optimizer = 'muon' needs torch >= 2.9 (torch.optim.Muon); this is torch {torch.__version__}")
    matrices = muon_matrices(model)
    if not matrices:
        raise ConfigError("train.optimizer = 'muon': the model has no hidden 2-D matrices to give it")
    check_muon_shards(model, matrices)
    chosen = {id(p) for p in matrices}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in chosen]
    adamw = torch.optim.AdamW(rest, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=0.0, foreach=True)
    muon = torch.optim.Muon(matrices, lr=cfg.lr, weight_decay=cfg.weight_decay, adjust_lr_fn="match_rms_adamw")
    return Optimizers(adamw, muon)


def check_muon_shards(model: nn.Module, matrices: list[nn.Parameter]) -> None:
    """Refuse, in one line, a matrix FSDP2 shards on rows some ranks do not hold (fewer rows than
    processes, columns that do not split evenly: distributed.shard_placement): Muon's update of it
    fails under DTensor."""
    from torch.distributed.tensor import DTensor, Shard

    chosen = {id(p) for p in matrices}
    for name, p in model.named_parameters():
        if id(p) in chosen and isinstance(p, DTensor) and p.placements == (Shard(0),) and p.shape[0] < p.device_mesh.size():
            raise ConfigError(
                f"train.optimizer = 'muon' cannot update {name} {tuple(p.shape)} under train.parallel = 'fsdp' on "
                f"{p.device_mesh.size()} processes (fewer rows than processes, and its columns do not split evenly among "
                "them): use train.parallel = 'ddp', fewer processes, or train.optimizer = 'adamw'"
            )


def step_unless(optimizer: torch.optim.Optimizer, skip: torch.Tensor) -> None:
    """optimizer.step(), except where `skip` (a 0-dim float tensor on the device, 1 = skip) is set:
    then parameters, moments and step count stay as they were. A fused optimizer takes `skip` as
    its `found_inf` input (the mechanism torch.amp.GradScaler uses), so the host never waits for
    the device; any other optimizer reads it."""
    if optimizer.defaults.get("fused"):
        optimizer.found_inf = skip
        try:
            optimizer.step()
        finally:
            del optimizer.found_inf
    elif not skip.item():
        optimizer.step()


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup over warmup_steps, then (train.schedule) cosine or warmup-stable-decay down
    to floor = lr * min_lr_ratio at `steps`:

    lr(s) = lr * (s + 1) / warmup                                  for s < warmup
    cosine: lr(s) = floor + (lr - floor) * (1 + cos(pi * p)) / 2,  p = (s - warmup) / (steps - warmup)
    wsd:    lr(s) = lr until the last decay_fraction of steps, then linearly down to floor"""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    floor = cfg.lr * cfg.min_lr_ratio
    if cfg.schedule == "wsd":
        decay_steps = max(1, round(cfg.decay_fraction * cfg.steps))
        progress = min(1.0, max(0.0, (step - (cfg.steps - decay_steps)) / decay_steps))
        return cfg.lr - (cfg.lr - floor) * progress
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return floor + (cfg.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def schedule_warning(cfg: TrainConfig) -> str | None:
    """What is wrong with a schedule whose warmup leaves no room for the rest (None if nothing):
    with warmup_steps >= steps the LR never reaches train.lr nor decays; under "wsd" a warmup
    that runs into the decay window leaves no stable phase and cuts the decay short."""
    if cfg.warmup_steps >= cfg.steps:
        peak = (
            f"reaches train.lr = {cfg.lr:g} only at the last step"
            if cfg.warmup_steps == cfg.steps
            else f"peaks at {lr_at(cfg.steps - 1, cfg):.3g} instead of train.lr = {cfg.lr:g}"
        )
        return (
            f"train.warmup_steps = {cfg.warmup_steps} is not below train.steps = {cfg.steps}: the learning rate "
            f"{peak} and never decays; lower train.warmup_steps"
        )
    decay_start = cfg.steps - max(1, round(cfg.decay_fraction * cfg.steps))
    if cfg.schedule == "wsd" and cfg.warmup_steps > decay_start:
        return (
            f"train.warmup_steps = {cfg.warmup_steps} runs into the wsd decay, which starts at step {decay_start} "
            f"(train.decay_fraction = {cfg.decay_fraction:g} of {cfg.steps}): no stable phase; lower train.warmup_steps"
        )
    return None
