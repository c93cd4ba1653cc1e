"""SMT verbs: `persona` (stage-2 fine-tuning), `persona-eval` (adherence and drift), `surgery`
(a Self Area inside a Hugging Face model)."""

from __future__ import annotations

from .argument_types import output_folder, positive_float, positive_int
from .options import add_device, add_seed, add_verb, option_rules

SOURCE_READING = ("data.text_field", "data.doc_separator")  # how persona-eval and surgery read a SOURCE file


def register(sub) -> None:
    p = add_verb(
        sub,
        "persona",
        "SMT stage 2: fine-tune a trained run on persona text, training only the chosen parameters",
        "  slmlab persona runs/smt_small --persona-data brown:R                 # Brown 'humor' as the persona\n"
        "  slmlab persona runs/smt_small --persona-data persona.txt --train self_area+norms --steps 500\n"
        "  slmlab persona runs/baseline --persona-data brown:R --train all --name baseline_persona",
        overrides=True,
    )
    p.add_argument("run")
    p.add_argument(
        "--persona-data", required=True, metavar="SOURCE", help="brown:R, shakespeare:comedies, a .txt/.jsonl file or directory"
    )
    p.add_argument(
        "--train",
        default="self_area",
        metavar="SELECTION",
        help="what trains: self_area (default), self_area+norms, all, or a plugin's selection (registry.TRAINABLE)",
    )
    p.add_argument("--steps", type=positive_int, default=300, help="training steps (default 300)")
    p.add_argument("--lr", type=positive_float, default=1e-3, help="peak learning rate (default 1e-3)")
    p.add_argument("--name", default=None, help="run name (default: RUN's name + _persona)")
    p.add_argument("--overwrite", action="store_true", help="replace the persona run of the same name (only slmlab's files)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar: log lines (one per evaluation, and one a minute)")
    p.set_defaults(func=cmd_persona)

    p = add_verb(
        sub,
        "persona-eval",
        "persona adherence under neutral and adversarial prompts, drift, and what the persona costs",
        "  slmlab persona-eval runs/smt_small_persona --persona-data brown:R\n"
        "  slmlab persona-eval --compare runs/smt_small_persona runs/baseline_persona --persona-data brown:R --out persona.md\n"
        "  slmlab persona-eval runs/p --persona-data p.jsonl --other-data o.jsonl --data.text_field content   # both files' field",
        overrides=SOURCE_READING,
    )
    p.add_argument("runs", nargs="*", metavar="RUN")
    p.add_argument("--compare", nargs="+", default=[], metavar="RUN", help="runs to set side by side in one table")
    p.add_argument("--persona-data", required=True, metavar="SOURCE", help="brown:R, shakespeare:comedies, a file or directory")
    p.add_argument(
        "--other-data",
        default="",
        metavar="SOURCE",
        help="the text the persona is told apart from (default: the same corpus's other genres)",
    )
    p.add_argument("--max-new-tokens", type=positive_int, default=60, help="tokens generated per prompt (default 60)")
    p.add_argument(
        "--openings", type=positive_int, default=12, help="adversarial openings taken from other-text documents (default 12)"
    )
    add_seed(p)
    p.add_argument("--out", default="", help="also write the table as Markdown here")
    add_device(p)
    p.set_defaults(func=cmd_persona_eval)

    p = add_verb(
        sub,
        "surgery",
        "insert a Self Area into a pretrained Hugging Face causal LM and train it alone on persona text",
        "  slmlab surgery --hf-model models/smollm2-135m --persona-data brown:R --steps 200\n"
        "  slmlab surgery --hf-model models/smollm2-135m --load runs/surgery_smollm2-135m --generate 'The day'\n"
        "  slmlab surgery --hf-model models/smollm2-135m --persona-data persona.jsonl --data.text_field content",
        overrides=SOURCE_READING,
        reads_runs=False,
    )
    p.add_argument("--hf-model", required=True, metavar="MODEL", help="a local transformers model directory or .gguf file")
    p.add_argument(
        "--persona-data", default="", metavar="SOURCE", help="brown:R, shakespeare:comedies, a .txt/.jsonl file or directory"
    )
    p.add_argument("--load", default="", metavar="DIR", help="use the Self Area saved in DIR instead of training one")
    p.add_argument("--out", default="", type=output_folder, help="where to save the Self Area (default runs/surgery_<model>)")
    p.add_argument("--steps", type=positive_int, default=200, help="training steps of the Self Area (default 200)")
    p.add_argument("--lr", type=positive_float, default=1e-2, help="peak learning rate (default 1e-2)")
    p.add_argument("--batch-size", type=positive_int, default=4, help="windows per step and per scored batch (default 4)")
    p.add_argument("--seq-len", type=positive_int, default=128, help="tokens per window (default 128)")
    p.add_argument("--self-dim", type=positive_int, default=128, help="width of the Self Area's guidance vector g (default 128)")
    p.add_argument("--token-dependent", action="store_true", help="gate the guidance per token by the hidden state")
    add_seed(p)
    p.add_argument("--generate", default="", metavar="PROMPT", help="print a greedy continuation through model.generate")
    p.add_argument("--max-new-tokens", type=positive_int, default=40, help="tokens of --generate (default 40)")
    p.add_argument("--overwrite", action="store_true", help="replace the Self Area saved in --out")
    add_device(p)
    training = ("--persona-data", "--out", "--steps", "--lr", "--batch-size", "--seq-len", "--self-dim", "--token-dependent")
    option_rules(
        p,
        needs={"--max-new-tokens": "--generate", "--load": "--generate"},  # --load alone loads, then does nothing
        conflicts=[("--load", option, f"{option} is for training a Self Area; --load uses a trained one") for option in training]
        + [
            ("--load", "--overwrite", "--load writes nothing"),
            ("--load", "--seed", "--load trains nothing and --generate is greedy"),
        ],
    )
    p.set_defaults(func=cmd_surgery)


