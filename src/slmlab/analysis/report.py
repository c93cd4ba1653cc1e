"""The report card: `slmlab report RUN_OR_SWEEP` writes report.md and a self-contained report.html.

It gathers what the other commands already wrote into one document to attach to a paper draft or
an issue, and computes nothing new except one training-curve plot:

    run    settings that differ from the defaults, the size-and-cost table (info.py), training and
           validation curves, final numbers and throughput, curriculum phases, and, when present,
           surgical ablations (ablations.md), long-context plots (eval_*.png), attention maps
           (viz/*.png), the int8 comparison (quantize.md), persona robustness (persona_eval.json),
           prompt-suite reports and the end-of-training sample
    sweep  the paired results table with confidence intervals (results.md), the curves
           (curves.png), the base configuration and what each variant changes, every run's
           numbers, ablations of any run, one sample per variant

The HTML is the Markdown rendered by Python-Markdown with every image inlined as a data URI.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import re
from pathlib import Path

import torch

from .. import __version__
from ..config import ConfigError, PhaseConfig, RunConfig
from ..config.values import toml_literal
from ..errors import RunFileError, SlmlabError
from ..experiments.sweep_dir import read_sweep_dir
from ..files import atomic_write_text, read_json, read_text, require_fields
from ..plotting import loss_axis, pyplot, save_png
from ..runs.derived import out_of_date, weights_identity
from ..runs.run_dir import RunDir, phase_runs, runs_inside, with_token_offsets
from ..tables import code_block, code_span, command_line, counted, format_number, human, markdown_table
from .info import config_for_info, size_table

HIDDEN = {"name", "out_dir", "train.seed"}


def write_report(target: str | Path) -> tuple[Path, Path]:
    """Write <target>/report.md and report.html for a run or a sweep directory; return both paths."""
    target = Path(target)
    if (target / "results.json").is_file():
        title, markdown = _sweep_report(target)
    elif (target / "config.json").is_file():
        title, markdown = _run_report(target)
    else:
        what = "is neither a run directory (config.json) nor a sweep directory (results.json, written when the sweep ends)"
        raise ConfigError(f"{target} {what if target.exists() else 'does not exist'}{runs_inside(target)}")
    md_path, html_path = target / "report.md", target / "report.html"
    atomic_write_text(md_path, markdown)
    atomic_write_text(html_path, to_html(markdown, target, title))
    return md_path, html_path


# ---- pieces ----------------------------------------------------------------------------------


def changed_settings(cfg: RunConfig, reference: RunConfig) -> list[tuple[str, str, str]]:
    """(key, value, reference value) for every setting where cfg differs from reference; a phase
    the reference lacks is held against a phase's defaults (None: keep the earlier phase's)."""
    mine, theirs = cfg.settings(), reference.settings()
    phase_defaults = dataclasses.asdict(PhaseConfig())
    for key in mine:
        if key.startswith("phases.") and key not in theirs:
            theirs[key] = phase_defaults.get(key.rpartition(".")[2])
    shown = [(k, v, theirs.get(k)) for k, v in mine.items() if k not in HIDDEN and v != theirs.get(k)]
    return [(k, toml_literal(v), toml_literal(default)) for k, v, default in shown]  # as a config writes them


def _heading_free(text: str) -> str:
    """A Markdown file's text without its top-level '# ' title."""
    return "\n".join(line for line in text.splitlines() if not line.startswith("# ")).strip()


def summary_table(summary: dict) -> str:
    rows = [
        ("optimizer steps", summary.get("step")),
        ("training tokens", f"{summary.get('tokens', 0):,}"),
        ("validation loss", format_number(summary.get("val_loss"), ".4f")),
        ("validation perplexity", format_number(summary.get("val_ppl"), ".3f")),
        ("validation bits per byte", format_number(summary.get("val_bpb"), ".4f")),
        ("throughput (tokens/s, median over log windows)", f"{summary.get('tokens_per_s', 0):,.0f}"),
        ("training time", f"{summary.get('train_seconds', 0):.1f} s"),
        ("processes", summary.get("processes", 1)),
        ("peak memory", human(summary["peak_memory_bytes"], "B") if "peak_memory_bytes" in summary else "–"),
        ("non-finite steps skipped", summary.get("nan_skips", 0)),
    ]
    if summary.get("compile_seconds"):
        rows.append(("torch.compile (first step, not in throughput)", f"{summary['compile_seconds']:.1f} s"))
    return markdown_table(("quantity", "value"), rows)


