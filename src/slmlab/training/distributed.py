"""Data-parallel training on PyTorch's own engine, applied from outside the model.

`torchrun --nproc_per_node N -m slmlab train CONFIG` starts N processes with RANK, WORLD_SIZE
and LOCAL_RANK set; `World.from_env` joins them into one process group (NCCL on CUDA, gloo on
CPU). `parallelize` wraps the model with DDP, or shards it with FSDP2 (`fully_shard` on every
block, then on the root) when `train.parallel = "fsdp"`. The trainer keeps the single-process
semantics: `train.batch_size` is the global batch (each rank computes its own rows of it), the
gradients are averaged across ranks, and the logged loss is the global mean.

Checkpoints hold full, unsharded tensors (weights as safetensors, optimizer state keyed by
parameter name), gathered here and written by rank 0, so a checkpoint from N ranks resumes on M.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import gc
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..config import ConfigError, ModelConfig
from ..model import build_model
from ..model.auxiliary import WithAuxiliary, auxiliary_modules
from ..registry import is_builtin_module
from ..tables import counted
from ..torchrun_env import env_int, world_size
from .runtime import resolve_device


def _state_dict_api():
    """torch.distributed.checkpoint's state-dict functions, imported at first use: the import
    takes ~0.7 s, which every command that reads a model (generate, eval) paid at start."""
    from torch.distributed.checkpoint import state_dict

    return state_dict


def _full(api, cpu_offload: bool = True):
    """Options for full (unsharded) state dicts, gathered on the CPU unless `cpu_offload` is off."""
    return api.StateDictOptions(full_state_dict=True, cpu_offload=cpu_offload)


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (rank 0 of 1 when not distributed)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def seed_step(self, seed: int, step: int) -> None:
        """Seed torch's generators for optimizer step `step` on this rank, when there are several:
        each rank computes other rows of the global batch, and with one seed for all they drew the
        same dropout masks for them (row i of rank 0 and row i of rank 1 alike). The seed is
        numpy's SeedSequence of (seed, step, rank): a function of the step, so a resumed run draws
        what the uninterrupted one drew. One process keeps the run's own stream."""
        if self.distributed:
            torch.manual_seed(int(np.random.SeedSequence([seed, step, self.rank]).generate_state(1, np.uint64)[0]))

    @classmethod
    def from_env(cls, device_name: str) -> tuple[World, torch.device]:
        """Join the process group torchrun describes (if any) -> (world, this rank's device)."""
        size = world_size()
        if size <= 1:
            return cls(), resolve_device(device_name)
        missing = [name for name in ("RANK", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
        if missing:  # a WORLD_SIZE left in the shell: torchrun sets all of them
            raise ConfigError(
                f"WORLD_SIZE = {size} is set but {', '.join(missing)} not: start data-parallel runs with "
                "`slmlab train --nproc N` or torchrun, or unset WORLD_SIZE"
            )
        world = cls(env_int("RANK", 0), size, env_int("LOCAL_RANK", 0))
        device = resolve_device(device_name)
        if device.type == "cuda":
            if world.local_rank >= torch.cuda.device_count():
                raise ConfigError(
                    f"process {world.local_rank} of this machine has no GPU of its own: it has "
                    f"{counted(torch.cuda.device_count(), 'CUDA devices')}; start at most that many processes per machine "
                    "(--nproc), or set train.device = 'cpu'"
                )
            device = torch.device("cuda", world.local_rank)
            torch.cuda.set_device(device)
        elif device.type != "cpu":
            raise ConfigError(f"distributed training runs on CUDA or CPU, not {device.type}; set train.device")
        if not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            if not dist.is_available() or (backend == "gloo" and not dist.is_gloo_available()):
                raise ConfigError(f"this PyTorch build has no '{backend}' backend for distributed training")
            # NCCL bound to this process's GPU: without device_id it guesses the GPU from the global rank,
            # which torch warns "can cause a hang if rank to GPU mapping is heterogeneous" (seen on an H200)
            bound = {"device_id": device} if backend == "nccl" else {}
            dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30), **bound)
        return world, device

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of `value` over all ranks (the value itself on one rank)."""
        if self.distributed:
            value = value.clone()
            dist.all_reduce(value)  # gloo has no AVG
            value /= self.size
        return value

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            value = value.clone()
            dist.all_reduce(value)
        return value

    def rows(self, batch_size: int) -> slice:
        """This rank's rows of a batch of `batch_size` rows: contiguous, disjoint, together all of
        them (sizes differ by at most one when batch_size is not a multiple of the world size)."""
        return slice(self.rank * batch_size // self.size, (self.rank + 1) * batch_size // self.size)


def check_batch(batch_size: int, world: World) -> None:
    if batch_size % world.size:
        raise ConfigError(f"train.batch_size = {batch_size} (the global batch) must be divisible by the {world.size} processes")


def parallelize(model: nn.Module, world: World, mode: str, device: torch.device) -> nn.Module:
    """The module the training step calls: the model itself, DDP around it, or the model sharded
    in place by FSDP2: each of the architecture's `shard_units()` (the decoder's blocks, the
    Tape's tape blocks) is one unit, the root holds the rest (embeddings, final norm, head)."""
    if not world.distributed:
        return model
    if mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        devices = [device.index] if device.type == "cuda" else None
        trained = WithAuxiliary(model) if auxiliary_modules(model) else model  # auxiliary terms among its outputs
        return DistributedDataParallel(trained, device_ids=devices, find_unused_parameters=may_leave_parameters_unused(model))
    from torch.distributed.fsdp import fully_shard

    scalars = [name for name, p in model.named_parameters() if p.dim() == 0]
    if scalars:
        raise ConfigError(
            f"train.parallel = 'fsdp' cannot shard 0-dim parameters ({', '.join(scalars[:3])}): make each a tensor of "
            "shape (1,), or use train.parallel = 'ddp'"
        )
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh(device.type, (world.size,))  # fully_shard's default is CUDA wherever CUDA exists
    placement = functools.partial(shard_placement, processes=world.size)
    for unit in model.shard_units():
        fully_shard(unit, mesh=mesh, shard_placement_fn=placement)
    fully_shard(model, mesh=mesh, shard_placement_fn=placement)
    return model


