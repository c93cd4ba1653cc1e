"""The size-and-cost table of a config: parameters, FLOPs per token, inference and training memory.

Shared by `slmlab info` and the report card. The model is built on the meta device, so even a
large preset costs no memory to describe (`countable_model`: on the CPU if its forward reads values)."""

from __future__ import annotations

from pathlib import Path

from ..config import RunConfig
from ..model import model_stats
from ..model.accounting import cache_bytes, countable_model, measured_flops_per_token, traced_activation_bytes
from ..tables import counted, human, markdown_table
from ..training.optim import select_trainable


def size_table(cfg: RunConfig, batch_size: int | None = None, seq_len: int | None = None) -> str:
    """Markdown table of the model's size and cost at (batch_size, seq_len) (default: the config's);
    a curriculum: one table per phase, whose context, batch and attention may differ (the memory
    a run needs is its largest phase's)."""
    if not cfg.phases:
        return _size_table(cfg, batch_size, seq_len)
    tables = []
    for index, phase in enumerate(cfg.phases):
        phase_cfg = cfg.phase(index)
        tables.append(
            f"phase {phase.name} ({counted(phase_cfg.train.steps, 'steps')}):\n\n{_size_table(phase_cfg, batch_size, seq_len)}"
        )
    return "\n\n".join(tables)


def _size_table(cfg: RunConfig, batch_size: int | None, seq_len: int | None) -> str:
    model = countable_model(cfg.model)
    stats = model_stats(model, cfg.model)
    trainable = select_trainable(model, cfg.train.trainable)  # frozen weights: no gradient, no optimizer state
    batch = batch_size or cfg.train.batch_size
    seq = seq_len or cfg.data.seq_len
    train_mem = stats.training_bytes(traced_activation_bytes(model, batch, seq, cfg.train.dtype), trainable)
    m = cfg.model
    frozen = trainable < stats.params
    every = ", if every parameter trained" if frozen else ""  # the closed form knows no frozen weights
    cache = cache_bytes(model, m.block_size, ("fp32", "bf16"))  # one filled cache, counted at both sizes
    rows = [
        ("architecture", model.describe()),
        ("parameters", f"{stats.params:,} ({human(stats.params)})"),
        ("non-embedding parameters", f"{stats.non_embedding_params:,} ({human(stats.non_embedding_params)})"),
        *(
            [(f"trainable parameters (train.trainable = {cfg.train.trainable})", f"{trainable:,} ({human(trainable)})")]
            if frozen
            else []
        ),
        (f"FLOPs / token (train, T={seq}{every})", human(stats.flops_per_token(seq, training=True))),
        (f"FLOPs / token (train, T={seq}, counted by torch.utils.flop_counter)", human(measured_flops_per_token(model, seq))),
        (f"FLOPs / token (inference, T={seq})", human(stats.flops_per_token(seq, training=False))),
        ("decoding cache fp32 (1 x block, counted)", human(cache["fp32"], "B")),
        ("inference memory fp32 (weights + decoding cache, 1 x block)", human(4 * stats.params + cache["fp32"], "B")),
        ("inference memory bf16 (weights + decoding cache, 1 x block)", human(2 * stats.params + cache["bf16"], "B")),
    ]
    half = cfg.train.dtype != "fp32"  # traced in fp32 and halved; autocast keeps the residual stream and norms in fp32
    notes = {"activations": f", counted at {cfg.train.dtype}: CPU autocast measured ~1.4x"} if half else {}
    rows += [(f"training memory: {k} (batch {batch} x {seq}{notes.get(k, '')})", human(v, "B")) for k, v in train_mem.items()]
    return markdown_table(("quantity", "value"), rows)


def config_for_info(target: str | Path, load_config, overrides: list[str] = ()) -> RunConfig:
    """The config of a run directory (which takes no `overrides`: it is what was trained; a
    curriculum's vocabulary is the one its first phase recorded), else `load_config()` (a CONFIG
    file with its overrides), with the vocabulary resolved without tokenizing when the
    tokenizer's size is known in advance."""
    from ..config import ConfigError, resolve_vocab
    from ..runs.run_dir import RunDir, phase_runs, runs_inside

    if (Path(target) / "config.json").is_file():
        if overrides:
            raise ConfigError(
                f"info {target} describes the run as trained, so it takes no overrides ({' '.join(overrides)}); "
                "apply them to a config file"
            )
        cfg = RunDir(target).read_config()
        begun = phase_runs(target, cfg, begun=True)
        if not cfg.model.vocab_size and begun:  # a curriculum's phases record it, the first one to begin first
            resolve_vocab(cfg, begun[0].read_config().model.vocab_size)
    elif Path(target).is_dir():
        raise ConfigError(
            f"{target} is a folder but not a run directory (no config.json): give a .toml config or a run directory"
            + runs_inside(Path(target))
        )
    else:
        cfg = load_config()
    if cfg.model.vocab_size == 0:
        from ..data.tokens import vocab_size_of

        resolve_vocab(cfg, vocab_size_of(cfg.data))
    return cfg
