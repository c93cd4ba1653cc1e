"""Training verbs: `train` (one run, a curriculum, resume; data-parallel with --nproc) and `sweep`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from ..tables import command_line, counted
from ..torchrun_env import process_rank, report_error, world_size
from .argument_types import checkpoint_name, non_negative_int, positive_int
from .options import add_verb, load_run_config, option_rules


def register(sub) -> None:
    p = add_verb(
        sub,
        "train",
        "train a model from a config (or resume a run)",
        "  slmlab train configs/quickstart.toml\n"
        "  slmlab train configs/quickstart.toml --model.n_layer 6 --train.steps 2000 --name deeper\n"
        "  slmlab train --resume runs/quickstart --train.steps 3000\n"
        "  slmlab train configs/smat_64m.toml --nproc 4                        # DDP on 4 GPUs\n"
        "  slmlab train configs/smat_64m.toml --nproc 4 --train.parallel fsdp  # FSDP2\n"
        "  torchrun --nnodes 2 --nproc_per_node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\\n"
        "      -m slmlab train configs/longctx_300m.toml                       # multi-node",
        overrides=True,
    )
    p.add_argument("config", nargs="?", help="TOML config file")
    p.add_argument("--resume", metavar="RUN", help="continue the run in this directory from its latest checkpoint")
    p.add_argument(
        "--from-checkpoint",
        metavar="STEP",
        type=checkpoint_name,
        help="with --resume: continue from this checkpoint (e.g. 200 or step_000200) rather than the latest",
    )
    p.add_argument("--name", help="run name (default: the config file's stem)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace the run of the same name (removes only the files slmlab wrote there)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar: log lines (one per evaluation, and one a minute)")
    p.add_argument(
        "--viz-every",
        type=non_negative_int,
        default=None,
        metavar="N",
        help="save an attention/loss frame every N steps (RUN/viz/frames; slmlab viz animate RUN); = --train.viz_every N",
    )
    p.add_argument(
        "--nproc",
        type=positive_int,
        default=1,
        help="data-parallel processes on this machine (default 1; more launches torchrun; train.parallel picks DDP or FSDP2)",
    )
    resumed = "a resumed run continues under its own recorded config"
    option_rules(
        p,
        needs={"--from-checkpoint": "--resume"},
        conflicts=[
            ("--resume", "CONFIG", f"{resumed}; only --train.steps, --viz-every and the tracker settings change"),
            ("--resume", "--name", f"{resumed} and name; train CONFIG --name NEW for a new run"),
            ("--resume", "--overwrite", "--overwrite replaces a run, --resume continues it"),
        ],
    )
    p.set_defaults(func=cmd_train)

    p = add_verb(
        sub,
        "sweep",
        "run every (variant, seed) of a sweep config in parallel and print the paired results table",
        "  slmlab sweep configs/smat_quick.toml --jobs 2\n"
        "  slmlab sweep configs/smat_ablation.toml --jobs 2 --train.steps 100   # override every run\n"
        "  slmlab sweep configs/smat_ablation.toml --dry-run                    # list runs and their state\n"
        "  slmlab sweep configs/smat_64m_ablation.toml --slurm sweep.sh --sbatch=--partition=gpu\n"
        "  sbatch sweep.sh && slmlab sweep configs/smat_64m_ablation.toml       # results once all tasks are done",
        overrides=True,
    )
    p.add_argument("config", help="sweep TOML (base config, variants, seeds)")
    p.add_argument("--jobs", type=positive_int, default=1, help="parallel runs on CPU (default 1; GPUs: one run per GPU)")
    p.add_argument(
        "--dry-run", action="store_true", help="list the runs (with their index) and whether each is new, resumable or done"
    )
    p.add_argument(
        "--only", type=non_negative_int, metavar="INDEX", help="run only the run with this index (a cluster array task)"
    )
    p.add_argument("--slurm", metavar="FILE", help="write a SLURM job-array script (one task per run) instead of running")
    p.add_argument(
        "--sbatch",
        action="append",
        default=[],
        metavar="OPTION",
        help="extra #SBATCH option for --slurm, e.g. --sbatch=--partition=gpu (repeatable)",
    )
    modes = {"--dry-run": "lists the runs", "--slurm": "writes a script", "--only": "trains one run"}
    option_rules(
        p,
        needs={"--sbatch": "--slurm"},
        conflicts=[
            *((a, b, f"{a} {modes[a]}, {b} {modes[b]}") for i, a in enumerate(modes) for b in list(modes)[i + 1 :]),
            *(("--jobs", mode, f"{mode} {what}: no runs in parallel") for mode, what in modes.items()),
        ],
    )
    p.set_defaults(func=cmd_sweep)


def cmd_train(args, extra) -> int:
    cfg = train_config(args, extra)  # a bad config fails here, once, before any process starts
    from ..runs import RunDir

    if args.nproc > 1:
        if not args.resume:
            RunDir.for_config(cfg).ensure_free(args.overwrite)
        return launch_torchrun(args.nproc, without_option(args.argv[1:], "--nproc"))
    from ..persona.gain import recorded_base
    from ..training import distributed, train
    from ..training.stopping import TrainingStopped, stop_at_step_end

    stage2 = recorded_base(args.resume) if args.resume else (None, "")  # a damaged record fails before training
    finished = False
    try:
        with stop_at_step_end():
            result = train(
                cfg,
                resume=bool(args.resume),
                overwrite=args.overwrite,
                progress=not args.no_progress,
                from_checkpoint=args.from_checkpoint,
            )
        finished = True
    except TrainingStopped as stop:  # under torchrun every process stopped at this step, together
        finished = True  # every process leaves the group as after a finished run
        return report_stop(stop, args.resume or RunDir.for_config(cfg).path, bool(cfg.plugins))
    finally:
        distributed.close(finished)
    if process_rank() != 0:
        return 0
    print(f"run: {result.run_dir}")
    print(
        f"step {result.step}: validation loss {result.val_loss:.4f}, perplexity {result.val_ppl:.2f}, "
        f"{result.val_bpb:.4f} bits/byte, "
        f"{result.tokens_per_s:,.0f} tokens/s (median over logging windows)"
    )
    if result.sample:
        print("sample:\n" + result.sample)
    if args.resume:  # a persona run stopped and finished here is scored against its base as `persona` scores it
        from .persona import report_stage2_gain

        report_stage2_gain(result.run_dir, *stage2, cfg.train.device)
    return 0


def report_stop(stop, run: str | Path, plugins: bool) -> int:
    """Say at which step training stopped on a signal (TrainingStopped `stop`) and the command that
    continues run `run` (with --trust-plugins where its config names plugins); the shell's exit code."""
    resume = ["--resume", str(run)]
    processes = world_size()
    resume += ["--nproc", str(processes)] if processes > 1 else []
    resume += ["--trust-plugins"] if plugins else []  # the code this run was started with
    report_error(f"slmlab: {stop}; continue with: {command_line('slmlab', 'train', *resume)}")  # rank 0 says it
    return stop.exit_code