def may_leave_parameters_unused(model: nn.Module) -> bool:
    """Whether a step of `model` may leave some of its parameters without a gradient (an MoE
    plugin's experts that no token chose), so that DDP must look for them after every backward
    (else it waits for their gradients and fails at the next step): where any of its modules comes
    from a plugin. slmlab's own modules give every trainable parameter a gradient in every step
    (`slmlab check`'s gradients property, held for every combination of them in
    tests/test_combinations.py), and the search costs a walk of the autograd graph each step (and
    torch's warning in every process that it found nothing)."""
    return any(
        not (is_builtin_module(kind := type(module).__module__) or kind.startswith("torch.")) for module in model.modules()
    )


def shard_placement(param: nn.Parameter, processes: int):
    """Where FSDP2 shards `param`: on its rows (None: the default), except a matrix with fewer rows
    than processes and columns that split evenly among them (SMAT's (gates, d_model) w_g), which is
    sharded on its columns. Some ranks would hold no rows of it, and Muon's in-place update of such
    a matrix fails under DTensor (torch 2.13: "in-place operations that require placement changes";
    FSDP2 shards unevenly only on dim 0)."""
    from torch.distributed.tensor import Shard

    if param.dim() == 2 and param.shape[0] < processes and param.shape[1] % processes == 0:
        return Shard(1)
    return None


@contextlib.contextmanager
def gradient_sync(wrapped: nn.Module, enabled: bool):
    """Skip the gradient all-reduce for accumulation micro-steps (all but the last)."""
    if enabled:
        yield
    elif hasattr(wrapped, "no_sync"):  # DDP
        with wrapped.no_sync():
            yield
    elif hasattr(wrapped, "set_requires_gradient_sync"):  # FSDP2
        wrapped.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            wrapped.set_requires_gradient_sync(True)
    else:
        yield


