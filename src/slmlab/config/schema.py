"""Typed run configuration: dataclasses loaded from TOML and overridden by dotted paths.

A run is described by one `RunConfig` with three sections (`model`, `data`, `train`). Every
field is typed; `load_config` checks every key against the dataclass, so an unknown key, a value
of the wrong type or an impossible combination raises a `ConfigError` whose message is one line
that names the key (and, for a typo, the closest valid key).

    cfg = load_config("configs/quickstart.toml", ["--model.n_layer", "4", "--train.steps=200"])
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib


@dataclass
class SmatConfig:
    """SMAT semantic attention (seed 003); see slmlab/variants/smat.py for the equations.

    use_S adds the bias lambda * S_ij, use_G the value gate G_j; both off is the baseline.
    Initial values: lambda_raw 0 (lambda = softplus(0) = 0.69), mu 0 (the gate starts blind to
    centrality but learns to use it), beta 2 (G starts near sigmoid(2) = 0.88, close to identity)."""

    use_S: bool = False
    use_G: bool = False
    s_dim: int = 32
    centrality_norm: str = "prefix"  # "prefix": c_j / j ; "seq": c_j / block_size
    gate_per_head: bool = False
    lambda_raw_init: float = 0.0
    mu_init: float = 0.0
    beta_init: float = 2.0


@dataclass
class SelfAreaConfig:
    """SMT's Self Area (seed 000); see slmlab/variants/self_area.py for the equations.

    A learned persona state refined by an MLP into a guidance signal g (self_dim); layer l adds
    alpha_l * W_l g. `target`: into the residual stream before the block ("residual") or only into
    the attention and MLP inputs after their norms ("sublayer_inputs"). `token_dependent`: g is
    gated per token by the hidden state. `guidance_mode = "input_once"` is what the original
    code did (one constant vector added to the embeddings). `surgery_safe`: alpha starts at 0, so
    inserting the module changes nothing."""

    enabled: bool = False
    self_dim: int = 128
    hidden: int = 0  # the refining MLP's width; 0 -> 2 * self_dim
    guidance_mode: str = "every_layer"  # "every_layer" | "input_once"
    target: str = "residual"  # "residual" | "sublayer_inputs"
    token_dependent: bool = False
    surgery_safe: bool = True  # alpha_l = 0 at init; else 1


@dataclass
class TapeConfig:
    """TapeTransformer (seed 001); see slmlab/variants/tape.py for the graph."""

    n_critics: int = 4
    coda_layers: int = 2
    critic_layers: int = 4
    coda_rule: str = "soft_xor"  # how a tape head combines its left and right stacks: soft_xor | softmax_mix | sum
    critic_rule: str = "softmax_mix"
    moderator: str = "merge"  # "merge": RMSNorm + projection of coda and every critic; "last": the last critic
    rnn_dim: int = 0  # the prophet char-RNN's width; 0 -> d_model
    rnn_layers: int = 2
    mlp_expand: int = 8  # rectified-KAN MLP width = mlp_expand * d_model


@dataclass
class ModelConfig:
    """Shape of the decoder. `vocab_size = 0` means "take it from the tokenizer"."""

    arch: str = "decoder"
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 128
    d_ff: int = 0  # 0 -> 4 * d_model
    block_size: int = 256
    vocab_size: int = 0
    dropout: float = 0.0
    norm: str = "layernorm"  # "layernorm" | "rmsnorm"
    norm_eps: float = 1e-5
    pos: str = "learned"  # extension point: positions ("learned" | "rope")
    rope_theta: float = 10000.0
    rope_fraction: float = 1.0  # share of each head's dimensions that RoPE rotates
    rope_scale: float = 1.0  # linear position interpolation: positions are divided by it
    attention: str = "full"  # extension point: attention pattern ("full" | "block_local")
    attention_layers: list[str] = field(default_factory=list)  # per-layer patterns (overrides `attention`)
    global_every: int = 0  # with a local pattern: every k-th layer uses full attention
    local_block: int = 256  # block length B of "block_local"
    local_kernel: str = "auto"  # how block_local runs: "windows" (SDPA) | "flex" (FlexAttention) | "auto" (faster on CUDA)
    bias: bool = True
    tie_embeddings: bool = True
    init_std: float = 0.02
    head: str = "linear"  # LM head: "linear" (softmax of h·w_v) | "student_t" (-(nu+D)/2 log(1 + |h-w_v|^2/nu))
    student_t_nu: float = 2.718281828459045
    tape: TapeConfig = field(default_factory=TapeConfig)
    smat: SmatConfig = field(default_factory=SmatConfig)
    self_area: SelfAreaConfig = field(default_factory=SelfAreaConfig)

    @property
    def ff_dim(self) -> int:
        return self.d_ff or 4 * self.d_model

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head


@dataclass
class DataConfig:
    """Where text comes from, how it is filtered and tokenized, and how windows are cut."""

    source: str = "shakespeare"  # "shakespeare" | "brown" | a .txt/.jsonl file, directory or glob
    genres: list[str] = field(default_factory=list)  # Brown letters/names or Shakespeare groups
    max_year: int = 0  # 0 = no cut-off; else drop documents whose known year is later
    allow_unknown_year: bool = True
    max_documents: int = 0  # 0 = all; else the first N documents (a small slice for trials)
    text_field: str = "text"  # for .jsonl sources
    tokenizer: str = "char"  # "byte" | "char" | "bpe" | "gpt2"
    vocab_size: int = 4096  # for "bpe"
    tiktoken_file: str = ""  # for "gpt2": path to gpt2.tiktoken (else $TIKTOKEN_CACHE_DIR)
    val_fraction: float = 0.1
    seq_len: int = 256
    mixture: dict[str, float] = field(default_factory=dict)  # stream (genre) -> sampling weight
    cache_dir: str = ""  # "" -> $SLMLAB_CACHE or ~/.cache/slmlab


@dataclass
class TrainConfig:
    """Optimisation, evaluation, logging and checkpointing."""

    steps: int = 1000
    batch_size: int = 32
    grad_accum: int = 1
    lr: float = 1e-3
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # 0 = no clipping
    optimizer: str = "adamw"
    seed: int = 1337
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N" | "mps"
    dtype: str = "fp32"  # "fp32" | "bf16" (autocast)
    compile: bool = False
    trainable: str = "all"  # which parameters train: "all" | "self_area" | "self_area+norms" (SMT stage 2)
    parallel: str = "ddp"  # under torchrun: "ddp" (replicated) | "fsdp" (FSDP2, sharded); batch_size is global
    threads: int = 0  # CPU threads; 0 = torch default
    eval_every: int = 100
    eval_batches: int = 20
    log_every: int = 10
    checkpoint_every: int = 500  # 0 = only the final weights
    keep_checkpoints: int = 2
    max_nan_skips: int = 5  # abort after this many consecutive non-finite steps
    sample_tokens: int = 200  # length of the sample printed at the end (0 = none)
    viz_every: int = 0  # save an attention/loss frame every N steps into RUN/viz/frames (0 = none)


@dataclass
class PhaseConfig:
    """One phase of a curriculum: what it changes relative to the previous phase (None or an empty
    mixture = keep). Each phase starts from the previous phase's final weights."""

    name: str = "phase"
    steps: int | None = None
    seq_len: int | None = None
    batch_size: int | None = None
    attention: str | None = None
    rope_scale: float | None = None
    lr: float | None = None
    warmup_steps: int | None = None
    min_lr_ratio: float | None = None
    mixture: dict[str, float] = field(default_factory=dict)
    carry_optimizer: bool = False  # False: a fresh AdamW state for this phase

    FIELDS = {"steps": "train.steps", "seq_len": "data.seq_len", "batch_size": "train.batch_size",
              "attention": "model.attention", "rope_scale": "model.rope_scale", "lr": "train.lr",
              "warmup_steps": "train.warmup_steps", "min_lr_ratio": "train.min_lr_ratio", "mixture": "data.mixture"}

    def overrides(self) -> dict[str, Any]:
        return {key: getattr(self, name) for name, key in self.FIELDS.items() if getattr(self, name) not in (None, {})}


