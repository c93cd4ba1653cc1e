"""Verbs that look at models and runs: `info`, `viz attention`, `viz animate`, `quantize`, `report`."""

from __future__ import annotations

from pathlib import Path

from ..tables import command_line, counted
from .argument_types import positive_int
from .options import add_checkpoint, add_device, add_out, add_verb, configs_to_inspect
from .text_input import add_prompt, prompt_text


def register(sub) -> None:
    p = add_verb(
        sub,
        "info",
        "parameters, FLOPs per token and memory estimates of a config or run",
        "  slmlab info configs/smat_64m.toml\n  slmlab info runs/quickstart --batch-size 8 --seq-len 512\n"
        "  slmlab info configs/smat_ablation.toml      # a sweep config: one table per variant",
        overrides=True,
    )
    p.add_argument("target", metavar="CONFIG|RUN")
    p.add_argument("--batch-size", type=positive_int, default=None, help="for the memory estimate (default: the config's)")
    p.add_argument("--seq-len", type=positive_int, default=None, help="for FLOPs and memory (default: the config's)")
    p.set_defaults(func=cmd_info)

    viz = add_verb(
        sub,
        "viz",
        "attention visualisation, the logit lens, activation patching and direct logit attribution",
        "  slmlab viz attention runs/quickstart --prompt 'ROMEO: But soft'\n  slmlab viz lens runs/quickstart --prompt 'ROMEO: But soft'\n"
        "  slmlab viz patch runs/quickstart --clean 'KING HENRY' --corrupt 'KING RICHA'\n"
        "  slmlab viz attribute runs/quickstart --prompt 'KING HENRY'",
    )
    viz_sub = viz.add_subparsers(dest="viz_verb", required=True)
    p = add_run_reader(
        viz_sub,
        "attention",
        "per-layer, per-head attention heatmaps and the prompt coloured by attention (PNG)",
        "  slmlab viz attention runs/quickstart --prompt 'ROMEO: But soft, what light'\n"
        "  slmlab viz attention runs/smat_quick/full_s0 --prompt 'KING' --export bertviz",
        cmd_viz_attention,
    )
    p.add_argument("--export", choices=("bertviz",), help="also write the maps in bertviz's format")
    add_run_reader(
        viz_sub,
        "lens",
        "the logit lens: each layer's residual stream read through the final norm and head (PNG + Markdown)",
        "  slmlab viz lens runs/quickstart --prompt 'ROMEO: But soft, what light'",
        cmd_viz_lens,
    )
    p = add_run_reader(
        viz_sub,
        "patch",
        "activation patching: how much of a clean prompt's prediction each block's activations restore "
        "in a corrupted one (PNG + Markdown)",
        "  slmlab viz patch runs/quickstart --clean 'KING HENRY' --corrupt 'KING RICHA'\n"
        "  slmlab viz patch runs/quickstart --clean 'KING HENRY' --corrupt 'KING RICHA' --answer ' ' --wrong 'R'",
        cmd_viz_patch,
        prompt=False,
    )
    p.add_argument("--clean", required=True, help="the prompt whose prediction is to be restored")
    p.add_argument("--corrupt", required=True, help="a prompt of the same length in tokens that differs where it matters")
    add_answer(
        p,
        "the next token the metric reads (default: the clean prompt's most likely one)",
        "score logit(answer) - logit(wrong) instead of log p(answer)",
    )
    p = add_run_reader(
        viz_sub,
        "attribute",
        "direct logit attribution: what each embedding, attention, MLP and head writes toward the next token's logit "
        "(PNG + Markdown)",
        "  slmlab viz attribute runs/quickstart --prompt 'KING HENRY'\n"
        "  slmlab viz attribute runs/quickstart --prompt 'KING HENRY' --answer ':' --wrong ' '",
        cmd_viz_attribute,
    )
    add_answer(
        p, "the next token whose logit is split (default: the model's most likely one)", "split logit(answer) - logit(wrong)"
    )
    p = add_verb(
        viz_sub,
        "animate",
        "assemble the frames of `train --viz-every N` into an animated GIF (and MP4 with ffmpeg)",
        "  slmlab train configs/quickstart.toml --viz-every 50\n  slmlab viz animate runs/quickstart --fps 4",
    )
    p.add_argument("run")
    p.add_argument("--fps", type=positive_int, default=4, help="frames per second (default 4)")
    p.set_defaults(func=cmd_viz_animate)

    p = add_verb(
        sub,
        "quantize",
        "int8 dynamic quantisation of a run's linear layers: size, CPU speed and perplexity vs fp32",
        "  slmlab quantize runs/quickstart --int8\n  slmlab generate runs/quickstart --int8 --prompt 'ROMEO:'",
    )
    p.add_argument("run")
    p.add_argument("--int8", action="store_true", help="dynamic int8 (the one quantisation offered)")
    p.add_argument("--batches", type=positive_int, default=20, help="validation batches for the perplexities (default 20)")
    p.set_defaults(func=cmd_quantize)

    p = add_verb(
        sub,
        "report",
        "write a report card (report.md + self-contained report.html) for a run or a sweep",
        "  slmlab report runs/quickstart\n  slmlab report runs/smat_quick          # a sweep directory",
    )
    p.add_argument("target", metavar="RUN_OR_SWEEP")
    p.set_defaults(func=cmd_report)


