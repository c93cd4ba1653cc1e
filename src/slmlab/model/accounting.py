"""Parameter counts, FLOPs per token and memory estimates for a decoder.

FLOPs (PaLM appendix B convention): a training token costs 6 N + 12 d sum_l T_l, where N is the
number of parameters used in matmuls (blocks + LM head; embedding lookups are free) and the
second term is attention's QK^T and AV over the keys a layer's queries can reach, counted as dense:
T_l = T for full attention, min(T, 2B) for a block-local layer (its 2B-key window), so a model of
L full layers costs 6 N + 12 L d T. Inference costs a third.

`measured_flops_per_token` counts what a model really runs (torch.utils.flop_counter), so a
plugin's cost shows without a formula; `slmlab info` prints both.

Memory: weights, gradients and AdamW's two moments are 4 bytes per parameter each in fp32. The
activations kept for backward and the decoding cache are counted, never a formula: one training
forward of the model built on the meta device, with attention as the fused kernel
(`traced_activation_bytes`; for the decoder about (9 d + 2 d_ff) values per token and layer, the
fused chunked head keeping no (tokens, V) logits), and the caches the model makes, filled
(`cache_bytes`). A closed form missed SMAT's and SwiGLU's extra activations by 30%. A model
whose forward reads values (data-dependent routing) is counted on the CPU (`countable_model`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ..config import ConfigError, ModelConfig
from ..host_memory import host_memory_bytes
from ..registry import ARCHITECTURES, build_model
from ..tables import counted, human
from .meta_device import building_bytes, on_meta, parameters_of

BYTES = {"fp32": 4, "bf16": 2, "int8": 1}
MANY_BLOCKS = 1000  # ~50 MB of modules: fewer are built without measuring one


@dataclass
class ModelStats:
    params: int
    embedding_params: int
    matmul_params: int
    d_model: int
    windows: tuple[int, ...]  # per attention layer: keys a query can reach (0 = the whole context)

    @property
    def non_embedding_params(self) -> int:
        return self.params - self.embedding_params

    def flops_per_token(self, seq_len: int, training: bool = True) -> float:
        context = sum(min(seq_len, w) if w else seq_len for w in self.windows)
        forward = 2 * self.matmul_params + 4 * self.d_model * context
        return 3 * forward if training else forward

    def training_bytes(self, activations: int, trainable: int | None = None) -> dict[str, int]:
        """fp32 master weights, gradients and AdamW state, plus `activations` (traced_activation_bytes);
        only `trainable` parameters (default: all) have gradients and optimizer state."""
        trainable = self.params if trainable is None else trainable
        parts = {"weights": 4 * self.params, "gradients": 4 * trainable, "optimizer": 8 * trainable, "activations": activations}
        parts["total"] = sum(parts.values())
        return parts


def model_stats(model: nn.Module, cfg: ModelConfig) -> ModelStats:
    """Count a built model's parameters (tied weights once); the attention term counts the
    model's attention modules, whatever the architecture (a TapeTransformer has dozens)."""
    from .attention import CausalSelfAttention
    from .block_local import BlockLocal

    params = sum(p.numel() for p in model.parameters())
    embedding = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Embedding))
    head = model.get_submodule("head").weight.numel()
    matmul = params - embedding + (head if cfg.tie_embeddings else 0)
    windows = tuple(
        2 * m.pattern.block if isinstance(m.pattern, BlockLocal) else 0
        for m in model.modules()
        if isinstance(m, CausalSelfAttention)
    )
    return ModelStats(params, embedding, matmul, cfg.d_model, windows)


def meta_model(cfg: ModelConfig) -> nn.Module:
    """The model `cfg` builds, on the meta device: shapes only (no memory, no arithmetic, no
    random initial values), and no draw from the caller's generator (building drew from it:
    SMAT's, SMT's and the TapeTransformer's constructors), so a run that counts first trains as
    it would unchecked."""
    check_buildable(cfg)
    with on_meta():
        return build_model(cfg)