@dataclass
class RunConfig:
    """A whole run: name, output root, the three sections and optional curriculum phases."""

    name: str = "run"
    out_dir: str = "runs"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    phases: list[PhaseConfig] = field(default_factory=list)

    def phase(self, index: int) -> RunConfig:
        """The full config of phase `index`: the run's config with the changes of phases 0..index
        applied in order (a phase keeps what earlier phases set unless it changes it). Its sub-run
        lives inside this run's directory."""
        phase = self.phases[index]
        values = {k: v for k, v in self.to_dict().items() if k != "phases"}
        overrides = {}
        for earlier in self.phases[: index + 1]:
            overrides.update(earlier.overrides())
        overrides.update(name=f"phase{index + 1}_{phase.name}", out_dir=str(Path(self.out_dir) / self.name))
        try:
            return config_from_dict(apply_overrides(values, overrides))
        except ConfigError as err:
            raise ConfigError(f"phases[{index}] ({phase.name}): {err}") from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


CHOICES: dict[str, tuple[str, ...]] = {
    "model.arch": ("decoder", "tape"),
    "model.head": ("linear", "student_t"),
    "model.tape.coda_rule": ("soft_xor", "softmax_mix", "sum"),
    "model.tape.critic_rule": ("soft_xor", "softmax_mix", "sum"),
    "model.tape.moderator": ("merge", "last"),
    "model.norm": ("layernorm", "rmsnorm"),
    "model.pos": ("learned", "rope", "sinusoidal"),
    "model.attention": ("full", "block_local"),
    "model.local_kernel": ("auto", "windows", "flex"),
    "model.smat.centrality_norm": ("prefix", "seq"),
    "model.self_area.guidance_mode": ("every_layer", "input_once"),
    "model.self_area.target": ("residual", "sublayer_inputs"),
    "data.tokenizer": ("byte", "char", "bpe", "gpt2"),
    "train.optimizer": ("adamw", "wolf"),
    "train.dtype": ("fp32", "bf16"),
    "train.parallel": ("ddp", "fsdp"),
    "train.trainable": ("all", "self_area", "self_area+norms"),
}
"""Allowed values of string fields with a closed set. Variants register more (see `register_choice`)."""


