"""Verbs that score or sample a trained run: `eval`, `generate`, `prompts`, `ablate`, `diagnose`."""

from __future__ import annotations

import dataclasses
import logging
import sys

from ..tables import counted
from .argument_types import int_list, positive_float, positive_int
from .options import (
    add_checkpoint,
    add_compile,
    add_device,
    add_int8,
    add_out,
    add_sampling,
    add_seed,
    add_verb,
    check_greedy_options,
    configs_to_inspect,
    option_rules,
)
from .text_input import add_prompt, prompt_text, text_file

log = logging.getLogger("slmlab")

TEXT_CONFLICTS = ("--split", "--batches", "--by-position", "--context-lengths")
CHECKPOINT_NOT_INT8 = ("--checkpoint", "--int8", "the int8 model is quantised from the run's final weights")


def register(sub) -> None:
    p = add_verb(
        sub,
        "eval",
        "validation loss, perplexity and bits per byte of a trained run, or of every token of a text file (--text)",
        "  slmlab eval runs/quickstart\n"
        "  slmlab eval runs/quickstart --data.genres tragedies   # a slice of the corpus\n"
        "  slmlab eval runs/bytes --data.source brown           # another corpus (byte/BPE/GPT-2 tokenizers)\n"
        "  slmlab eval runs/long --by-position --context-length 1024\n"
        "  slmlab eval runs/long --context-lengths 256,512,1024,2048 --rope-scale 2\n"
        "  slmlab eval runs/quickstart --text sonnets.txt --stride 64   # every token of a text file, once\n"
        "  slmlab eval runs/smat_quick --text sonnets.txt               # a sweep: each variant vs the baseline, by seed",
        overrides=True,
    )
    p.add_argument("run")
    p.add_argument(
        "--text",
        metavar="PATH",
        help="score every token of this UTF-8 text file once, in consecutive windows of the context the run trained at "
        "(--stride gives each token more of the text before it) ('-': standard input), instead of the validation split; "
        "RUN may be a sweep folder: every finished run scores "
        "it, and each variant's bits per byte are paired with the baseline's by seed",
    )
    p.add_argument(
        "--stride",
        type=positive_int,
        default=None,
        help="with --text: move the context window by this many tokens (default: the whole window; smaller gives each "
        "token more context for more compute)",
    )
    p.add_argument("--batches", type=positive_int, default=50, help="number of validation batches (default 50)")
    split = "the split scored (default val; train: the training split, for the gap between the two)"
    p.add_argument("--split", choices=("val", "train"), default="val", help=split)
    add_device(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--by-position", action="store_true", help="loss per position bucket of the window (saved as JSON + PNG)")
    p.add_argument(
        "--context-length",
        type=positive_int,
        default=None,
        help="window length for --by-position or --text (default: data.seq_len, the context the run trained at)",
    )
    p.add_argument("--bucket", type=positive_int, default=64, help="bucket width for --by-position (default 64)")
    p.add_argument(
        "--context-lengths", type=int_list, default=None, help="comma-separated evaluation lengths, e.g. 256,512,1024,2048"
    )
    p.add_argument(
        "--rope-scale",
        type=positive_float,
        default=None,
        help="evaluate a RoPE model with this rope_scale instead (--by-position, --context-lengths: each row also paired against the rope_scale it trained with)",
    )
    add_checkpoint(p)
    add_int8(p)
    option_rules(
        p,
        needs={"--context-length": ("--by-position", "--text"), "--bucket": "--by-position", "--stride": "--text"},
        conflicts=[
            *(("--text", option, "--text scores the file, not the run's validation split") for option in TEXT_CONFLICTS),
            ("--json", "--by-position", "the per-position report is a table and a JSON file in RUN"),
            ("--json", "--context-lengths", "the per-length report is a table and a JSON file in RUN"),
            CHECKPOINT_NOT_INT8,
            ("--checkpoint", "--by-position", "the per-position report in RUN is the final weights'"),
            ("--checkpoint", "--context-lengths", "the per-length report in RUN is the final weights'"),
        ],
    )
    p.set_defaults(func=cmd_eval)

    p = add_verb(
        sub,
        "generate",
        "sample text from a trained run",
        "  slmlab generate runs/quickstart --prompt 'ROMEO:' --max-new-tokens 300\n"
        "  slmlab generate runs/quickstart --prompt 'KING' --temperature 0.7 --top-p 0.9 --seed 3",
    )
    p.add_argument("run")
    add_prompt(p)
    add_sampling(p)
    add_seed(p)
    p.add_argument(
        "--num-samples",
        type=positive_int,
        default=1,
        help="continuations to sample (default 1), one batch from one seeded generator (as Hugging Face's num_return_sequences: "
        "the first of several differs from --num-samples 1's with the same seed)",
    )
    no_cache = "recompute the last block_size tokens each step (the KV cache goes on from the last block_size // 2 once full)"
    p.add_argument("--no-cache", action="store_true", help=no_cache)
    add_compile(p)
    add_checkpoint(p)
    add_int8(p)
    add_device(p)
    option_rules(p, conflicts=[CHECKPOINT_NOT_INT8])
    p.set_defaults(func=cmd_generate)

    p = add_verb(
        sub,
        "prompts",
        "generate from a prompt suite (TOML or JSONL) into a reproducible Markdown report",
        "  slmlab prompts runs/long                      # the bundled control-systems suite\n"
        "  slmlab prompts runs/long --suite my_prompts.jsonl --out report.md",
    )
    p.add_argument("run")
    p.add_argument("--suite", default="", help="suite file (default: the bundled control_systems.toml)")
    add_out(p, "report path (default: RUN/prompts_<suite>.md)")
    add_compile(p)
    add_device(p)
    p.set_defaults(func=cmd_prompts)

    p = add_verb(
        sub,
        "ablate",
        "surgical ablations of a trained run (or of every run of a sweep, then over its seeds): each intervention's "
        "validation ppl vs the unmodified model",
        "  slmlab ablate runs/smat_quick/full_s0\n  slmlab ablate runs/smat_ablation/full_s3 --batches 40\n"
        "  slmlab ablate runs/quickstart --layers\n  slmlab ablate runs/quickstart --heads\n"
        "  slmlab ablate runs/smat_quick                # a sweep: each variant's interventions over its seeds",
    )
    p.add_argument("run")
    batches = "validation batches per evaluation (default 20; --n-batches is its older spelling)"
    p.add_argument("--batches", "--n-batches", dest="batches", type=positive_int, default=20, help=batches)
    p.add_argument(
        "--layers", action="store_true", help="also zero each layer's attention and MLP output in turn (any decoder model)"
    )
    p.add_argument(
        "--heads",
        action="store_true",
        help="also zero each attention head's output in turn, before its layer's output projection (n_layer x n_head evaluations)",
    )
    add_device(p)
    p.set_defaults(func=cmd_ablate)

    p = add_verb(
        sub,
        "diagnose",
        "check the loss at init (~ ln V) and that one batch can be overfitted",
        "  slmlab diagnose configs/quickstart.toml\n  slmlab diagnose configs/smt_80m.toml --train.device cuda\n"
        "  slmlab diagnose configs/smat_ablation.toml   # a sweep config: every variant",
        overrides=True,
        reads_runs=False,
    )
    p.add_argument("config")
    p.add_argument("--batch-size", type=positive_int, default=4, help="windows of the one batch overfitted (default 4)")
    p.add_argument("--steps", type=positive_int, default=500, help="most overfitting steps (default 500)")
    p.set_defaults(func=cmd_diagnose)


def cmd_eval(args, extra) -> int:
    from pathlib import Path

    from ..config import parse_overrides
    from ..evals.score import load_for_inference, score_run
    from ..files import json_text
    from ..runs.derived import record_derived, weights_identity
    from ..tables import command_line

    if args.text is not None:
        return eval_text(args, extra)
    long_context = args.by_position or args.context_lengths
    weights = weights_identity(args.run, args.checkpoint) if long_context else None  # before loading: see runs/derived.py
    cfg, model, tokenizer, device = load_for_inference(args.run, args.device, args.int8, args.rope_scale, args.checkpoint)
    if long_context:
        from ..evals.long_context import long_context_report
        from ..evals.score import evaluation_tokens

        split = evaluation_tokens(args.run, cfg, tokenizer, args.split, parse_overrides(extra)).tokens
        # the scale asked for against the one trained with, on the same windows
        trained_model = (
            load_for_inference(args.run, args.device, args.int8, None, args.checkpoint)[1] if args.rope_scale else None
        )
        text, written = long_context_report(
            Path(args.run),
            cfg,
            model,
            split,
            device,
            args.batches,
            args.by_position,
            args.context_length or 0,
            args.bucket,
            args.context_lengths,
            args.rope_scale or 0.0,
            trained_model,
        )
        record_derived(args.run, written, command_line("slmlab", *args.argv), weights)
        print(text)
        return 0
    result = score_run(args.run, cfg, model, tokenizer, device, args.split, args.batches, parse_overrides(extra))
    if args.checkpoint:
        result["checkpoint"] = args.checkpoint
    print(
        json_text(result)
        if args.json
        else f"{result['slice']} {args.split}"
        + (f" at {args.checkpoint}" if args.checkpoint else "")
        + f", {result['coverage']} ({result['tokens']:,} tokens"
        + ("" if result["train_overlap"] is None else f", {result['train_overlap']} in the run's training split")
        + f"; scored in {counted(result['windows'], 'windows')} of {result['window']})"
        + f": loss {result['loss']:.4f}, perplexity {result['ppl']:.2f}, {result['bpb']:.4f} bits/byte"
        + _loss_interval(result)
    )
    return 0


def _loss_interval(result: dict, units: str = "batches") -> str:
    """score_run's (or score_text's, over `units` "windows") 95% CI of the loss as the eval line
    ends, or why it has none."""
    import math

    low, high = result["loss_low"], result["loss_high"]
    if math.isfinite(low) and math.isfinite(high):
        return f"; 95% CI of the loss [{low:.4f}, {high:.4f}] over {counted(result[units], units)}"
    if result[units] < 2:
        return f"; no interval from {counted(1, units)}"
    return "; no interval: the windows overlap (the split is shorter than the windows asked; lower --batches)"


def eval_text(args, extra) -> int:
    """`slmlab eval RUN --text FILE`: every token of the file scored once (evals/text_score.py)."""
    from pathlib import Path

    from ..errors import ConfigError
    from ..evals.score import load_for_inference, scoring_window
    from ..evals.text_score import score_text
    from ..evals.trained_text import trained_passages
    from ..experiments.sweep_dir import is_sweep_dir
    from ..files import json_text

    if extra:
        raise ConfigError(f"--text scores that file: settings such as {extra[0]} choose the validation split; leave them out")
    text = text_file(args.text, "--text")
    where = "standard input" if args.text == "-" else args.text
    if is_sweep_dir(Path(args.run)):
        return eval_sweep_text(args, text, where)
    cfg, model, tokenizer, _ = load_for_inference(args.run, args.device, args.int8, args.rope_scale, args.checkpoint)
    window = scoring_window(cfg, args.context_length)
    result = score_text(model, tokenizer, text, args.stride, progress="scoring", window=window)
    trained = trained_passages(cfg.data, text)
    if trained and trained.found:
        log.warning(f"{where}: {trained.describe()}: the score is optimistic")
    if args.json:
        checkpoint = {"checkpoint": args.checkpoint} if args.checkpoint else {}
        print(json_text({"text": where, **checkpoint, **result, "trained_passages": trained and dataclasses.asdict(trained)}))
        return 0
    print(
        f"{where}"
        + (f" at {args.checkpoint}" if args.checkpoint else "")
        + f": {counted(result['tokens'], 'tokens')} ({counted(result['bytes'], 'bytes')}"
        + (f"; {trained.describe()}" if trained else "")
        + f"), each scored once, in {counted(result['windows'], 'windows')} of "
        + f"{result['window']} moved by {result['stride']}: loss {result['loss']:.4f}, perplexity {result['ppl']:.2f}, "
        + f"{result['bpb']:.4f} bits/byte"
        + _loss_interval(result, "windows")
    )
    return 0


def eval_sweep_text(args, text: str, where: str) -> int:
    """`slmlab eval SWEEP --text FILE`: each variant's bits per byte on the file, paired with the
    baseline's by seed (evals/sweep_text.py)."""
    from pathlib import Path

    from ..errors import ConfigError
    from ..evals.sweep_text import score_sweep_text
    from ..files import json_text

    for option in ("checkpoint", "int8", "rope_scale"):
        if getattr(args, option):
            flag = "--" + option.replace("_", "-")
            raise ConfigError(f"{flag} reads one run; {args.run} is a sweep, whose runs are scored at their final weights")
    table, figures = score_sweep_text(Path(args.run), text, args.stride, args.device, args.context_length)
    print(json_text({"text": where, **figures}) if args.json else f"{figures['sweep']} on {where} (bits per byte):\n{table}")
    return 0


def cmd_generate(args, extra) -> int:
    from ..errors import ConfigError
    from ..evals.score import generate_texts, load_for_inference

    check_greedy_options(args)
    cfg, model, tokenizer, device = load_for_inference(args.run, args.device, args.int8, checkpoint=args.checkpoint)
    if args.ignore_eos and tokenizer.eos_id is None:
        raise ConfigError(
            f"--ignore-eos would change nothing: {args.run}'s {tokenizer.kind} tokenizer has no end-of-text token, so "
            "generation runs to --max-new-tokens anyway; drop it"
        )
    stream = StreamedLine() if args.num_samples == 1 else None  # one sample is printed as it is generated
    try:
        texts = generate_texts(
            model,
            tokenizer,
            cfg,
            device,
            prompt_text(args),
            args.num_samples,
            args.max_new_tokens,
            args.temperature,
            args.top_k,
            args.top_p,
            args.seed,
            not args.no_cache,
            args.compile,
            write=stream,
            stop_at_eos=not args.ignore_eos,
            progress=f"sampling {args.num_samples}",
        )
    finally:
        if stream is not None:
            stream.end()  # also where Ctrl-C or an error stopped it: the message then starts a line of its own
    if stream is None:
        for text in texts:
            print(text)
            print("-" * 40)
    return 0


class StreamedLine:
    """A streamed sample: each piece of text to standard output at once, no newline added, until
    `end` ends the line (if anything was written)."""

    def __init__(self):
        self.written = False

    def __call__(self, text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()
        self.written = True

    def end(self) -> None:
        if self.written:
            print()


def cmd_prompts(args, extra) -> int:
    from ..evals.prompts import prompts_report

    report, path = prompts_report(args.run, args.suite or None, args.out or None, args.device, args.compile)
    print(report)
    print(f"saved: {path}")
    return 0


def cmd_ablate(args, extra) -> int:
    from pathlib import Path

    from ..evals.ablate import ablate
    from ..evals.sweep_ablate import ablate_sweep
    from ..experiments.sweep_dir import is_sweep_dir

    run = Path(args.run)
    sweep = is_sweep_dir(run)  # every finished run, then each variant over its seeds
    table, _ = (ablate_sweep if sweep else ablate)(run, args.batches, args.device, args.layers, args.heads)
    print(table)
    print(f"saved: {run / 'ablations.md'}, ablations.json" + (" (and each run's own)" if sweep else ""))
    return 0


def cmd_diagnose(args, extra) -> int:
    from ..evals.diagnose import diagnose

    configs = configs_to_inspect(args.config, extra)
    passed = True
    for label, cfg in configs.items():
        result = diagnose(cfg, batch_size=args.batch_size, max_steps=args.steps, progress=sys.stderr.isatty())
        print("\n".join(result.lines() if len(configs) == 1 else [f"{label}: {line}" for line in result.lines()]))
        passed = passed and result.init_ok and result.overfit_ok
    return 0 if passed else 1
