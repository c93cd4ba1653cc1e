"""Rules a RunConfig must satisfy beyond its types; each violation is one line naming the key.

- run names are names (never a path: they are joined to out_dir)
- every extension choice is a registered name (registry.CHOICE_REGISTRIES)
- what the architecture does not offer is refused, not ignored: a variant section set away
  from its defaults under an architecture without that extension point, per-layer attention
  patterns under an architecture without layers
- ranges and combinations of the core fields
- the rules variants and plugins register (registry.CONFIG_CHECKS)
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any

from ..errors import ConfigError
from ..registry import (
    ARCHITECTURES,
    ATTENTION_PATTERNS,
    CHOICE_REGISTRIES,
    CONFIG_CHECKS,
    MODEL_CHECKS,
    MODEL_SECTIONS,
    TRACKERS,
    require_members,
)
from ..tables import counted
from .values import build_dataclass

BUILTIN_CORPORA = ("shakespeare", "brown")  # the data.source names of the corpora slmlab fetches (data/corpora's BUILTINS)


def check_name(key: str, name: str) -> str:
    """A run (or sweep) name is one path component: not empty, not '.' or '..', no separators,
    nothing unprintable (a NUL, a newline, an escape), no white space at either end (a name of
    spaces, or 'run ' beside 'run', is a typo that makes a folder no one can tell apart).
    It is joined to out_dir, so anything else could point a run (and --overwrite) elsewhere."""
    separators = {"/", "\\", os.sep, os.altsep or "/"}
    if name in ("", ".", "..") or any(sep in name for sep in separators) or not name.isprintable():
        raise ConfigError(
            f"{key} = {name!r} is not a name: use one folder name without '/', '\\' or control characters "
            "(not '.' or '..'); put parent folders in out_dir"
        )
    if name != name.strip():
        raise ConfigError(f"{key} = {name!r} begins or ends with white space: remove it")
    size = len(name.encode("utf-8", "surrogatepass"))
    if size > MAX_NAME_BYTES:
        raise ConfigError(
            f"{key} is {size} bytes long; a folder name holds at most "
            f"{MAX_NAME_BYTES} (the file system's 255, less the run's lock file '.NAME.lock'): shorten it"
        )
    return name


MAX_NAME_BYTES = 240


SEED_LIMIT = 2**64  # random, numpy and torch all take seeds in [0, 2**64)


def check_seed(key: str, seed: int) -> int:
    """A seed every generator takes (numpy refuses negatives, torch anything past 64 bits)."""
    if not 0 <= seed < SEED_LIMIT:
        raise ConfigError(f"{key} must be a whole number from 0 to 2**64 - 1, got {seed}")
    return seed


def offset_seed(seed: int, offset: int) -> int:
    """Another seed derived from `seed` (seed + offset, wrapped into [0, 2**64)): a seed near the top
    of the range stays one every generator takes."""
    return (seed + offset) % SEED_LIMIT


def value_at(cfg: Any, key: str) -> Any:
    """The value of a dotted setting ("model.smat.use_S") of a RunConfig."""
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def default_at(cfg: Any, key: str) -> Any:
    """The default of a top-level section's setting ("train.decay_fraction") of a RunConfig."""
    section, name = key.split(".")
    return getattr(type(getattr(cfg, section))(), name)


def check_choices(cfg) -> None:
    for registry in CHOICE_REGISTRIES:
        registry[value_at(cfg, registry.config_key)]  # an unknown name raises ConfigError
    for i, pattern in enumerate(cfg.model.attention_layers):
        if pattern not in ATTENTION_PATTERNS:
            raise ConfigError(f"model.attention_layers[{i}] = {pattern!r} is not one of {', '.join(ATTENTION_PATTERNS)}")
    for name in cfg.train.trackers:
        TRACKERS[name]  # an unknown tracker raises ConfigError
    if len(set(cfg.train.trackers)) != len(cfg.train.trackers):
        raise ConfigError(f"train.trackers names a tracker twice: {cfg.train.trackers}")