def check_buildable(cfg: ModelConfig) -> None:
    """Refuse (one line) a model whose blocks' modules alone would outgrow this machine's memory
    (`least_size`), even on the meta device; on Linux only (as host_memory_bytes)."""
    have = host_memory_bytes()
    if have is None or (modules := least_size(cfg)[1]) <= have:
        return
    many = [(count, settings) for count, _, settings in _repeated(cfg) if count > MANY_BLOCKS]
    raise ConfigError(
        f"{'; '.join(settings for _, settings in many)}: this model's {counted(sum(c for c, _ in many), 'blocks')} would hold "
        f"{human(modules, 'B')} of memory in their modules alone (even on the meta device), more than this machine's "
        f"{human(have, 'B')} (RAM and swap); check those values"
    )


def least_size(cfg: ModelConfig) -> tuple[int, int]:
    """(parameters, bytes of modules): lower bounds of what `cfg`'s model holds, counted without
    building it, from its architecture's `repeated_blocks` (for each kind, how many, and one built
    on the meta device): each kind's parameters, and its Python objects (`building_bytes`,
    measured where there are over MANY_BLOCKS of a kind, else 0), times its count; (0, 0) for an
    architecture without them. A block's modules take ~50 KB even on the meta device, so a
    mistyped model.n_layer = 10**9 is refused from these (check_buildable,
    training/memory_room.py) rather than built."""
    kinds = _repeated(cfg)
    parameters = sum(count * parameters_of(build) for count, build, _ in kinds)
    return parameters, sum(count * building_bytes(build) for count, build, _ in kinds if count > MANY_BLOCKS)


def _repeated(cfg: ModelConfig) -> list:
    """The architecture's `repeated_blocks(cfg)` (model/protocol.py), [] where it has none."""
    repeated = getattr(ARCHITECTURES[cfg.arch], "repeated_blocks", None)
    return repeated(cfg) if callable(repeated) else []


def countable_model(cfg: ModelConfig) -> nn.Module:
    """The model `cfg` builds, for counting: on the meta device (shapes only: no memory, no
    arithmetic) where its forward runs there, training and decoding. A forward that reads values,
    as data-dependent routing does (an MoE's `nonzero`, `.item()`, a branch on a tensor), cannot
    run on meta: then the model is built on the CPU, seeded, and counting runs it for real (one
    sequence at a time: `traced_activation_bytes`)."""
    model = meta_model(cfg)
    idx = torch.zeros(1, min(2, cfg.block_size), dtype=torch.long, device="meta")
    try:
        model(idx, idx)
        with torch.no_grad():
            model(idx, caches=model.make_caches())
        return model
    except (NotImplementedError, RuntimeError):  # the CPU build runs it, or raises what is wrong
        with torch.random.fork_rng():  # seeded for counts that repeat, the caller's generator untouched
            torch.manual_seed(0)
            return build_model(cfg)


def _bytes_at(tensor: torch.Tensor, size: int, dtype: str | None) -> int:
    """`size` bytes of `tensor`'s memory, counted at `dtype`'s element size if it is floating (None: as it is)."""
    return size // tensor.element_size() * BYTES[dtype] if dtype and tensor.is_floating_point() else size


def _storage_key(tensor) -> tuple[int, int]:
    """(identity, bytes) of the memory behind `tensor`: its storage, or on the meta device (where
    storages have no address) its base tensor."""
    if tensor.device.type == "meta":
        base = tensor._base if tensor._base is not None else tensor
        return id(base), base.numel() * base.element_size()
    storage = tensor.untyped_storage()
    return storage.data_ptr(), storage.nbytes()


def bytes_kept_for_backward(run: Callable[[], object], exclude: Iterable = (), dtype: str | None = None) -> tuple[object, int]:
    """Call run() -> (its result, the bytes of the memory autograd keeps for backward, each
    storage counted once, leaving out the memory of `exclude`, e.g. the weights; with `dtype`,
    floating storages at that dtype's size)."""
    seen: dict[int, int] = {}

    def pack(tensor):
        key, size = _storage_key(tensor)
        seen[key] = _bytes_at(tensor, size, dtype)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        result = run()
    skip = {_storage_key(t)[0] for t in exclude}
    return result, sum(size for key, size in seen.items() if key not in skip)