def add_run_reader(viz_sub, name: str, summary: str, examples: str, handler, prompt: bool = True):
    """A `slmlab viz` verb that reads RUN (its final weights, or --checkpoint's; on --prompt or
    --prompt-file, when `prompt`) and writes into --out (default RUN/viz) -> its parser, for the
    verb's own options."""
    p = add_verb(viz_sub, name, summary, examples)
    p.add_argument("run")
    if prompt:
        add_prompt(p)
    add_out(p, "output folder (default RUN/viz)", folder=True)
    add_checkpoint(p)
    add_device(p)
    p.set_defaults(func=handler)
    return p


def add_answer(parser, answer_help: str, wrong_help: str) -> None:
    """--answer TOKEN and --wrong TOKEN: the next token a prompt readout measures, and the one
    its logit is compared with."""
    parser.add_argument("--answer", help=answer_help)
    parser.add_argument("--wrong", help=wrong_help)


def print_readout(text: str, paths: list[Path]) -> int:
    print(text)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def cmd_info(args, extra) -> int:
    from ..analysis.info import config_for_info, size_table

    if Path(args.target).is_dir():
        configs = {args.target: config_for_info(args.target, None, extra)}
    else:
        given = configs_to_inspect(args.target, extra)
        configs = {label: config_for_info(args.target, lambda cfg=cfg: cfg) for label, cfg in given.items()}
    tables = [size_table(cfg, args.batch_size, args.seq_len) for cfg in configs.values()]
    print(tables[0] if len(tables) == 1 else "\n\n".join(f"variant {label}:\n\n{table}" for label, table in zip(configs, tables)))
    return 0


def cmd_viz_attention(args, extra) -> int:
    from ..analysis.viz import attention_report

    modules, tokens, paths, folder = attention_report(
        args.run, prompt_text(args), args.out or None, args.export, args.device, args.checkpoint
    )
    print(
        f"{counted(modules, 'attention modules')}, {counted(tokens, 'tokens')}: wrote {counted(len(paths), 'files')} to {folder}"
    )
    return 0


def cmd_viz_lens(args, extra) -> int:
    from ..analysis.lens import lens_report

    return print_readout(*lens_report(args.run, prompt_text(args), args.out or None, args.device, args.checkpoint))


def cmd_viz_patch(args, extra) -> int:
    from ..analysis.patching import patching_report

    return print_readout(
        *patching_report(
            args.run, args.clean, args.corrupt, args.answer, args.wrong, args.out or None, args.device, args.checkpoint
        )
    )


def cmd_viz_attribute(args, extra) -> int:
    from ..analysis.attribution import attribution_report

    return print_readout(
        *attribution_report(args.run, prompt_text(args), args.answer, args.wrong, args.out or None, args.device, args.checkpoint)
    )


def cmd_viz_animate(args, extra) -> int:
    from ..analysis.viz import animate
    from ..runs import RunDir

    RunDir(Path(args.run)).check_is_run()  # a sweep's folder or a typo: not "no frames in ..."
    viz = Path(args.run) / "viz"
    written = animate(viz / "frames", viz / "training", args.fps)
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def cmd_quantize(args, extra) -> int:
    from ..analysis.quantize import quantize_report
    from ..config import ConfigError

    if not args.int8:
        raise ConfigError("say which quantisation: --int8 (dynamic int8 linear layers, CPU)")
    table, path = quantize_report(args.run, args.batches)
    print(table)
    generate, evaluate = (command_line("slmlab", verb, args.run, "--int8") for verb in ("generate", "eval"))
    print(f"saved: {path}; use it with `{generate}` and `{evaluate}`")
    return 0


def cmd_report(args, extra) -> int:
    from ..analysis.report import write_report

    md_path, html_path = write_report(args.target)
    print(f"wrote {md_path} and {html_path}")
    return 0