def local_scalar(value: torch.Tensor) -> torch.Tensor:
    """A plain tensor from a possibly distributed one (FSDP2's gradient norm is a DTensor)."""
    return value.full_tensor() if hasattr(value, "full_tensor") else value


def weights_finite(model: nn.Module, world: World) -> bool:
    """Whether every parameter is finite on every rank (each rank checks its own shard of an
    FSDP2 DTensor; one all-reduce)."""
    local = [p.to_local() if hasattr(p, "to_local") else p for p in model.parameters()]
    finite = torch.stack([torch.isfinite(t).all() for t in local]).all().float()
    return bool(world.mean(finite).item() == 1.0)


def tied_aliases(model: nn.Module) -> dict[str, str]:
    """{name: the name listed first} for every parameter that appears again under another name
    (a tied LM head: {"head.weight": "wte.weight"})."""
    first: dict[int, str] = {}
    aliases = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in first:
            aliases[name] = first[id(param)]
        else:
            first[id(param)] = name
    return aliases


def full_model_state(model: nn.Module, aliases: dict[str, str]) -> dict[str, torch.Tensor]:
    """The unsharded weights on CPU, tied aliases dropped (a collective: every rank calls it;
    ranks other than 0 get an empty dict under FSDP)."""
    api = _state_dict_api()
    state = api.get_model_state_dict(model, options=_full(api))
    return {name: tensor.contiguous() for name, tensor in state.items() if name not in aliases}


def whole_copy(
    model_cfg: ModelConfig, device: torch.device, weights: dict[str, torch.Tensor], aliases: dict[str, str]
) -> nn.Module:
    """A whole, unsharded model holding `weights`, the full state every rank gathered
    (full_model_state): what rank 0 reads on its own when FSDP shards the model. Only tied
    aliases may be missing from `weights`: they share a tensor."""
    model = build_model(model_cfg).to(device)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected or not set(missing) <= set(aliases):
        raise RuntimeError(f"gathered weights do not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer state keyed by parameter name, unsharded, on CPU (a collective)."""
    api = _state_dict_api()
    return api.get_optimizer_state_dict(model, getattr(optimizer, "optimizers", optimizer), options=_full(api))


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load a name-keyed full optimizer state into this rank's (possibly sharded) optimizer."""
    _shaped_as_their_parameters(model, state)
    api = _state_dict_api()
    api.set_optimizer_state_dict(model, getattr(optimizer, "optimizers", optimizer), state, options=_full(api, cpu_offload=False))


def _shaped_as_their_parameters(model: nn.Module, state: dict) -> None:
    """Give a (1,) parameter's per-element state (AdamW's moments; not its step count) that shape
    where it was saved 0-dim: SMAT's lambda_raw was a scalar until 2026-12-05, which FSDP2
    cannot shard, and a run saved before then resumes with it as it is now."""
    vectors = {name for name, p in model.named_parameters() if p.shape == (1,)}
    for name, entries in state.get("state", {}).items():
        if name in vectors:
            for key, value in entries.items():
                if key != "step" and torch.is_tensor(value) and value.dim() == 0:
                    entries[key] = value.reshape(1)


def close(finished: bool = False) -> None:
    """Leave the process group. After a finished run every rank first drops what training left
    (FSDP2's pending collectives hold gloo work objects) and meets the others, so no rank tears
    the group down under a peer's last collective (a gloo thread outliving it aborts the
    process at exit); after an error it leaves at once, and a peer waiting in a barrier gives up
    after a timeout instead of hanging."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    if finished:
        gc.collect()
        if dist.get_backend() == "gloo":
            dist.monitored_barrier(timeout=datetime.timedelta(minutes=5))
        else:
            dist.barrier()
    dist.destroy_process_group()