def first_change(section: Any) -> tuple[str, Any] | None:
    """(field, value) of the first field of a section dataclass that differs from its default."""
    default = type(section)()
    for f in dataclasses.fields(section):
        if getattr(section, f.name) != getattr(default, f.name):
            return f.name, getattr(section, f.name)
    return None


CLASS_MEMBERS = ("extension_points",)  # what slmlab reads of an architecture's class (model/protocol.py)


def check_architecture_support(m) -> None:
    """Refuse settings the chosen architecture would silently ignore."""
    architecture = require_members(ARCHITECTURES[m.arch], "architecture", m.arch, CLASS_MEMBERS)
    points = architecture.extension_points
    for name, section in MODEL_SECTIONS.items():
        change = first_change(getattr(m, name))
        if change is None:
            continue
        key = f"model.{name}.{change[0]} = {change[1]!r}"
        if section.arch and section.arch != m.arch:
            raise ConfigError(f"{key} applies only to model.arch = '{section.arch}', not '{m.arch}'; remove it")
        if section.extends and section.extends not in points:
            raise ConfigError(
                f"model.arch = '{m.arch}' takes no {section.extends} extension, so {key} would be ignored; remove it"
            )
    if (m.attention_layers or m.global_every) and "per_layer_attention" not in points:
        raise ConfigError(
            f"model.arch = '{m.arch}' has no per-layer attention patterns; "
            "remove model.attention_layers / model.global_every (model.attention applies to every attention)"
        )


def is_whole_number(value, minimum: int) -> bool:
    """Whether `value` is a whole number >= minimum: an int or anything with __index__ (a numpy
    integer, a 0-d integer tensor), not a bool, a float or a string."""
    return not isinstance(value, bool) and hasattr(value, "__index__") and value >= minimum


def check_whole_number(name: str, value, minimum: int) -> None:
    """Refuse a count that is not a whole number >= minimum (a bool, a float, a negative) by name."""
    if not is_whole_number(value, minimum):
        raise ConfigError(f"{name} must be a whole number >= {minimum}, got {value!r}")


TOKENIZER_KEYS = ("data.tokenizer", "data.vocab_size", "data.tiktoken_file")  # a trained run's: its tokenizer.json
INT64_LIMIT = 2**63  # torch and numpy raise OverflowError past int64
MAX_POSITION = 1e30  # a scaled RoPE position, well inside float32's 3.4e38
MAX_THREADS = 1024  # OpenMP fails to start ~20,000 and the process crashes
MAX_BPE_VOCAB = 2**24
MAX_PARAMETERS = 10**13  # ten trillion: more than any one machine holds, so a typo, not a plan


def check_size(m) -> None:
    """Refuse a model too large for any machine (n_layer = 10**20, say), which would otherwise spend
    hours creating layers before running out of memory. The count is the backbone's closed form
    (attention 4 d² + MLP 2 d d_ff per layer, embeddings), a lower bound for every architecture."""
    params = m.n_layer * (4 * m.d_model**2 + 2 * m.d_model * m.ff_dim) + (m.vocab_size + m.block_size) * m.d_model
    check_parameters(
        params, f"model.n_layer = {m.n_layer}, d_model = {m.d_model}, d_ff = {m.ff_dim}, block_size = {m.block_size}"
    )


def check_parameters(count: int, settings: str) -> None:
    """Refuse a parameter count past MAX_PARAMETERS, naming the `settings` that make it (a section's
    rule passes its own closed form: the widths and counts it adds)."""
    if count > MAX_PARAMETERS:
        raise ConfigError(f"{settings} make over {count:.1e} parameters, more than any machine holds; check those values")


def _check_int64(name: str, section) -> None:
    """Whole numbers past int64, where torch and numpy raise OverflowError (the seed has its own range)."""
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if isinstance(value, int) and not isinstance(value, bool) and f.name != "seed" and abs(value) >= INT64_LIMIT:
            raise ConfigError(f"{name}.{f.name} = {value} is too large: give a whole number below 2**63")


def _check_signs(positive: dict, non_negative: dict) -> None:
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{key} must be > 0, got {value}")
    for key, value in non_negative.items():
        if value < 0:
            raise ConfigError(f"{key} must be >= 0, got {value}")


