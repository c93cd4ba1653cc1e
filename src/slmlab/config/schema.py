"""The run configuration's schema: one `RunConfig` of typed sections (`model`, `data`, `train`,
optional curriculum `phases`).

Choices among extensions (model.pos, model.attention, model.head, model.norm, model.mlp, model.arch,
data.tokenizer, train.optimizer, train.trainable) are strings checked against the registries
(slmlab/registry.py); closed sets that belong to one field are `Literal`s. A variant's own settings
are a registered section of `ModelConfig` (`[model.smat]`, `[model.self_area]`, `[model.tape]`), its
dataclass living in the variant's file: `cfg.model.smat.use_S` reads it, `ModelConfig(smat=...)` and
`dataclasses.replace(cfg, smat=...)` set it.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from ..errors import ConfigError
from ..registry import MODEL_ATTRIBUTES, MODEL_SECTIONS, is_builtin_module, load_builtins
from .checks import check_model
from .other_names import setting_hint
from .values import setting_names


def _accepts_sections(cls: type) -> type:
    """Let the dataclass __init__ take registered sections as keyword arguments (smat=...), so
    `ModelConfig(smat=SmatConfig(...))` and `dataclasses.replace(cfg, smat=...)` work."""
    generated = cls.__init__
    names = {f.name for f in dataclasses.fields(cls)}

    @functools.wraps(generated)
    def __init__(self, *args, sections: dict | None = None, **kwargs):
        sections = dict(sections or {})
        for name in [k for k in kwargs if k not in names]:
            sections[name] = kwargs.pop(name)
        generated(self, *args, sections=sections, **kwargs)

    cls.__init__ = __init__
    return cls


@_accepts_sections
@dataclass
class ModelConfig:
    """Shape of the decoder. `vocab_size = 0` means "take it from the tokenizer"."""

    arch: str = "decoder"  # registry.ARCHITECTURES: "decoder" (the GPT-style backbone) or one a variant registers
    n_layer: int = 4  # transformer blocks (the decoder's depth)
    n_head: int = 4  # attention heads per layer; d_model must be a multiple
    d_model: int = 128  # width of the residual stream and the embeddings
    d_ff: int = 0  # 0 -> 4 * d_model
    block_size: int = 256  # the longest sequence the model reads (learned positions are this many)
    vocab_size: int = 0  # 0 -> the tokenizer's; larger pads the embedding (e.g. 50,304 for GPT-2 BPE)
    dropout: float = 0.0  # dropout in training: attention weights, embeddings, attention and MLP outputs (0 = off)
    norm: str = "layernorm"  # registry.NORMS: "layernorm" | "rmsnorm"
    mlp: str = "gelu"  # registry.MLPS: "gelu" (fc, tanh-GELU, proj) | "swiglu" (gated; hidden 2/3 of d_ff: same parameters)
    norm_eps: float = 1e-5  # epsilon of every norm layer
    pos: str = "learned"  # registry.POSITIONS: "learned" | "rope" | "sinusoidal"
    rope_theta: float = 10000.0  # RoPE's base: the longest rotation period
    rope_fraction: float = 1.0  # share of each head's dimensions that RoPE rotates
    rope_scale: float = 1.0  # linear position interpolation: positions are divided by it
    attention: str = "full"  # registry.ATTENTION_PATTERNS: "full" | "block_local"
    attention_layers: list[str] = field(default_factory=list)  # per-layer patterns (overrides `attention`)
    global_every: int = 0  # with a local pattern: every k-th layer uses full attention
    local_block: int = 256  # block length B of "block_local"
    local_kernel: Literal["auto", "windows", "flex"] = (
        "auto"  # how block_local runs: "windows" (SDPA) | "flex" (FlexAttention) | "auto" (faster on CUDA)
    )
    bias: bool = True  # biases in the linear and norm layers
    tie_embeddings: bool = True  # the output head shares the token embedding's weights
    init_std: float = 0.02  # std of the normal initialisation (residual projections scaled by 1/sqrt(2 n_layer))
    head: str = "linear"  # registry.HEADS: "linear" (softmax of h·w_v) | "student_t" (-(nu+D)/2 log(1 + |h-w_v|^2/nu))
    student_t_nu: float = 2.718281828459045  # nu of the "student_t" head (its degrees of freedom)
    sections: dict[str, Any] = field(default_factory=dict)  # registered [model.<name>] sections, by name

    SECTIONS: ClassVar = MODEL_SECTIONS

    def __post_init__(self) -> None:
        """Every registered section is present (defaults where not given); a section given as a
        table is built and checked like the rest of the config."""
        load_builtins()
        for name, value in list(self.sections.items()):
            section = MODEL_SECTIONS.get(name)
            if section is None:
                options = [*setting_names(ModelConfig), *MODEL_SECTIONS]
                raise ConfigError(f"unknown config key 'model.{name}'{setting_hint(name, options, 'model')}")
            if not isinstance(value, section.config):
                from .values import check_value

                self.sections[name] = check_value(f"model.{name}", value, section.config)
        for name, section in MODEL_SECTIONS.items():
            self.sections.setdefault(name, section.config())

    def check(self, building: bool = False) -> None:
        """Refuse settings no model can be built from, in one line naming the key
        (config.checks.check_model; `building`: each value's type too, and a resolved vocabulary)."""
        check_model(self, building)

    def __getattr__(self, name: str) -> Any:
        """`cfg.smat`: a registered section (one registered after this config was made, a
        plugin's, starts at its defaults)."""
        sections = self.__dict__.get("sections")
        if sections is None or name.startswith("__"):
            raise AttributeError(name)
        if name not in sections:
            section = MODEL_SECTIONS.get(name)
            if section is None:
                raise AttributeError(f"'ModelConfig' has no field or section '{name}'")
            sections[name] = section.config()
        return sections[name]

    def to_dict(self) -> dict[str, Any]:
        """Plain nested values, sections as `model.<name>` tables (what config.json holds). A
        plugin's section at its defaults is left out: a run that does not use the plugin must
        not need it to be read back."""
        values = {f.name: copy.deepcopy(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "sections"}
        for name, section in MODEL_SECTIONS.items():
            value = getattr(self, name)
            if is_builtin_module(section.config.__module__) or value != section.config():
                values[name] = dataclasses.asdict(value)
        return values

    @property
    def ff_dim(self) -> int:
        return self.d_ff or 4 * self.d_model

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def layer_patterns(self) -> list[str]:
        """Each layer's attention pattern (`layer_pattern` of every layer)."""
        if self.attention_layers:
            return list(self.attention_layers)
        return [self.layer_pattern(layer) for layer in range(self.n_layer)]

    @property
    def pattern_names(self) -> set[str]:
        """The attention patterns some layer uses (the set of layer_patterns, without the list)."""
        if self.attention_layers:
            return set(self.attention_layers)
        every = self.global_every
        full = {"full"} if every and every <= self.n_layer else set()
        return full if every == 1 else full | {self.attention}

    def layer_pattern(self, layer: int) -> str:
        """Layer `layer`'s attention pattern: model.attention_layers's entry if given, else
        model.attention, "full" for every global_every-th layer (k-1, 2k-1, ...) when
        global_every > 0. Without the list: a model asks it once for each of its n_layer layers."""
        if self.attention_layers:
            return self.attention_layers[layer]
        every = self.global_every
        return "full" if every and layer % every == every - 1 else self.attention


MODEL_ATTRIBUTES.update(f.name for f in dataclasses.fields(ModelConfig))  # no section may shadow these
MODEL_ATTRIBUTES.update(name for name in dir(ModelConfig) if not name.startswith("_"))


@dataclass
class DataConfig:
    """Where text comes from, how it is filtered and tokenized, and how windows are cut."""

    source: str = "shakespeare"  # "shakespeare" | "brown" | a .txt/.md file, directory or glob | .jsonl/.json/.csv/.tsv records | .parquet file(s) | a save_to_disk folder
    genres: list[str] = field(default_factory=list)  # Brown letters/names or Shakespeare groups
    max_year: int = 0  # 0 = no cut-off; else drop documents whose known year is later
    allow_unknown_year: bool = True  # with max_year: keep documents whose year is unknown
    max_documents: int = 0  # 0 = all; else the first N documents (a small slice for trials)
    text_field: str = "text"  # for .jsonl, Parquet and saved-dataset sources: the text's key or column
    doc_separator: str = ""  # "" = one document per .txt/.md file; else split files at this marker ("<EOS>"), genre = file stem
    tokenizer: str = "char"  # registry.TOKENIZERS: "byte" | "char" | "bpe" | "gpt2"
    vocab_size: int = 4096  # for "bpe"
    tiktoken_file: str = ""  # for "gpt2": path to gpt2.tiktoken (else $TIKTOKEN_CACHE_DIR)
    val_fraction: float = 0.1  # share of documents held out for validation (by a hash of each id; one document: its tail)
    seq_len: int = 256  # tokens per training window (at most model.block_size)
    mixture: dict[str, float] = field(default_factory=dict)  # stream (genre) -> sampling weight
    cache_dir: str = ""  # "" -> $SLMLAB_CACHE or ~/.cache/slmlab


@dataclass
class TrainConfig:
    """Optimisation, evaluation, logging and checkpointing."""

    steps: int = 1000  # optimizer steps
    batch_size: int = 32  # windows per micro-batch, summed over data-parallel ranks
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 1e-3  # peak learning rate, reached after warmup_steps
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 100  # linear warm-up from 0 to lr
    weight_decay: float = 0.1  # decoupled decay of the linear layers' matrices (not norms, biases, embeddings)
    beta1: float = 0.9  # AdamW's first-moment decay
    beta2: float = 0.95  # AdamW's second-moment decay
    grad_clip: float = 1.0  # 0 = no clipping
    optimizer: str = "adamw"  # registry.OPTIMIZERS: "adamw" | "muon" (Muon on hidden matrices + AdamW) | "wolf"
    schedule: Literal["cosine", "wsd"] = "cosine"  # after warmup: cosine decay, or warmup-stable-decay
    decay_fraction: float = 0.2  # "wsd": the last share of steps, decaying linearly to lr * min_lr_ratio
    seed: int = 1337  # the initial weights, the windows drawn and dropout
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N" | "mps"
    dtype: Literal["fp32", "bf16"] = "fp32"  # bf16: autocast
    compile: bool = False  # torch.compile the model (pays on GPUs; docs/performance.md)
    trainable: str = "all"  # registry.TRAINABLE: "all" | "self_area" | "self_area+norms" (SMT stage 2)
    parallel: Literal["ddp", "fsdp"] = "ddp"  # under torchrun: "ddp" (replicated) | "fsdp" (FSDP2, sharded); batch_size is global
    threads: int = 0  # CPU threads; 0 = torch default
    eval_every: int = 100  # steps between validation losses (and at the last step)
    eval_batches: int = 20  # batches of the fixed validation sample each evaluation scores
    log_every: int = 10  # steps between training-loss records in metrics.jsonl
    checkpoint_every: int = 500  # 0 = only the final weights
    keep_checkpoints: int = 2  # the most recent checkpoints kept; older ones are removed
    max_nan_skips: int = 5  # abort after this many consecutive non-finite steps
    sample_tokens: int = 200  # length of the sample printed at the end (0 = none)
    viz_every: int = 0  # save an attention/loss frame every N steps into RUN/viz/frames (0 = none)
    trackers: list[str] = field(default_factory=list)  # registry.TRACKERS: any of "tensorboard", "wandb", "trackio"
    tracker_project: str = "slmlab"  # the wandb / trackio project
    tracker_group: str = ""  # the run's group in wandb / trackio ("" = none; a sweep groups its runs under its name)
    tracker_tags: list[str] = field(default_factory=list)  # wandb tags (a sweep adds the variant and seed)


@dataclass
class PhaseConfig:
    """One phase of a curriculum: what it changes relative to the previous phase (None or an empty
    mixture = keep). Each phase starts from the previous phase's final weights."""

    name: str = "phase"  # the phase's name: its run folder phaseN_<name>, and overrides (phases.<name>.steps)
    steps: int | None = None  # train.steps of this phase (none: the previous phase's)
    seq_len: int | None = None  # data.seq_len
    batch_size: int | None = None  # train.batch_size
    attention: str | None = None  # model.attention
    rope_scale: float | None = None  # model.rope_scale
    lr: float | None = None  # train.lr
    warmup_steps: int | None = None  # train.warmup_steps
    min_lr_ratio: float | None = None  # train.min_lr_ratio
    mixture: dict[str, float] = field(default_factory=dict)  # data.mixture ({}: the previous phase's)
    carry_optimizer: bool = False  # False: a fresh AdamW state for this phase

    FIELDS = {
        "steps": "train.steps",
        "seq_len": "data.seq_len",
        "batch_size": "train.batch_size",
        "attention": "model.attention",
        "rope_scale": "model.rope_scale",
        "lr": "train.lr",
        "warmup_steps": "train.warmup_steps",
        "min_lr_ratio": "train.min_lr_ratio",
        "mixture": "data.mixture",
    }

    def overrides(self) -> dict[str, Any]:
        return {key: getattr(self, name) for name, key in self.FIELDS.items() if getattr(self, name) not in (None, {})}


@dataclass
class RunConfig:
    """A whole run: name, output root, the three sections and optional curriculum phases."""

    name: str = "run"  # the run's folder name under out_dir (default: the config file's stem)
    out_dir: str = "runs"  # the folder runs are written under
    plugins: list[str] = field(default_factory=list)  # plugin files (absolute once loaded) or module names: slmlab/plugins.py
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    phases: list[PhaseConfig] = field(default_factory=list)

    def phase(self, index: int) -> RunConfig:
        """The full config of phase `index`: the run's config with the changes of phases 0..index
        applied in order (a phase keeps what earlier phases set unless it changes it). Its sub-run
        lives inside this run's directory."""
        from .loading import apply_overrides, config_from_dict

        phase = self.phases[index]
        values = {k: v for k, v in self.to_dict().items() if k != "phases"}
        overrides = {}
        for earlier in self.phases[: index + 1]:
            overrides.update(earlier.overrides())
        overrides.update(name=f"phase{index + 1}_{phase.name}", out_dir=str(Path(self.out_dir) / self.name))
        if self.train.trackers:  # a tracker shows the phases under the curriculum (a sweep's group kept), tagged with its name
            overrides["train.tracker_group"] = self.train.tracker_group or self.name
            overrides["train.tracker_tags"] = list(dict.fromkeys([*self.train.tracker_tags, self.name]))
        try:
            return config_from_dict(apply_overrides(values, overrides))
        except ConfigError as err:
            raise ConfigError(f"phases[{index}] ({phase.name}): {err}{self.setter_hint(index, str(err))}") from None

    def setter_hint(self, index: int, message: str) -> str:
        """Where to change a setting a rule's `message` names that one of phases 0..index sets (the
        last that does): " (phase B sets seq_len: change phases.B.seq_len)", else
        "". The rule's own advice ("lower data.seq_len") names a setting the phase replaces."""
        for phase in reversed(self.phases[: index + 1]):
            for key in phase.overrides():
                if re.search(rf"\b{re.escape(key)}\b", message):
                    setting = key.partition(".")[2]
                    return f" (phase {phase.name} sets {setting}: change phases.{phase.name}.{setting})"
        return ""

    def phase_configs(self) -> list[RunConfig]:
        """What trains: each phase's full config (`phase`) in order, or this config without phases."""
        return [self.phase(index) for index in range(len(self.phases))] or [self]

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["model"] = self.model.to_dict()
        return values

    def settings(self) -> dict[str, Any]:
        """Every setting by its dotted key ("model.smat.use_S": True); a mixture is one value, and
        a curriculum's phase's settings are keyed by its name as overrides name them
        ("phases.B.seq_len": 512, the settings it leaves to earlier phases None)."""

        def flat(values: dict, prefix: str) -> dict[str, Any]:
            out = {}
            for key, value in values.items():
                if isinstance(value, dict) and key != "mixture":
                    out.update(flat(value, f"{prefix}{key}."))
                else:
                    out[f"{prefix}{key}"] = value
            return out

        values = self.to_dict()
        phases = {phase.pop("name"): phase for phase in values.pop("phases")}  # the names are distinct (checked)
        return flat(values, "") | flat(phases, "phases.")

    def __reduce__(self):
        """Pickled as plain values (to a sweep's worker processes): rebuilding imports the
        plugins its sections come from, which a fresh process has not imported yet."""
        from .loading import config_from_dict

        return config_from_dict, (self.to_dict(),)
