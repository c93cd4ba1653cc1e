"""int8 inference (`slmlab quantize RUN --int8`): dynamic quantisation of every `nn.Linear` with
PyTorch's quantisation tooling (int8 weights; activations quantised on the fly; CPU kernels).

The int8 weights go to RUN/model_int8.pt (a state dict of tensors and packed parameters, with the
SHA-256 of the fp32 weights it was made from, loaded with `torch.load(weights_only=True)`), and the
file's own SHA-256 to RUN/model_int8.sha256.json (torch.load reads a flipped byte without a word);
`load_int8` checks it, rebuilds the model from the run's config, quantises its structure and loads
them, refusing a file made from other weights (a run resumed after it was quantised). Embeddings,
norms and a tied LM head stay fp32. The comparison table sets file size, CPU generation speed
and validation perplexity of the int8 model next to the fp32 one's, with the change in perplexity
and its 95% CI over the validation batches, paired (experiments/stats.py's perplexity_change).
"""

from __future__ import annotations

import copy
import hashlib
import statistics
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from ..experiments.stats import percent_interval, perplexity_change
from ..files import atomic_write, atomic_write_text, json_text, read_json, sha256_file
from ..runs.checkpoints import CheckpointError, verify_file
from ..runs.run_dir import load_run
from ..tables import command_line, format_number, human, markdown_table

INT8_FILE = "model_int8.pt"
INT8_SUM = "model_int8.sha256.json"


class Int8Linear(torch.ao.nn.quantized.dynamic.Linear):
    """PyTorch's dynamic int8 linear layer, taking a 1-D input (in,) -> (out,) as nn.Linear does:
    the quantised kernel needs at least 2 dimensions, and a layer may be fed a single vector (the
    Self Area refines its one persona state so)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x[None])[0] if x.dim() == 1 else super().forward(x)


def quantize_int8(model: nn.Module) -> nn.Module:
    """A CPU copy of `model` whose nn.Linear layers are int8 dynamically quantised (Int8Linear)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the eager quantisation API announces its successor, torchao
        return torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(model).cpu().eval(), {nn.Linear}, dtype=torch.qint8, mapping={nn.Linear: Int8Linear}
        )


def weights_digest(model: nn.Module) -> str:
    """SHA-256 over the model's parameters and buffers (names, shapes, bytes), in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{name}{tuple(data.shape)}{data.dtype}".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_int8(quantized: nn.Module, run: str | Path, source_sha256: str) -> Path:
    """Save the int8 state and the digest of the fp32 weights it was made from, then the file's
    own SHA-256 beside it."""
    payload = {"source_sha256": source_sha256, "int8_state": quantized.state_dict()}
    path = atomic_write(Path(run) / INT8_FILE, lambda tmp: torch.save(payload, tmp))
    atomic_write_text(Path(run) / INT8_SUM, json_text({INT8_FILE: sha256_file(path)}) + "\n")
    return path


def _check_int8_file(run: str | Path, path: Path) -> None:
    """CheckpointError unless `path` has the SHA-256 recorded when it was written (files of older
    slmlab, without the record, are taken as they are)."""
    remake = f"make it again with `{command_line('slmlab', 'quantize', run, '--int8')}`"
    record = Path(run) / INT8_SUM
    if not record.is_file():
        return
    recorded = read_json(record, "checksum of the int8 model", CheckpointError, remake).get(INT8_FILE)
    if not isinstance(recorded, str):
        raise CheckpointError(f"checksum of the int8 model {record} names no {INT8_FILE}; {remake}")
    verify_file(path, recorded, remake)


def load_int8(run: str | Path):
    """(config, int8 model on CPU, tokenizer) of a run quantised by `slmlab quantize`."""
    path = Path(run) / INT8_FILE
    if not path.is_file():
        raise CheckpointError(f"{run} has no {INT8_FILE}; make it with `{command_line('slmlab', 'quantize', run, '--int8')}`")
    _check_int8_file(run, path)
    cfg, model, tokenizer = load_run(run, "cpu")
    quantized = quantize_int8(model)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # packed int8 parameters still use the TypedStorage API
            saved = torch.load(path, weights_only=True)
        source = saved.get("source_sha256")  # None in files of older slmlab: a bare state dict
        quantized.load_state_dict(saved.get("int8_state", saved))
    except Exception as err:  # unpickling and shape errors of many kinds: report them as corruption
        raise CheckpointError(f"{path} is corrupt or from another model ({type(err).__name__})") from None
    if source is not None and source != weights_digest(model):
        raise CheckpointError(
            f"{path} was made from other weights than {run} holds now (trained on since, or replaced); "
            f"make it again with `{command_line('slmlab', 'quantize', run, '--int8')}`"
        )
    return cfg, quantized, tokenizer


@torch.no_grad()
def generation_speed(model: nn.Module, prompt: list[int], tokens: int = 64, repeats: int = 5) -> tuple[float, float, float]:
    """Greedy tokens/s on CPU (KV cache on), batch 1: one full-length warm-up, then `repeats`
    timed generations -> (median, slowest, fastest) tokens/s."""
    idx = torch.tensor([prompt])
    model.generate(idx, tokens, temperature=0)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.generate(idx, tokens, temperature=0)
        rates.append(tokens / (time.perf_counter() - start))
    return statistics.median(rates), min(rates), max(rates)


def file_size(path: Path) -> str:
    """The file's size in words, "–" where there is none (a run read from a checkpoint)."""
    return human(path.stat().st_size, "B") if path.is_file() else "–"