def check_model(m, building: bool = False) -> None:
    """Reject a ModelConfig no model can be built from, with one line naming the key: validate()'s
    model rules, then those registered in MODEL_CHECKS. build_model and the architectures apply
    them again when `building` (a ModelConfig made or changed in code meets them too, each value's
    type first, as a loaded one's), and then the vocabulary size must be resolved."""
    if building:
        build_dataclass(type(m), m.to_dict(), prefix="model")
    if building and m.vocab_size <= 0:
        raise ConfigError("model.vocab_size must be set (it comes from the tokenizer)")
    check_architecture_support(m)
    positive = {
        "model.n_layer": m.n_layer,
        "model.n_head": m.n_head,
        "model.d_model": m.d_model,
        "model.block_size": m.block_size,
        "model.student_t_nu": m.student_t_nu,
        "model.local_block": m.local_block,
        "model.norm_eps": m.norm_eps,
    }
    non_negative = {
        "model.d_ff": m.d_ff,
        "model.vocab_size": m.vocab_size,
        "model.global_every": m.global_every,
    }
    _check_signs(positive, non_negative)
    if m.init_std <= 0:  # every weight starts at 0: no gradient reaches any, and the loss stays at ln V
        raise ConfigError(f"model.init_std must be > 0 (at 0 no weight ever receives a gradient), got {m.init_std}")
    _check_int64("model", m)
    for name, section in m.sections.items():
        _check_int64(f"model.{name}", section)
    if m.d_model % m.n_head:
        raise ConfigError(f"model.d_model = {m.d_model} is not divisible by model.n_head = {m.n_head}")
    check_size(m)
    if m.attention_layers and len(m.attention_layers) != m.n_layer:
        raise ConfigError(
            f"model.attention_layers has {counted(len(m.attention_layers), 'entries')} for model.n_layer = {m.n_layer}"
        )
    if m.local_kernel == "flex" and m.dropout:
        raise ConfigError(
            f"model.local_kernel = 'flex' applies no attention dropout but model.dropout = {m.dropout}; use 'windows' or 'auto'"
        )
    if not 0.0 < m.rope_fraction <= 1.0:
        raise ConfigError(f"model.rope_fraction must be in (0, 1], got {m.rope_fraction}")
    if m.rope_scale <= 0 or m.rope_theta <= 1:
        raise ConfigError(f"model.rope_scale must be > 0 and model.rope_theta > 1, got {m.rope_scale}, {m.rope_theta}")
    if m.block_size / m.rope_scale > MAX_POSITION:  # positions / rope_scale overflow float32 and the angles turn NaN
        raise ConfigError(
            f"model.rope_scale = {m.rope_scale:g} stretches {m.block_size} positions past what float32 holds; "
            f"give at least {m.block_size / MAX_POSITION:.1e}"
        )
    if m.pos == "rope" and 2 * int(m.head_dim * m.rope_fraction / 2) == 0:
        raise ConfigError(f"model.rope_fraction = {m.rope_fraction} rotates no dimension of {m.head_dim}-wide heads")
    if not 0.0 <= m.dropout < 1.0:
        raise ConfigError(f"model.dropout must be in [0, 1), got {m.dropout}")
    for check in MODEL_CHECKS:  # the rules variants and plugins register on their sections
        check(m)


PATH_SETTINGS = ("out_dir", "data.source", "data.cache_dir", "data.tiktoken_file")
DEVICE_NAMES = re.compile(r"auto|cpu(:0)?|mps(:0)?|cuda(:\d+)?")  # what training.runtime.resolve_device takes


