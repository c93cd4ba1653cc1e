"""Prompt-suite evaluation: fixed prompts -> a reproducible Markdown report of generations.

A suite is TOML (`[[prompt]]` tables) or JSON lines, each with id, prompt, max_tokens,
temperature and seed (top_k and top_p optional). Every generation uses its own seeded
generator, so the same run and suite give the same report. The default suite ships with slmlab
(suites/control_systems.toml).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import ConfigError, build_dataclass, check_seed, read_toml
from ..errors import TokenizerError
from ..files import atomic_write_text, check_replaceable, file_kind, parse_json, read_text
from ..model.sampling import check_sampling, greedy_ignores
from ..registry import closest
from ..tables import code_block, code_span, command_line, counted, plain_text
from .score import announce_compile, trained_context, warn_past_trained_context

DEFAULT_SUITE = Path(__file__).parent / "suites" / "control_systems.toml"
REPORT_TITLE = "# Prompt suite "  # a report's first words: an --out file that starts so may be replaced


@dataclass
class Prompt:
    id: str
    prompt: str
    max_tokens: int = 100
    temperature: float = 0.8
    seed: int = 0
    top_k: int = 0
    top_p: float = 1.0


def load_suite(path: str | Path) -> list[Prompt]:
    path = Path(path)
    kind = file_kind(path)
    if kind == "missing":
        raise ConfigError(f"prompt suite not found: {path}")
    if kind != "file":  # its suffix says how to read it, and a pipe's name has none
        raise ConfigError(f"{path} is a {kind}, not a prompt suite: give a .toml or .jsonl file")
    if path.suffix.lower() == ".jsonl":
        records = []
        for number, line in enumerate(read_text(path, "prompt suite", ConfigError, "save it as UTF-8 text").splitlines(), 1):
            if line.strip():
                record = parse_json(line, f"{path}:{number}", ConfigError, "a JSON object")
                if getattr(record, "repeated", None):  # json keeps the last in silence
                    raise ConfigError(
                        f"{path}:{number}: names {', '.join(map(repr, sorted(record.repeated)))} more than once: keep one"
                    )
                records.append(record)
    else:
        values = read_toml(path)
        others = [key for key in values if key != "prompt"]
        if others:  # [[prompts]], a run config's [model]: ignored in silence, or "no prompts"
            raise ConfigError(
                f"{path}: a prompt suite holds [[prompt]] tables only, not {others}{closest(others[0], ['prompt'])}"
            )
        records = values.get("prompt", [])
        if isinstance(records, dict):  # one [prompt] table: a suite of one
            records = [records]
        elif not isinstance(records, list):
            raise ConfigError(
                f"{path}: prompt = {records!r} is not a prompt table: write each prompt as a [[prompt]] table "
                'with id = "..." and prompt = "..."'
            )
    if not records:
        raise ConfigError(f"{path}: the suite has no prompts")
    try:
        prompts = [build_dataclass(Prompt, r, prefix=f"prompt[{i}]", settings=False) for i, r in enumerate(records)]
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    for i, p in enumerate(prompts):
        try:
            if not p.id.strip():  # the report's heading for the prompt: '## ' and nothing
                raise ConfigError("id is empty: give each prompt a name, the heading of its section in the report")
            if p.max_tokens <= 0:
                raise ConfigError(f"max_tokens must be > 0, got {p.max_tokens}")
            check_seed("seed", p.seed)
            check_sampling(p.temperature, p.top_k, p.top_p)
            ignored = greedy_ignores(p.temperature, p.top_k, p.top_p, p.seed)
            if ignored:
                raise ConfigError(ignored)
        except ConfigError as err:
            raise ConfigError(f"{path}: prompt[{i}] ({p.id!r}): {err}") from None
    repeated = sorted({p.id for p in prompts if sum(q.id == p.id for q in prompts) > 1})
    if repeated:
        raise ConfigError(f"{path}: prompt ids must be unique; repeated: {', '.join(map(repr, repeated))}")
    return prompts


def run_suite(
    model, tokenizer, prompts: list[Prompt], device: torch.device, block_size: int, compile: bool = False, trained: int = 0
) -> list[dict]:
    """Every prompt's completion, in batches of prompts sharing their sampling settings
    (model.generate_many; `compile`: through torch.compile); each prompt samples with its own
    seeded generator, so its completion is the one it would get alone. A completion ends before
    the tokenizer's end-of-text id, where the model ends its document. `trained`: the context the
    run trained at (evals/score.trained_context), where a prompt and its completion past it are
    warned of (0: block_size)."""
    encoded = []
    for p in prompts:
        try:
            ids = tokenizer.encode(p.prompt)
        except TokenizerError as err:
            raise ConfigError(f"prompt '{p.id}': {err}") from None
        if not ids:
            raise ConfigError(f"prompt '{p.id}' is empty (or holds no text this tokenizer knows): give some text to continue")
        if len(ids) > block_size:
            raise ConfigError(
                f"prompt '{p.id}' is {len(ids)} tokens, longer than the model's context {block_size}: "
                "give a suite of shorter prompts (--suite FILE), or train with a longer model.block_size"
            )
        encoded.append(ids)
    longest = max(range(len(prompts)), key=lambda i: len(encoded[i]) + prompts[i].max_tokens)
    warn_past_trained_context(
        len(encoded[longest]) + prompts[longest].max_tokens, trained, block_size,
        f"prompt '{prompts[longest].id}' and its completion",
    )  # fmt: skip
    announce_compile(compile)
    groups: dict[tuple, list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault((p.max_tokens, p.temperature, p.top_k, p.top_p), []).append(i)
    completions: dict[int, list[int]] = {}
    for (max_tokens, temperature, top_k, top_p), members in groups.items():
        generators = [torch.Generator(device=device).manual_seed(prompts[i].seed) for i in members]
        rows = model.generate_many(
            [encoded[i] for i in members], max_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
            generators=generators, compile=compile, vocab_size=tokenizer.vocab_size, progress="generating",
            stop_token=tokenizer.eos_id,
        )  # fmt: skip
        completions.update(zip(members, rows))
    return [{**p.__dict__, "completion": tokenizer.decode(tokenizer.until_eos(completions[i]))} for i, p in enumerate(prompts)]


def markdown_report(run_name: str, suite: str, results: list[dict]) -> str:
    lines = [f"{REPORT_TITLE}{code_span(suite)} on {code_span(run_name)}", ""]
    for r in results:
        lines += [
            f"## {plain_text(r['id'])}",
            "",
            f"temperature {r['temperature']}, seed {r['seed']}, {counted(r['max_tokens'], 'tokens')}",
            "",
            f"**Prompt:** {code_span(r['prompt'])}",
            "",
            code_block(r["prompt"] + r["completion"]),
            "",
        ]
    return "\n".join(lines)


def prompts_report(
    run: str | Path,
    suite: str | Path | None = None,
    out: str | Path | None = None,
    device: str = "auto",
    compile: bool = False,
) -> tuple[str, Path]:
    """Generate from every prompt of a suite (default: the bundled one) -> (Markdown report, where
    it was saved: `out`, else RUN/prompts_<suite>.md). `compile`: decode through torch.compile."""
    from ..runs.derived import record_derived, weights_identity
    from ..runs.run_dir import load_run
    from ..training.runtime import resolve_device

    suite = Path(suite) if suite else DEFAULT_SUITE
    prompts = load_suite(suite)
    if out:  # the suite may start with a comment that reads like a report's title
        if Path(out).resolve() == suite.resolve():
            raise ConfigError(
                f"--out {out} is the prompt suite itself: writing the report there would replace it; name another file"
            )
        check_replaceable(out, "--out", "a prompt report", lambda text: text.startswith(REPORT_TITLE))
    resolved = resolve_device(device)
    weights = weights_identity(run)
    cfg, model, tokenizer = load_run(run, resolved)
    report = markdown_report(
        Path(run).name,
        suite.stem,
        run_suite(model, tokenizer, prompts, resolved, cfg.model.block_size, compile, trained_context(cfg)),
    )
    path = Path(out) if out else Path(run) / f"prompts_{suite.stem}.md"
    atomic_write_text(path, report)
    record_derived(
        run, [path], command_line("slmlab", "prompts", run, *(["--suite", suite] if suite != DEFAULT_SUITE else [])), weights
    )
    return report, path
