"""`slmlab export RUN --to hf OUT`: a trained run as a Hugging Face model folder.

    layout "gpt2" / "llama"  native transformers classes, no remote code (export/native.py)
    layout "remote"          SlmlabForCausalLM with trust_remote_code (export/modeling_slmlab.py)
    layout "auto"            the native layout that fits exactly, else remote

The folder gets config.json, model.safetensors, generation_config.json (which suppresses the ids
of an embedding padded past the tokenizer), the tokenizer
(tokenizer.json + tokenizer_config.json, export/tokenizer.py) and, for remote code,
modeling_slmlab.py. The export is written beside OUT and moved into place whole, then loaded back
with `AutoModelForCausalLM` and its logits compared with slmlab's on a probe batch (fp32): an
export that does not reproduce the model is an error, never a silent difference.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import ConfigError
from ..files import give_normal_modes, room_for
from ..runs.run_dir import load_run
from .native import best_native_layout, native_layout
from .tokenizer import to_hf_tokenizer

LAYOUTS = ("auto", "gpt2", "llama", "remote")
TOLERANCE = 1e-4  # max |Δ logit| an export may show against slmlab in fp32


@dataclass
class ExportResult:
    out: Path
    layout: str
    max_abs_diff: float
    not_native: dict[str, str] = field(default_factory=dict)  # {native layout: why it did not fit}

    def describe(self) -> str:
        why = "; ".join(f"not {k}: {v}" for k, v in self.not_native.items())
        folder = repr(str(self.out))  # as Python reads it back: quoted, a backslash escaped
        loader = (  # AutoTokenizer reads config.json too, and asks before running its code
            f"AutoModelForCausalLM and AutoTokenizer .from_pretrained({folder}, trust_remote_code=True)"
            if self.layout == "remote"
            else f"AutoModelForCausalLM.from_pretrained({folder})"
        )
        return (
            f"exported as {self.layout} to {self.out} (load with {loader}); logits match slmlab's to {self.max_abs_diff:.1e}"
            + (f" ({why})" if why and self.layout == "remote" else "")
        )


def _hf_model(cfg, model, layout: str):
    if layout == "remote":
        from .modeling_slmlab import SlmlabConfig, SlmlabForCausalLM
        from .remote import hf_config_values

        SlmlabConfig.register_for_auto_class()
        SlmlabForCausalLM.register_for_auto_class("AutoModelForCausalLM")
        hf = SlmlabForCausalLM(SlmlabConfig(**hf_config_values(cfg)))
        hf.model.load_state_dict(model.state_dict())
        return hf
    from transformers import GPT2LMHeadModel, LlamaForCausalLM

    native = native_layout(model, layout)
    hf = {"gpt2": GPT2LMHeadModel, "llama": LlamaForCausalLM}[layout](native.config)
    missing, unexpected = hf.load_state_dict(native.state_dict, strict=False)
    missing = [k for k in missing if not (cfg.model.tie_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise RuntimeError(f"the {layout} layout left {missing or unexpected} unmatched")
    return hf


def probe_ids(cfg, generator_seed: int = 0) -> torch.Tensor:
    """(2, T) random ids, T = min(block_size, 24): the batch an export is checked on."""
    generator = torch.Generator().manual_seed(generator_seed)
    return torch.randint(0, cfg.model.vocab_size, (2, min(cfg.model.block_size, 24)), generator=generator)


def max_logit_difference(model, hf_model, ids: torch.Tensor) -> float:
    with torch.no_grad():
        ours, _ = model(ids)
        theirs = hf_model(input_ids=ids).logits
    return float((ours.float() - theirs.float()).abs().max())


def _reloaded_difference(folder: Path, layout: str, model, cfg) -> float:
    """The largest |logit| difference between `model` and the export in `folder` as transformers
    loads it."""
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=layout == "remote", dtype=torch.float32).eval()
    return max_logit_difference(model, loaded, probe_ids(cfg))


@contextlib.contextmanager
def no_bars() -> Iterator[None]:
    """transformers without its progress bars ("Writing model shards", "Loading weights"): the
    export writes one small folder and reads it back to check it, which no one waits on."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def export_hf(run: str | Path, out: str | Path, layout: str = "auto") -> ExportResult:
    """Export `run`'s final model and tokenizer to the new folder `out` (see the module docstring)."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise ConfigError("export --to hf needs transformers: pip install 'slmlab[hf]'") from None
    if layout not in LAYOUTS:
        raise ConfigError(f"--layout must be one of {', '.join(LAYOUTS)}, not '{layout}'")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} already exists and is not empty; export into a new folder")
    cfg, model, tokenizer = load_run(run, "cpu")
    model = model.float().eval()
    fits, reasons = best_native_layout(model)
    if layout == "auto":
        layout = fits or "remote"
    elif layout != "remote" and reasons[layout]:
        raise ConfigError(f"{run} cannot be exported as native {layout}: {reasons[layout]}; use --layout remote (or auto)")
    try:
        hf_tokenizer = to_hf_tokenizer(tokenizer, cfg.model.block_size)
    except ValueError as err:
        raise ConfigError(f"{run}: {err}") from None
    hf = _hf_model(cfg, model, layout)
    hf.generation_config.eos_token_id = tokenizer.eos_id
    hf.generation_config.pad_token_id = tokenizer.eos_id
    if cfg.model.vocab_size > tokenizer.vocab_size:  # a padded embedding: its extra ids stand for no text
        hf.generation_config.suppress_tokens = list(range(tokenizer.vocab_size, cfg.model.vocab_size))
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as err:  # named by the folder asked for, not by the staging folder's random name
        raise OSError(err.errno, err.strerror, str(out)) from None
    try:
        with no_bars():
            with room_for(out.parent, "the exported model", "free space, or export to a disk with room", ConfigError):
                hf.save_pretrained(staging)
                hf_tokenizer.save_pretrained(staging)
            give_normal_modes(staging)
            difference = _reloaded_difference(staging, layout, model, cfg)
        if not difference <= TOLERANCE:
            raise ConfigError(
                f"the exported model's logits differ from slmlab's by {difference:.2e} (> {TOLERANCE}), "
                f"so nothing was written to {out}; please report this"
            )
        if out.exists():
            out.rmdir()
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ExportResult(out, layout, difference, {k: v for k, v in reasons.items() if v})