def register_choice(key: str, value: str) -> None:
    """Let an extension add a value to a closed choice (e.g. a new attention pattern)."""
    if value not in CHOICES[key]:
        CHOICES[key] = CHOICES[key] + (value,)


# --------------------------------------------------------------------------------------------
# building dataclasses from plain dicts, with checks


def _closest(name: str, options: typing.Iterable[str]) -> str:
    match = difflib.get_close_matches(name, list(options), n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else ""


def _check_value(key: str, value: Any, annotation: Any) -> Any:
    """Return `value` converted to `annotation`, or raise ConfigError naming `key`."""
    if annotation is Any or (annotation is type(None) and value is None):
        return value
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(annotation):
            try:
                return _check_value(key, value, option)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: expected {annotation}, got {value!r}")
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif annotation is str:
        if isinstance(value, str):
            return value
    elif origin is list:
        (item_type,) = typing.get_args(annotation)
        if isinstance(value, str):  # a single value given for a list, e.g. --data.genres J
            value = [value]
        if isinstance(value, (list, tuple)):
            return [_check_value(f"{key}[{i}]", v, item_type) for i, v in enumerate(value)]
    elif origin is dict:
        _, value_type = typing.get_args(annotation)
        if isinstance(value, dict):
            return {str(k): _check_value(f"{key}.{k}", v, value_type) for k, v in value.items()}
    elif dataclasses.is_dataclass(annotation):
        if isinstance(value, dict):
            return build_dataclass(annotation, value, prefix=key)
    type_name = getattr(annotation, "__name__", str(annotation))
    raise ConfigError(f"{key}: expected {type_name}, got {type(value).__name__} {value!r}")


def build_dataclass(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for name, value in values.items():
        key = f"{prefix}.{name}" if prefix else name
        if name not in names:
            raise ConfigError(f"unknown config key '{key}'{_closest(name, names)}")
        kwargs[name] = _check_value(key, value, hints[name])
    return cls(**kwargs)


def config_from_dict(values: dict[str, Any]) -> RunConfig:
    """Build and validate a RunConfig from nested plain values (e.g. parsed TOML or config.json)."""
    cfg = build_dataclass(RunConfig, values)
    validate(cfg)
    for index in range(len(cfg.phases)):
        cfg.phase(index)  # every phase must be a valid config too
    return cfg


# --------------------------------------------------------------------------------------------
# validation of combinations


def check_name(key: str, name: str) -> str:
    """A run (or sweep) name is one path component: not empty, not '.' or '..', no separators.
    It is joined to out_dir, so anything else could point a run (and --overwrite) elsewhere."""
    separators = {"/", "\\", os.sep, os.altsep or "/"}
    if name in ("", ".", "..") or any(sep in name for sep in separators) or "\0" in name:
        raise ConfigError(f"{key} = {name!r} is not a name: use one folder name without '/' or '\\' "
                          "(not '.' or '..'); put parent folders in out_dir")
    return name


def validate(cfg: RunConfig) -> None:
    """Reject impossible values with one line naming the key."""
    m, d, t = cfg.model, cfg.data, cfg.train
    check_name("name", cfg.name)
    if not cfg.out_dir:
        raise ConfigError("out_dir is empty: name the folder that holds run directories (default 'runs')")
    for key, allowed in CHOICES.items():
        value = cfg
        for part in key.split("."):
            value = getattr(value, part)
        if value not in allowed:
            raise ConfigError(
                f"{key} = {value!r} is not one of {', '.join(allowed)}{_closest(value, allowed)}"
            )
    positive = {
        "model.n_layer": m.n_layer, "model.n_head": m.n_head, "model.d_model": m.d_model,
        "model.block_size": m.block_size, "data.seq_len": d.seq_len, "train.steps": t.steps,
        "train.batch_size": t.batch_size, "train.grad_accum": t.grad_accum,
        "train.eval_batches": t.eval_batches, "train.log_every": t.log_every,
        "train.eval_every": t.eval_every, "train.max_nan_skips": t.max_nan_skips,
        "train.keep_checkpoints": t.keep_checkpoints, "model.smat.s_dim": m.smat.s_dim,
        "model.self_area.self_dim": m.self_area.self_dim, "model.tape.n_critics": m.tape.n_critics,
        "model.tape.coda_layers": m.tape.coda_layers, "model.tape.critic_layers": m.tape.critic_layers,
        "model.tape.rnn_layers": m.tape.rnn_layers, "model.tape.mlp_expand": m.tape.mlp_expand,
        "model.student_t_nu": m.student_t_nu,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{key} must be > 0, got {value}")
    non_negative = {
        "model.d_ff": m.d_ff, "model.vocab_size": m.vocab_size, "data.max_year": d.max_year,
        "data.max_documents": d.max_documents, "train.warmup_steps": t.warmup_steps,
        "train.grad_clip": t.grad_clip, "train.weight_decay": t.weight_decay,
        "train.checkpoint_every": t.checkpoint_every, "train.threads": t.threads,
        "train.sample_tokens": t.sample_tokens, "train.viz_every": t.viz_every, "model.self_area.hidden": m.self_area.hidden,
    }
    for key, value in non_negative.items():
        if value < 0:
            raise ConfigError(f"{key} must be >= 0, got {value}")
    if t.trainable != "all" and not m.self_area.enabled:
        raise ConfigError(f"train.trainable = '{t.trainable}' needs a Self Area; set model.self_area.enabled = true")
    if m.d_model % m.n_head:
        raise ConfigError(
            f"model.d_model = {m.d_model} is not divisible by model.n_head = {m.n_head}"
        )
    if d.seq_len > m.block_size:
        raise ConfigError(
            f"data.seq_len = {d.seq_len} exceeds model.block_size = {m.block_size}; "
            "lower data.seq_len or raise model.block_size"
        )
    if m.attention_layers and len(m.attention_layers) != m.n_layer:
        raise ConfigError(f"model.attention_layers has {len(m.attention_layers)} entries for model.n_layer = {m.n_layer}")
    for i, pattern in enumerate(m.attention_layers):
        if pattern not in CHOICES["model.attention"]:
            raise ConfigError(f"model.attention_layers[{i}] = {pattern!r} is not one of {', '.join(CHOICES['model.attention'])}")
    if m.local_block <= 0 or m.global_every < 0:
        raise ConfigError(f"model.local_block must be > 0 and model.global_every >= 0, got {m.local_block}, {m.global_every}")
    if m.local_kernel == "flex" and m.dropout:
        raise ConfigError(f"model.local_kernel = 'flex' applies no attention dropout but model.dropout = {m.dropout}; "
                          "use 'windows' or 'auto'")
    if not 0.0 < m.rope_fraction <= 1.0:
        raise ConfigError(f"model.rope_fraction must be in (0, 1], got {m.rope_fraction}")
    if m.rope_scale <= 0 or m.rope_theta <= 1:
        raise ConfigError(f"model.rope_scale must be > 0 and model.rope_theta > 1, got {m.rope_scale}, {m.rope_theta}")
    if m.pos == "rope" and 2 * int(m.head_dim * m.rope_fraction / 2) == 0:
        raise ConfigError(f"model.rope_fraction = {m.rope_fraction} rotates no dimension of {m.head_dim}-wide heads")
    if not 0.0 <= m.dropout < 1.0:
        raise ConfigError(f"model.dropout must be in [0, 1), got {m.dropout}")
    if not 0.0 < d.val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction must be in (0, 1), got {d.val_fraction}")
    if d.tokenizer == "bpe" and d.vocab_size < 260:
        raise ConfigError(f"data.vocab_size = {d.vocab_size} is too small for BPE (need >= 260)")
    if not 0.0 <= t.min_lr_ratio <= 1.0:
        raise ConfigError(f"train.min_lr_ratio must be in [0, 1], got {t.min_lr_ratio}")
    if t.lr <= 0:
        raise ConfigError(f"train.lr must be > 0, got {t.lr}")
    for name, beta in (("train.beta1", t.beta1), ("train.beta2", t.beta2)):
        if not 0.0 <= beta < 1.0:
            raise ConfigError(f"{name} must be in [0, 1), got {beta}")
    for stream, weight in d.mixture.items():
        if weight < 0:
            raise ConfigError(f"data.mixture.{stream} must be >= 0, got {weight}")
    if d.mixture and sum(d.mixture.values()) <= 0:
        raise ConfigError("data.mixture weights sum to 0; give at least one stream a weight > 0")


def resolve_vocab(cfg: RunConfig, vocab_size: int) -> None:
    """Fill model.vocab_size from the tokenizer (0 = take it); a smaller explicit size is an error."""
    if cfg.model.vocab_size == 0:
        cfg.model.vocab_size = vocab_size
    elif cfg.model.vocab_size < vocab_size:
        raise ConfigError(
            f"model.vocab_size = {cfg.model.vocab_size} is smaller than the tokenizer's {vocab_size}; "
            "set it to 0 to take the tokenizer's size"
        )


# --------------------------------------------------------------------------------------------
# TOML files and command-line overrides


def _parse_literal(text: str) -> Any:
    """Parse a command-line value as a TOML literal (`4`, `true`, `[\"J\", \"E\"]`), else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_overrides(args: typing.Sequence[str]) -> dict[str, Any]:
    """Turn `["--model.n_layer", "4", "--train.lr=3e-4"]` into {"model.n_layer": 4, "train.lr": 3e-4}."""
    overrides: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or len(arg) < 3:
            raise ConfigError(f"expected an override like --model.n_layer 4, got '{arg}'")
        key = arg[2:]
        if "=" in key:
            key, text = key.split("=", 1)
            i += 1
        else:
            if i + 1 >= len(args):
                raise ConfigError(f"override --{key} has no value")
            text = args[i + 1]
            i += 2
        overrides[key] = _parse_literal(text)
    return overrides


def apply_overrides(values: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys in a nested dict (a copy); the keys are checked later by `build_dataclass`."""
    merged = _deep_copy(values)
    for key, value in overrides.items():
        parts = key.split(".")
        node = merged
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"cannot set '{key}': '{part}' is not a section")
            node = child
        node[parts[-1]] = value
    return merged


def _deep_copy(values: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in values.items()}


def read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: invalid TOML ({err})") from None


def load_config(path: str | Path, overrides: typing.Sequence[str] | dict[str, Any] = ()) -> RunConfig:
    """Read a TOML config, apply dotted overrides, validate. The run name defaults to the file stem."""
    values = read_toml(path)
    values.setdefault("name", Path(path).stem)
    if not isinstance(overrides, dict):
        overrides = parse_overrides(overrides)
    return config_from_dict(apply_overrides(values, overrides))


__all__ = [
    "CHOICES",
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "PhaseConfig",
    "RunConfig",
    "SelfAreaConfig",
    "SmatConfig",
    "TapeConfig",
    "TrainConfig",
    "apply_overrides",
    "build_dataclass",
    "check_name",
    "config_from_dict",
    "load_config",
    "parse_overrides",
    "read_toml",
    "register_choice",
    "resolve_vocab",
    "validate",
]