def train_config(args, extra):
    """The checked config of `train`: CONFIG + overrides, or the run's own for --resume."""
    from ..config import ConfigError, apply_overrides, check_no_ignored_setting, config_from_dict, parse_overrides

    if args.viz_every is not None:
        extra = [*extra, "--train.viz_every", str(args.viz_every)]
    if args.resume:
        from ..runs import RunDir

        run = Path(os.path.abspath(args.resume))  # "runs/x/." or "." name the folder itself
        overrides = parse_overrides(extra)
        from ..training.resume import resumable_settings

        unknown = set(overrides) - resumable_settings()
        if unknown:
            raise ConfigError(
                "--resume continues the run as configured; only --train.steps, --train.viz_every, the train.tracker* "
                "fields, where it runs (--train.device, --train.threads, --train.compile, --train.parallel, "
                "--model.local_kernel) and where its data lies (--data.source, --data.cache_dir) can change, "
                f"not {sorted(unknown)}{_longer_phase_hint(run, unknown)}"
            )
        cfg = RunDir(run).read_config()
        cfg = config_from_dict(apply_overrides(cfg.to_dict(), {**overrides, "name": run.name, "out_dir": str(run.parent)}))
        try:  # --train.steps on a curriculum whose phases train their own steps
            check_no_ignored_setting(cfg, keys=set(overrides))
        except ConfigError as err:
            last = f"phase{len(cfg.phases)}_{cfg.phases[-1].name}" if cfg.phases else ""
            raise ConfigError(
                f"{err}" + (f"; to train a phase longer, resume its own folder ({run / last})" if last else "")
            ) from None
    elif args.config:
        cfg = load_run_config(args.config, extra, args.name)
        from ..data.corpora import check_source_settings

        for phase in cfg.phase_configs():
            check_source_settings(phase.data)
    else:
        raise ConfigError("give a CONFIG file to train, or --resume RUN_DIR")
    if cfg.train.batch_size % args.nproc:
        raise ConfigError(
            f"train.batch_size = {cfg.train.batch_size} (the global batch) must be divisible by --nproc {args.nproc}"
        )
    return cfg