def cmd_persona(args, extra) -> int:
    from ..config import parse_overrides
    from ..persona.gain import record_base
    from ..persona.stage2 import persona_config
    from ..training import Trainer
    from ..training.stopping import TrainingStopped, stop_at_step_end
    from .train import report_stop

    base, cfg = persona_config(args.run, args.persona_data, args.train, args.steps, args.lr, args.name, parse_overrides(extra))
    try:
        with (
            stop_at_step_end(),
            Trainer(cfg, overwrite=args.overwrite, progress=not args.no_progress, init_from=base) as trainer,
        ):
            record_base(trainer.run.path, base.path)
            result = trainer.fit()
    except TrainingStopped as stop:  # Ctrl-C or SIGTERM: a checkpoint at this step, as `train` writes
        return report_stop(stop, trainer.run.path, bool(cfg.plugins))
    print(f"run: {result.run_dir} (from {base.path}, trained: {args.train})")
    report_stage2_gain(result.run_dir, base.path, "", cfg.train.device)  # the one "after" figure, with its base's
    return 0


def report_stage2_gain(run, base, why_not: str, device: str) -> None:
    """Score persona run `run` against its base run `base` (persona/gain.py) and print the change;
    without a base, say `why_not` (persona/gain.py's recorded_base), or nothing where it is ""."""
    from ..experiments.stats import interval_clause
    from ..persona.gain import persona_gain
    from ..runs.metrics import perplexity
    from ..tables import counted, format_number

    if base is None:
        if why_not:
            print(f"no stage-2 gain: {why_not}")
        return
    gain = persona_gain(base, run, device)
    before, after = perplexity(gain["val_loss_before"]), perplexity(gain["val_loss_after"])
    print(
        f"against {base} on the same {counted(gain['batches'], 'batches')} of persona text: perplexity {before:.2f} -> "
        f"{after:.2f}, {format_number(gain['delta_pct'], '+.2f', '%')}, {interval_clause(gain, gain['batches'])}"
    )


def source_reading(extra: list[str]) -> dict:
    """The SOURCE_READING settings given (`--data.text_field content`), checked as a run config's
    are, by field name: how the files SOURCE names are read."""
    from ..config import RunConfig, apply_overrides, config_from_dict, parse_overrides

    overrides = parse_overrides(extra)
    data = config_from_dict(apply_overrides(RunConfig().to_dict(), overrides)).data
    return {field: getattr(data, field) for field in (key.split(".", 1)[1] for key in overrides)}


def cmd_persona_eval(args, extra) -> int:
    from ..persona.evaluate import persona_report

    print(
        persona_report(
            args.runs + args.compare,
            args.persona_data,
            args.other_data,
            args.openings,
            args.max_new_tokens,
            args.seed,
            args.device,
            args.out or None,
            progress=_progress,
            reading=source_reading(extra),
        )
    )
    return 0


def cmd_surgery(args, extra) -> int:
    from ..config import ConfigError
    from ..experiments.stats import interval_clause
    from ..persona.surgery import greedy_continuation, load_with_self_area
    from ..persona.surgery_training import surgery
    from ..runs.metrics import perplexity
    from ..tables import counted, format_number
    from ..training.stopping import stop_at_step_end

    if args.load:
        model, tokenizer = load_with_self_area(args.hf_model, args.load, args.device)
    elif not args.persona_data:
        raise ConfigError("give --persona-data SOURCE to train a Self Area (or --load DIR to use a trained one)")
    else:
        with stop_at_step_end():  # Ctrl-C or SIGTERM: the Self Area trained so far is saved
            model, tokenizer, summary, folder = surgery(
                args.hf_model,
                args.persona_data,
                args.out or None,
                args.steps,
                args.lr,
                args.batch_size,
                args.seq_len,
                args.self_dim,
                args.token_dependent,
                args.seed,
                args.overwrite,
                args.device,
                source_reading(extra),
            )
        before, after = summary["persona_val_loss_before"], summary["persona_val_loss_after"]
        change, batches = summary["persona_ppl_change"], summary["persona_val_batches"]
        print(f"Self Area ({summary['self_area_params']:,} parameters; base {summary['base_params']:,} frozen) saved to {folder}")
        print(
            f"persona validation loss {before:.4f} -> {after:.4f} (perplexity {perplexity(before):.2f} -> {perplexity(after):.2f}: "
            f"{format_number(change['delta_pct'], '+.2f', '%')}, {interval_clause(change, batches)} over {counted(batches, 'batches')})"
        )
        if "stopped_by" in summary:
            return report_surgery_stop(summary, args.argv)
    if args.generate:
        print(greedy_continuation(model, tokenizer, args.generate, args.max_new_tokens))
    return 0


def report_surgery_stop(summary: dict, argv: list[str]) -> int:
    """Say that a surgery stopped on a signal saved the Self Area of fewer steps than asked, and how
    to train it in full (surgery has no resume); the shell's exit code (128 + the signal's number)."""
    from ..tables import command_line
    from ..torchrun_env import report_error
    from ..training.stopping import exit_code

    again = command_line("slmlab", *argv, *([] if "--overwrite" in argv else ["--overwrite"]))
    report_error(
        f"slmlab: surgery stopped by {summary['stopped_by']} after {summary['steps']} of {summary['steps_asked']} steps: "
        f"the Self Area trained so far is saved; to train one of all {summary['steps_asked']} steps: {again}"
    )
    return exit_code(summary["stopped_by"])


def _progress(line: str) -> None:
    import sys

    print(line, file=sys.stderr, flush=True)
