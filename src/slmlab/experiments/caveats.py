"""Where a sweep's table compares something other than what it seems to: said when the sweep is
read (a warning) and under the table (results.md).

- Two variants with the same settings (a table copied and left unedited, a setting given its
  default): paired by seed they train one model on the same batches, so their row compares nothing.
- A variant validated on other text than the baseline (another data.source, val_fraction, year
  cut-off, genre or document selection): its Δ is the difference between two held-out sets as much
  as between two models.
- A variant scored on windows of another length (data.seq_len): a token's loss falls with the
  context before it, so its Δ counts the windows' length as well as the model.
- Without a [budget], a variant that trains on more or fewer tokens than the baseline (other
  train.steps, batch_size, seq_len or grad_accum): its Δ counts the training as well as the idea.
- A variant with another tokenizer (data.tokenizer, or BPE's data.vocab_size): its perplexity counts
  other units, so the per-token columns (Δ%, its CI, wins, t-test, sign test, seeds for 80%) are
  left out for it ("–"), and Δ bpb, in bits per byte of the same text, compares it.
- Runs whose speed was measured with other threads or on another device (a sweep run again with
  another --jobs, or on another machine): their tokens/s do not compare (`speed_caveat`).
"""

from __future__ import annotations

import json
import os

from ..config import RunConfig
from ..config.values import toml_literal
from ..data.corpora import BUILTINS
from ..tables import counted, human
from .budget import tokens_per_step

VALIDATION_TEXT = (
    "data.source",
    "data.genres",
    "data.max_year",
    "data.allow_unknown_year",
    "data.max_documents",
    "data.text_field",
    "data.doc_separator",
    "data.val_fraction",
)
WINDOW_LENGTH = ("data.seq_len",)
TOKEN_UNITS = ("data.tokenizer", "data.vocab_size")
UNREAD = ("name", "out_dir", "train.tracker")  # settings two runs of one model may differ in


def _scored(cfg: RunConfig) -> dict:
    """The settings of what a run is scored with: its (last phase's) validation text and tokenizer,
    a corpus path made absolute (two spellings of one folder are one corpus)."""
    settings = cfg.phase_configs()[-1].settings()
    chosen = {key: settings[key] for key in (*VALIDATION_TEXT, *WINDOW_LENGTH, *TOKEN_UNITS)}
    source = chosen["data.source"]
    if source not in BUILTINS:
        chosen["data.source"] = os.path.abspath(os.path.expanduser(source))
    if isinstance(chosen["data.genres"], list):
        chosen["data.genres"] = sorted(chosen["data.genres"])
    return chosen


def _differences(cfg: RunConfig, baseline: RunConfig, keys: tuple[str, ...]) -> list[str]:
    """ "key: value vs baseline value" for each of `keys` where the two configs score differently."""
    own, base = _scored(cfg), _scored(baseline)
    return [f"{key} = {toml_literal(own[key])} vs {toml_literal(base[key])}" for key in keys if own[key] != base[key]]


def other_units(configs: dict[str, RunConfig], baseline: str) -> set[str]:
    """The variants (`configs`: variant -> a run config of it) whose tokenizer is not the
    baseline's: their perplexity counts other units."""
    return {variant for variant, cfg in configs.items() if _differences(cfg, configs[baseline], TOKEN_UNITS)}


def training_tokens(cfg: RunConfig) -> int:
    """The tokens a run trains on: steps x batch_size x seq_len x grad_accum, phase by phase."""
    return sum(tokens_per_step(phase) * phase.train.steps for phase in cfg.phase_configs())


def caveats(configs: dict[str, RunConfig], baseline: str, budget: bool = False) -> list[str]:
    """One sentence per caveat of comparing `configs` (variant -> a run config of it) with the
    baseline's (see the module docstring), in variant order; `budget`: the sweep holds a [budget],
    which sets each variant's steps (their tokens differ by design, or by a step's rounding)."""
    base = configs[baseline]
    notes, seen = [], {}
    for variant, cfg in configs.items():
        settings = {k: v for k, v in cfg.settings().items() if not k.startswith(UNREAD)}
        same = seen.setdefault(json.dumps(settings, sort_keys=True, default=str), variant)
        if same != variant:
            notes.append(
                f"variants '{same}' and '{variant}' have the same settings, so each seed trains one model twice and "
                "their comparison measures nothing (on a CPU the numbers are identical); change or remove one"
            )
            continue
        if variant == baseline:
            continue
        text = _differences(cfg, base, VALIDATION_TEXT)
        if text:
            notes.append(
                f"variant '{variant}' is validated on other text than the baseline ({'; '.join(text)}): its Δ "
                "compares two held-out sets as well as two models; `slmlab eval SWEEP --text FILE` scores every run on one text"
            )
        if _differences(cfg, base, WINDOW_LENGTH):
            length, base_length = cfg.phase_configs()[-1].data.seq_len, base.phase_configs()[-1].data.seq_len
            notes.append(
                f"variant '{variant}' is scored on windows of {length} tokens, the baseline on {base_length} (data.seq_len): a "
                "token's loss falls with the context before it, so its Δ counts the windows' length as well as the "
                "model; give both one data.seq_len to compare the models alone"
            )
        own, other = training_tokens(cfg), training_tokens(base)
        if own != other and not budget:
            notes.append(
                f"variant '{variant}' trains on {own / other:.3g}x the baseline's tokens ({human(own)} vs {human(other)}: "
                "train.steps x batch_size x seq_len x grad_accum) and the sweep has no [budget]: its Δ counts the "
                "training as well as the idea; a [budget] of tokens or flops compares at equal cost"
            )
        units = _differences(cfg, base, TOKEN_UNITS)
        if units:
            notes.append(
                f"variant '{variant}' has another tokenizer than the baseline ({'; '.join(units)}): its perplexity "
                "counts other units, so its Δ%, wins and tests on perplexity are left out ('–'); Δ bpb compares it"
            )
    return notes


def speed_caveat(measured: list[tuple[str, int]]) -> list[str]:
    """A note where the finished runs trained with different thread counts or on different
    devices (`measured`: each run's recorded (train.device, train.threads)): the tokens/s column
    then compares settings as well as variants."""
    kinds = sorted(set(measured), key=str)
    if len(kinds) <= 1:
        return []
    listed = ", ".join(
        f"{device} with {counted(threads, 'threads') if threads else 'its default threads'}" for device, threads in kinds
    )
    return [
        f"the runs' tokens/s were measured in different settings ({listed}: a sweep run again with another --jobs, "
        "or elsewhere): compare speeds only between runs measured alike"
    ]