def _longer_phase_hint(run: Path, keys: set[str]) -> str:
    """How to train a curriculum's last phase longer (`--resume RUN --phases.C.steps N` is refused: a
    resume continues the run as configured): resume the phase's own folder with --train.steps."""
    from ..config import phase_index
    from ..errors import SlmlabError
    from ..runs import RunDir
    from ..tables import command_line

    wanted = next((key.split(".")[1] for key in sorted(keys) if key.startswith("phases.") and key.endswith(".steps")), None)
    try:
        cfg = RunDir(run).read_config() if wanted is not None else None
    except SlmlabError:
        return ""
    names = [phase.name for phase in cfg.phases] if cfg else []
    index = phase_index(names, wanted) if names else None
    if index != len(names) - 1:  # none, or an earlier phase, whose end began the later phases: it cannot move
        return ""
    folder = run / cfg.phase(index).name
    return f"; to train phase {names[index]} longer, resume its own folder: {command_line('slmlab', 'train', '--resume', folder, '--train.steps', 'N')}"


def launch_torchrun(nproc: int, argv: list[str]) -> int:
    """`slmlab train --nproc N ...` = `torchrun --standalone --nproc_per_node N -m slmlab train ...`
    (CPU threads shared between the processes unless OMP_NUM_THREADS says otherwise), through
    training/launch.py: a process's failure is one line, not torchrun's traceback."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    command = [
        sys.executable,
        "-m",
        "slmlab.training.launch",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "slmlab",
        "train",
        *argv,
    ]
    launcher = subprocess.Popen(command, env=env)
    # Ctrl-C reaches every process of the terminal's group, torchrun's and its workers' too: this
    # one waits for them to stop (on KeyboardInterrupt subprocess would kill torchrun at once and
    # orphan the workers); a SIGTERM sent to this process alone is passed on to torchrun.
    previous = {
        signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
        signal.SIGTERM: signal.signal(signal.SIGTERM, lambda number, _: launcher.send_signal(number)),
    }
    try:
        return launcher.wait()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def without_option(argv: list[str], option: str) -> list[str]:
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


def cmd_sweep(args, extra) -> int:
    from ..config import parse_overrides
    from ..experiments.results import write_results
    from ..experiments.slurm import write_slurm_script
    from ..experiments.sweep import (
        describe_outcome,
        dry_run_lines,
        failed_runs,
        run_one,
        run_status,
        run_sweep,
        sweep_lock,
        tune_settings,
    )
    from ..experiments.sweep_config import load_sweep
    from ..experiments.tuning import tuning_jobs
    from ..training.stopping import stop_at_step_end

    sweep, jobs = load_sweep(
        args.config, parse_overrides(extra), step_times="recorded" if args.slurm or args.only is not None else "record"
    )
    if sweep.lm_eval.tasks:  # known before any run trains: the table is scored after all of them
        from ..evals.harness import check_tasks

        check_tasks(sweep.lm_eval.tasks)
    if args.dry_run:
        tuning = tuning_jobs(sweep, jobs)  # none without [tune]
        if tuning and all(run_status(job) == "done" for job in tuning):  # list the runs at their tuned settings
            jobs, _ = tune_settings(sweep, jobs, run=False)
        print("\n".join([*(f"tune {line}" for line in dry_run_lines(tuning)), *dry_run_lines(jobs)]))
    elif args.slurm:
        jobs, _ = tune_settings(sweep, jobs, run=False)
        print(write_slurm_script(Path(args.slurm), args.config, sweep, jobs, extra, args.sbatch))
    elif args.only is not None:
        jobs, _ = tune_settings(sweep, jobs, run=False)
        with stop_at_step_end():
            job, outcome = run_one(sweep, jobs, args.only)
        print(f"{job.run.path}: {describe_outcome(outcome)}")
        return 1 if "failed" in outcome else 0  # a cluster task that failed says so
    else:
        with sweep_lock(sweep), stop_at_step_end():  # SIGTERM too lets the workers finish their step
            jobs, tuning = tune_settings(sweep, jobs, args.jobs)
            results = run_sweep(sweep, jobs, args.jobs)
            if sweep.lm_eval.tasks:
                from ..evals.harness import score_sweep_runs

                spec = sweep.lm_eval
                results = score_sweep_runs(jobs, results, spec.tasks, spec.limit, spec.num_fewshot, spec.batch_size)
            sweep_dir = Path(sweep.out_dir) / sweep.name
            print(write_results(sweep_dir, sweep, jobs, results, tuning))
        print(f"results: {sweep_dir}/results.md, results.json, results.csv, curves.png")
        failed = failed_runs(jobs, results)
        if failed:  # the table is written, and the exit status says it is not whole
            print(
                f"slmlab: {len(failed)} of {counted(len(jobs), 'runs')} failed (the failures column); {failed[0]}",
                file=sys.stderr,
            )
            return 1
    return 0