class _FusedAttentionOnMeta(TorchFunctionMode):
    """SDPA on meta tensors as the fused kernel a real device runs: the meta device would take the
    math path, whose backward keeps the (heads, T, T) probabilities; the CPU flash kernel keeps
    q, k, v, the output and a logsumexp per query, as fused GPU kernels do."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention and args[0].device.type == "meta" and not kwargs.get("enable_gqa"):
            q, k, v = args[:3]
            options = dict(zip(("attn_mask", "dropout_p", "is_causal", "scale"), args[3:]), **kwargs)
            return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                q,
                k,
                v,
                options.get("dropout_p", 0.0),
                options.get("is_causal", False),
                attn_mask=options.get("attn_mask"),
                scale=options.get("scale"),
            )[0]
        return func(*args, **kwargs)


def traced_activation_bytes(model: nn.Module, batch_size: int, seq_len: int, dtype: str = "fp32") -> int:
    """Bytes autograd keeps for backward in one training forward pass of `model` (built on the meta
    device: shapes only, no memory, no compute), attention as the fused kernel, floating tensors
    at `dtype`'s size (a bf16 run's activations taken as all bf16). Any architecture or plugin;
    equal to a CPU run's for the decoder, SMAT, SwiGLU, block-local and the TapeTransformer (tested).
    A model on a real device (`countable_model`) runs one and two sequences, and the bytes are
    extrapolated to batch_size along that line (every activation grows with the batch, except a
    few per step)."""
    device = next(model.parameters()).device

    def kept(rows: int) -> int:
        idx = torch.zeros(rows, seq_len, dtype=torch.long, device=device)
        with _FusedAttentionOnMeta():
            return bytes_kept_for_backward(lambda: model(idx, idx), exclude=model.parameters(), dtype=dtype)[1]

    if device.type == "meta" or batch_size == 1:
        return kept(batch_size)
    one = kept(1)
    return one + (batch_size - 1) * (kept(2) - one)


def cache_bytes(model: nn.Module, seq_len: int, dtypes: tuple[str, ...] = ("fp32",)) -> dict[str, int]:
    """dtype -> bytes of the model's decoding caches once they hold `seq_len` tokens of one
    sequence, counted on the caches `make_caches()` gives and one forward fills (on a model built
    on the meta device: shapes only), each storage once, floating tensors at the dtype's size: what
    each architecture or plugin really keeps (a block-local layer its window, SMAT its wider keys
    and values, a TapeTransformer its every attention layer)."""
    device = next(model.parameters()).device
    caches = model.make_caches()
    with torch.no_grad():
        model(torch.zeros(1, seq_len, dtype=torch.long, device=device), caches=caches)
    storages = _held_storages(caches)
    return {dtype: sum(_bytes_at(tensor, size, dtype) for tensor, size in storages.values()) for dtype in dtypes}


def held_bytes(value) -> int:
    """Bytes of the memory behind the tensors `value` holds (in lists, dicts and objects' attributes:
    a model's caches), each storage once."""
    return sum(size for _, size in _held_storages(value).values())


def _held_storages(value) -> dict[int, tuple[torch.Tensor, int]]:
    """storage identity -> (a tensor on it, its bytes), for every tensor `value` holds."""
    storages = {}
    for tensor in _held_tensors(value, set()):
        key, size = _storage_key(tensor)
        storages[key] = tensor, size
    return storages


def _held_tensors(value, seen: set[int]) -> Iterable[torch.Tensor]:
    """Every tensor `value` holds: in lists, tuples, dicts and plain objects' attributes (caches
    are such objects), each object visited once."""
    if id(value) in seen or isinstance(value, nn.Module):
        return
    seen.add(id(value))
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _held_tensors(item, seen)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _held_tensors(item, seen)
    elif hasattr(value, "__dict__"):
        yield from _held_tensors(vars(value), seen)


def measured_flops_per_token(model: nn.Module, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward) counted by torch.utils.flop_counter on one
    (1, seq_len) sequence: what any architecture or plugin really runs, whatever its graph. On a
    model built on the meta device it costs no memory and runs no arithmetic. Attention is counted
    through SDPA's math path, as its dense products (the meta device's path; flop_counter counts
    no FLOP of the CPU's fused kernel, which a model `countable_model` builds on the CPU runs)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    device = next(model.parameters()).device
    tokens = torch.zeros(1, seq_len, dtype=torch.long, device=device)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(tokens, tokens)[1].backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / seq_len