def validate(cfg) -> None:
    """Reject impossible values with one line naming the key."""
    m, d, t = cfg.model, cfg.data, cfg.train
    check_name("name", cfg.name)
    if not cfg.out_dir:
        raise ConfigError("out_dir is empty: name the folder that holds run directories (default 'runs')")
    if not cfg.data.source:  # read as a path, '' would be the working directory, whatever it holds
        raise ConfigError(
            f"data.source is empty: name a built-in corpus ({', '.join(BUILTIN_CORPORA)}), a file, a folder or a glob "
            "(data.source = '.' reads the working directory)"
        )
    for key in PATH_SETTINGS:
        path = value_at(cfg, key)
        if "\0" in path:
            raise ConfigError(f"{key} = {path!r} holds a NUL character, which no path can; remove it")
    check_choices(cfg)
    check_seed("train.seed", t.seed)
    if not DEVICE_NAMES.fullmatch(t.device):  # whether this machine has it is known only where it runs
        raise ConfigError(f"train.device = {t.device!r} is not a device slmlab runs on: use auto, cpu, cuda, cuda:N or mps")
    check_model(m)
    positive = {
        "data.seq_len": d.seq_len,
        "train.steps": t.steps,
        "train.batch_size": t.batch_size,
        "train.grad_accum": t.grad_accum,
        "train.eval_batches": t.eval_batches,
        "train.log_every": t.log_every,
        "train.eval_every": t.eval_every,
        "train.max_nan_skips": t.max_nan_skips,
        "train.keep_checkpoints": t.keep_checkpoints,
    }
    non_negative = {
        "data.max_year": d.max_year,
        "data.max_documents": d.max_documents,
        "train.warmup_steps": t.warmup_steps,
        "train.grad_clip": t.grad_clip,
        "train.weight_decay": t.weight_decay,
        "train.checkpoint_every": t.checkpoint_every,
        "train.threads": t.threads,
        "train.sample_tokens": t.sample_tokens,
        "train.viz_every": t.viz_every,
    }
    _check_signs(positive, non_negative)
    _check_int64("data", d)
    _check_int64("train", t)
    if t.lr * t.weight_decay >= 1:  # decoupled decay multiplies each decayed weight by 1 - lr * wd every step
        raise ConfigError(
            f"train.lr * train.weight_decay = {t.lr * t.weight_decay:g}: each step multiplies every decayed weight by "
            f"1 - lr * weight_decay <= 0, zeroing or flipping it; keep train.weight_decay below 1 / train.lr = {1 / t.lr:g}"
        )
    if not t.threads <= MAX_THREADS:
        raise ConfigError(f"train.threads = {t.threads} is more threads than a machine can start (at most {MAX_THREADS})")
    if d.seq_len > m.block_size:
        raise ConfigError(
            f"data.seq_len = {d.seq_len} exceeds model.block_size = {m.block_size}; lower data.seq_len or raise model.block_size"
        )
    if not 0.0 < d.val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction must be in (0, 1), got {d.val_fraction}")
    if d.tokenizer == "bpe" and d.vocab_size < 260:
        raise ConfigError(f"data.vocab_size = {d.vocab_size} is too small for BPE (need >= 260)")
    if d.vocab_size > MAX_BPE_VOCAB:  # the BPE trainer sizes its tables by it: 2**31 aborts the process
        raise ConfigError(
            f"data.vocab_size = {d.vocab_size:,} is more than a tokenizer can use (at most {MAX_BPE_VOCAB:,}; "
            "real BPE vocabularies hold 32k-256k tokens)"
        )
    if not 0.0 <= t.min_lr_ratio <= 1.0:
        raise ConfigError(f"train.min_lr_ratio must be in [0, 1], got {t.min_lr_ratio}")
    if not 0.0 < t.decay_fraction <= 1.0:
        raise ConfigError(f"train.decay_fraction must be in (0, 1], got {t.decay_fraction}")

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
    for check in CONFIG_CHECKS:
        check(cfg)


def resolve_vocab(cfg, vocab_size: int) -> None:
    """Fill model.vocab_size from the tokenizer (0 = take it); a smaller explicit size is an error."""
    if cfg.model.vocab_size == 0:
        cfg.model.vocab_size = vocab_size
    elif cfg.model.vocab_size < vocab_size:
        raise ConfigError(
            f"model.vocab_size = {cfg.model.vocab_size} is smaller than the tokenizer's {vocab_size}; "
            "set it to 0 to take the tokenizer's size"
        )