def quantize_report(run: str | Path, batches: int = 20) -> tuple[str, Path]:
    """Quantise a run to int8 (saved as RUN/model_int8.pt) and compare it with fp32: file size,
    CPU generation speed and validation perplexity -> (the Markdown table, the int8 file). The
    table is saved as RUN/quantize.md."""
    from ..data.tokens import prepare_tokens
    from ..runs.derived import record_derived, weights_identity
    from ..runs.metrics import perplexity
    from ..runs.run_dir import check_trained_streams, model_run
    from ..training.validation import evaluate_by_batch

    weights = weights_identity(run)
    cfg, model, tokenizer = load_run(run, "cpu")
    _, data = prepare_tokens(cfg.data, tokenizer)
    check_trained_streams(run, cfg, data.manifest["sha256"])  # before writing anything
    quantized = quantize_int8(model)
    path = save_int8(quantized, run, weights_digest(model))
    prompt = data.val.tokens[: min(16, cfg.model.block_size)].astype("int64").tolist()
    rows, cpu, scores = [], torch.device("cpu"), {}
    weights_file = model_run(run)[0].final_weights  # a curriculum's: its last phase's
    for label, m, size in (("fp32", model, file_size(weights_file)), ("int8", quantized, file_size(path))):
        loss, per_batch = evaluate_by_batch(
            m, data.val, cfg.data.seq_len, cfg.train.batch_size, batches, cpu, progress=f"scoring {label}"
        )
        scores[label] = (loss, per_batch)
        median, slowest, fastest = generation_speed(m, prompt)
        speed = f"{median:,.1f} ({slowest:,.1f}–{fastest:,.1f})"
        change = perplexity_change(loss - scores["fp32"][0], per_batch, scores["fp32"][1]) if label == "int8" else {}
        delta = f"{format_number(change['delta_pct'], '+.2f', '%')} {percent_interval(change)}" if change else "–"
        rows.append((label, size, speed, f"{perplexity(loss):.3f}", delta))
    header = "CPU generation, tokens/s: median (range) of 5 runs"
    table = markdown_table(("model", "file size", header, "validation ppl", "Δ% ppl vs fp32 [95% CI]"), rows)
    atomic_write_text(Path(run) / "quantize.md", f"# int8 dynamic quantisation of {Path(run).name}\n\n{table}\n")
    record_derived(run, [Path(run) / "quantize.md", path], command_line("slmlab", "quantize", run, "--int8"), weights)
    return table, path