def plot_training(path: Path, runs: list[RunDir]) -> None:
    """Training loss (per log window) and validation loss against tokens; phases one after another."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(7, 4.2))
    drawn = []
    for index, (run, offset, records) in enumerate(with_token_offsets(runs)):
        if not records:
            continue
        train = [(offset + r["tokens"], r["loss"]) for r in records if r.get("loss") is not None]
        val = [(offset + r["tokens"], r["val_loss"]) for r in records if r.get("val_loss") is not None]
        first = index == 0
        ax.plot(*zip(*train), color="tab:blue", alpha=0.8, label="training loss" if first else None)
        if val:
            ax.plot(*zip(*val), "o-", color="tab:orange", label="validation loss" if first else None)
        if len(runs) > 1:
            ax.axvline(offset, color="grey", lw=0.8, ls="--")
            ax.text(offset, 1, f" {run.path.name}", transform=ax.get_xaxis_transform(), va="top", fontsize=8)  # y: the top
        drawn += [loss for _, loss in train + val]
    loss_axis(ax, drawn)
    ax.set_xlabel("training tokens")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_png(fig, path, dpi=110)


def _images(path: Path, pattern: str, caption: str) -> list[str]:
    return [f"![{caption}: {p.stem}]({p.relative_to(path).as_posix()})" for p in sorted(path.glob(pattern))]


def _provenance() -> str:
    today = datetime.date.today().isoformat()
    return f"*slmlab {__version__}, PyTorch {torch.__version__}, written {today}.*"


REWRITE = "run the command that wrote it again"


def _text(path: Path) -> str:
    """A Markdown file another command left here (damaged: one clear error)."""
    return read_text(path, "report input", RunFileError, REWRITE)


RUN_MOVED = "the run's current ones (it trained on, or finished, since)"
SWEEP_MOVED = "its runs' current ones (one of them trained on, finished or was removed since)"


def _out_of_date(path: Path, stale: dict[str, str], pattern: str, moved: str = RUN_MOVED) -> list[str]:
    """A line for the files under `path` matching `pattern` that were computed from other weights
    than the current ones (`stale`: runs/derived.out_of_date; `moved`: whose, and why they may
    differ), naming the command to rerun."""
    by_command: dict[str, list[str]] = {}
    for name in sorted(p.relative_to(path).as_posix() for p in path.glob(pattern)):
        if name in stale:
            by_command.setdefault(stale[name], []).append(name)
    return [
        f"*Out of date: {', '.join(map(code_span, names))} came from other weights than {moved}; "
        f"rerun {code_span(command)} to update.*"
        for command, names in by_command.items()
    ]


def _ablations(path: Path, heading: str, stale: dict[str, str], moved: str = RUN_MOVED) -> list[str]:
    if not (path / "ablations.md").is_file():
        return []
    return [heading, *_out_of_date(path, stale, "ablations.md", moved), _heading_free(_text(path / "ablations.md"))]


def _sweep_ablations_out_of_date(path: Path, runs: list[RunDir]) -> dict[str, str]:
    """{"ablations.md": the command that rewrites it} where a run the sweep's ablation table read
    (its ablations.json records each run's weights) has other weights now, or is gone; else {}."""
    try:
        record = read_json(path / "ablations.json", "sweep ablations", RunFileError, "")
        current = {run.path.name: run for run in runs}
        moved = any(name not in current or weights_identity(current[name].path) != sha for name, sha in record["weights"].items())
        flags = [flag for flag in ("--layers", "--heads") if record.get(flag[2:])]
    except (AttributeError, KeyError, TypeError, SlmlabError):  # none, or damaged: shown as it is
        return {}
    return {"ablations.md": command_line("slmlab", "ablate", path, *flags)} if moved else {}


VIZ_SECTIONS = (  # (heading, the figures in RUN/viz it shows, their caption); a checkpoint's stay in viz/<checkpoint>/
    ("Attention maps", "viz/attention_*.png", "attention"),
    ("Logit lens", "viz/lens.png", "logit lens"),
    ("Activation patching", "viz/patch.png", "activation patching"),
    ("Direct logit attribution", "viz/attribution.png", "direct logit attribution"),
)


def _extras(path: Path, stale: dict[str, str]) -> list[str]:
    """Sections the other commands leave in a run directory, when present, each flagged where it
    describes other weights than the run's current ones (`stale`: runs/derived.out_of_date's)."""
    parts = _ablations(path, "## Surgical ablations", stale)
    long_context = _images(path, "eval_*.png", "long-context evaluation")
    if long_context:
        parts += ["## Long-context evaluation", *_out_of_date(path, stale, "eval_*.png"), *long_context]
    for heading, pattern, caption in VIZ_SECTIONS:
        images = _images(path, pattern, caption)
        if images:
            parts += [f"## {heading}", *_out_of_date(path, stale, pattern), *images]
    if (path / "quantize.md").is_file():
        parts += ["## int8 inference", *_out_of_date(path, stale, "quantize.md"), _heading_free(_text(path / "quantize.md"))]
    if (path / "persona_eval.json").is_file():
        from ..persona.evaluate import results_table

        result = read_json(path / "persona_eval.json", "persona evaluation", RunFileError, REWRITE)
        require_fields(
            result,
            {"classifier_accuracy": (int, float, type(None))},  # null: not measured (persona/evaluate.py)
            path / "persona_eval.json",
            "persona evaluation",
            RunFileError,
            REWRITE,
        )
        try:
            table = results_table([result])
        except (KeyError, TypeError, ValueError):
            raise RunFileError(
                f"persona evaluation {path / 'persona_eval.json'} is damaged (fields missing); {REWRITE}"
            ) from None
        accuracy = result["classifier_accuracy"]
        measured = "not measured" if accuracy is None else f"{accuracy:.3f}"
        if accuracy is not None and result.get("classifier_above_chance") is False:  # none in an older slmlab's result
            measured += " (not clearly above chance: adherence may not tell the persona apart)"
        parts += [
            "## Persona robustness",
            *_out_of_date(path, stale, "persona_eval.json"),
            f"Classifier held-out balanced accuracy {measured}; adherence with 95% bootstrap intervals over prompts.",
            table,
        ]
    suites = sorted(path.glob("prompts_*.md"))
    if suites:
        parts += [
            "## Prompt suites",
            *_out_of_date(path, stale, "prompts_*.md"),
            "\n".join(f"- [{p.name}]({p.name})" for p in suites),
        ]
    return parts


def _stage2_gain(path: Path, stale: dict[str, str]) -> list[str]:
    """A persona run's line on what stage 2 bought (RUN/persona_gain.json, persona/gain.py), flagged
    where it came from other weights than the run's (`stale`, as _extras')."""
    from ..experiments.stats import PERCENT_CHANGE, interval_clause
    from ..persona.gain import GAIN_FILE
    from ..runs.metrics import perplexity

    if not (path / GAIN_FILE).is_file():
        return []
    fix = "delete it: training the persona run again (--overwrite) writes it"
    gain = read_json(path / GAIN_FILE, "stage-2 gain", RunFileError, fix)
    number = (int, float, type(None))  # null: NaN in JSON
    fields = {"base": str, "batches": int, **dict.fromkeys(("val_loss_before", "val_loss_after", *PERCENT_CHANGE), number)}
    require_fields(gain, fields, path / GAIN_FILE, "stage-2 gain", RunFileError, fix)
    ppl = [
        format_number(None if loss is None else perplexity(loss), ".2f")
        for loss in (gain["val_loss_before"], gain["val_loss_after"])
    ]
    return [
        *_out_of_date(path, stale, GAIN_FILE),
        f"Against its base run {code_span(gain['base'])} on the same {counted(gain['batches'], 'batches')} of persona text: "
        f"perplexity {ppl[0]} → {ppl[1]}, {format_number(gain['delta_pct'], '+.2f', '%')}, {interval_clause(gain, gain['batches'])}.",
    ]


def _run_report(path: Path) -> tuple[str, str]:
    run = RunDir(path)
    cfg, summary = run.read_config(), run.read_summary()
    phases = [RunDir(p["run"]) for p in summary.get("phases", [])]
    if cfg.phases and not phases:  # an unfinished curriculum: the phases that have started
        phases = phase_runs(path, cfg, begun=True)
    if not summary and not run.read_metrics() and not phases:
        raise ConfigError(f"{path} has not trained yet (no metrics.jsonl); train it first")
    sizes = size_table(config_for_info(path, load_config=None) if cfg.phases else cfg)  # a curriculum: each phase's
    plot_training(path / "training.png", phases or [run])
    changed, stale = changed_settings(cfg, RunConfig()), out_of_date(path)
    parts = [
        f"# Run report: {cfg.name}",
        _provenance(),
        "## Configuration",
        "Settings that differ from slmlab's defaults:",
        markdown_table(("setting", "value", "default"), changed) if changed else "(all defaults)",
        "## Size and cost",
        sizes,
        "## Training",
        "![training and validation loss](training.png)",
    ]
    if summary:
        parts += ["Final numbers of the last phase:"] * bool(phases) + [summary_table(summary), *_stage2_gain(path, stale)]
    else:
        parts.append("(training has not finished: no summary.json yet)")
    if summary.get("phases"):
        rows = [
            (p["phase"], p["step"], f"{p['tokens']:,}", format_number(p["val_loss"], ".4f"), f"{p['tokens_per_s']:,.0f}")
            for p in summary["phases"]
        ]
        parts += ["### Curriculum phases", markdown_table(("phase", "steps", "tokens", "val loss", "tokens/s (median)"), rows)]
    parts += _extras(path, stale)
    if summary.get("sample"):
        parts += [
            "## Sample",
            "Generated at the end of training (temperature 0.8, top-k 50, seed 0):",
            code_block(summary["sample"], "text"),
        ]
    return f"slmlab run {cfg.name}", "\n\n".join(parts) + "\n"


def _sweep_report(path: Path) -> tuple[str, str]:
    sweep = read_sweep_dir(path)
    runs = sweep.runs
    by_variant = {variant: list(members.values()) for variant, members in sweep.by_variant.items()}
    baseline_runs = by_variant.get(sweep.baseline) or runs
    base = baseline_runs[0].read_config()
    sized = config_for_info(baseline_runs[0].path, load_config=None) if base.phases else base  # a curriculum's vocabulary
    parts = [f"# Sweep report: {sweep.name}", _provenance()]
    if (path / "results.md").is_file():
        parts.append(_heading_free(_text(path / "results.md")))
    if (path / "curves.png").is_file():
        parts.append("![validation loss by variant](curves.png)")
    parts += [
        "## Base configuration",
        f"The baseline variant `{sweep.baseline}`; settings that differ from slmlab's defaults:",
        markdown_table(("setting", "value", "default"), changed_settings(base, RunConfig())),
        size_table(sized),
        "## What each variant changes",
    ]
    for variant, members in by_variant.items():
        if variant == sweep.baseline or not members:
            continue
        changed = changed_settings(members[0].read_config(), base)
        parts.append(f"**{variant}**: " + (", ".join(f"`{k}` = {v}" for k, v, _ in changed) or "nothing (a replicate)"))
    rows = []
    for variant, members in by_variant.items():
        for run in members:
            s = run.read_summary()
            rows.append(
                (
                    run.path.name,
                    variant,
                    format_number(s.get("val_loss"), ".4f"),
                    format_number(s.get("val_ppl"), ".3f"),
                    format_number(s.get("val_bpb"), ".4f"),
                    f"{s.get('tokens_per_s', 0):,.0f}",
                    f"{s.get('train_seconds', 0):.0f} s",
                )
            )
    parts += ["## Runs", markdown_table(("run", "variant", "val loss", "val ppl", "val bpb", "tokens/s", "time"), rows)]
    parts += _ablations(path, "## Surgical ablations over seeds", _sweep_ablations_out_of_date(path, runs), SWEEP_MOVED)
    for run in runs:
        parts += _ablations(run.path, f"## Surgical ablations of {run.path.name}", out_of_date(run.path))
    samples = [(v, m[0].read_summary().get("sample")) for v, m in by_variant.items() if m]
    if any(text for _, text in samples):
        parts.append("## Samples (first seed of each variant)")
        parts += [f"**{v}**\n\n{code_block(text, 'text')}" for v, text in samples if text]
    return f"slmlab sweep {sweep.name}", "\n\n".join(parts) + "\n"


# ---- HTML ------------------------------------------------------------------------------------

STYLE = """body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;line-height:1.45}
table{border-collapse:collapse;margin:1rem 0;font-size:.9rem}th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:left}
th{background:#f3f3f3}img{max-width:100%}pre{background:#f6f6f6;padding:.75rem;overflow-x:auto;white-space:pre-wrap}"""


SAFE_SCHEMES = ("", "http", "https", "mailto")  # of a link's or image's address; "" = a path


def to_html(markdown_text: str, base: Path, title: str) -> str:
    """Render Markdown to one HTML page; PNG images inside `base` become inline data URIs. Raw
    HTML in the Markdown (a config value such as data.doc_separator = "<EOS>", a run name) is shown
    as text, never read as markup; so is a link or image address of another scheme than those in
    SAFE_SCHEMES (a run named "[a](javascript:alert(1))" became a script link), and an image path
    leading out of `base` is not embedded (a report is shared; the files beside it are not)."""
    import html
    from urllib.parse import urlsplit

    import markdown

    renderer = markdown.Markdown(extensions=["tables", "fenced_code"])
    renderer.preprocessors.deregister("html_block")
    renderer.inlinePatterns.deregister("html")
    body = renderer.convert(markdown_text)

    def address(match: re.Match) -> str:
        attribute, url = match.group(1), html.unescape(match.group(2))
        try:
            scheme = urlsplit(url).scheme
        except ValueError:  # an address urlsplit cannot read (an unbalanced "[" of IPv6)
            scheme = "unreadable"
        if scheme not in SAFE_SCHEMES:
            return f'{attribute}=""'
        if attribute == "src" and not scheme and url.endswith(".png"):
            image = (base / url).resolve()
            if image.is_relative_to(base.resolve()) and image.is_file():
                return f'src="data:image/png;base64,{base64.b64encode(image.read_bytes()).decode("ascii")}"'
        return match.group(0)

    body = re.sub(r'\b(href|src)="([^"]*)"', address, body)
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n"
    )
