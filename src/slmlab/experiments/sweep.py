"""Multi-seed ablation sweeps (a sweep config: experiments/sweep_config.py): every (variant, seed)
is an ordinary run directory.

Runs go to `<out_dir>/<name>/<variant>_s<seed>/` and execute in parallel worker processes
(`jobs`), each with its share of the CPU threads, or one per GPU when GPUs exist. A finished run
(it has summary.json) is skipped, an interrupted one resumes from its latest checkpoint, so the
whole sweep is resumable. All variants of a seed see the same data order (the window sampler is
seeded by train.seed alone): a paired design.

On a cluster, `slurm.slurm_script` writes a SLURM job array instead: task i runs job i alone
(`slmlab sweep CONFIG --only i`, on the GPU SLURM gives it); a last `slmlab sweep CONFIG` finds
every run finished and writes the results table.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import torch

from ..config import ConfigError, RunConfig
from ..config.values import toml_literal
from ..errors import SlmlabError, TrainingError
from ..locks import DirectoryLock
from ..runs.run_dir import RunDir, final_weights_intact, model_run, phase_runs
from ..tables import counted, human
from ..training import stopping
from ..training.memory_room import runs_that_fit
from .budget import with_vocab
from .sweep_config import Job, SweepConfig
from .tuning import choose, tuning_jobs, tuning_record, with_tuned_settings

log = logging.getLogger("slmlab")


def run_status(job: Job) -> str:
    """'done' (summary.json exists, at the steps the sweep asks, with its final weights intact),
    'resume' (has a checkpoint, a curriculum with a phase begun (its checkpoints lie in the phases'
    folders), or finished at other steps, with its data elsewhere (a resume checks and records the
    new place) or with its final weights damaged (a resume writes them again)), or 'new' (trained
    afresh, replacing what the folder holds)."""
    from ..training.resume import relocated

    run = job.run
    if run.summary.is_file():
        recorded = run.read_config()
        holder = model_run(run.path)[0]
        same = recorded.train.steps == job.config.train.steps and not relocated(recorded, job.config)
        return "done" if same and final_weights_intact(holder, holder.read_summary()) else "resume"
    if (run.checkpoints / "latest").is_file() or (job.config.phases and phase_runs(run.path, job.config, begun=True)):
        return "resume"
    return "new"


def changed_since_trained(job: Job) -> list[str]:
    """The settings where the run folder's recorded config differs from what the sweep asks now,
    as 'key: then -> now' (none for a new run; train.steps may grow, the trackers, where it runs and
    where the data lies may change, as in a resume; the tokenizer's vocabulary size is filled in at
    training)."""
    if not job.run.config.is_file():
        return []
    from ..training.resume import resumable_settings

    then, now = job.run.read_config().settings(), job.config.settings()
    free = {*resumable_settings(), "name", "out_dir"}  # (train.threads and train.device: `_execute` sets them per run)
    if now["model.vocab_size"] == 0:
        free.add("model.vocab_size")
    changed = [
        f"{key}: {toml_literal(then.get(key))} -> {toml_literal(value)}"
        for key, value in now.items()
        if key not in free and then.get(key) != value
    ]
    if then["train.steps"] > now["train.steps"]:  # trained past the sweep's steps (a resume by hand): no resume undoes that
        changed.append(f"train.steps: {then['train.steps']} -> {now['train.steps']}")
    return changed


def check_run_places(jobs: list[Job]) -> None:
    """Refuse, before any run starts, a run's place that is a file, a link or a folder of other
    files than a run's (such a run failed alone, once the others had trained, with advice naming
    `train`'s --name), or a run another process holds; under the run's lock, as the trainer
    checks it (temp files a killed write left are removed first)."""
    rename = "move it away, or give the sweep another name or out_dir"
    for job in jobs:
        job.run.check_writable(rename)
        with job.run.lock():
            job.run.ensure_free(overwrite=True, rename=rename)


def check_runs_match(jobs: list[Job]) -> None:
    """Refuse to reuse (skip or resume) a run folder trained with other settings than the sweep
    asks now: its result would stand in the table under the new settings."""
    for job in jobs:
        changed = changed_since_trained(job)
        if changed:
            shown = "; ".join(changed[:3]) + (f"; and {len(changed) - 3} more" if len(changed) > 3 else "")
            raise ConfigError(
                f"{job.run.path} was trained with other settings than the sweep asks now ({shown}); "
                "delete that run folder to train it again, or give the sweep another name"
            )


def follow_parent(parent: int, every: float = 1.0) -> None:
    """Worker initializer: end this worker as soon as the sweep process that started it is gone
    (kill -9 of the parent alone, as the OOM killer does), so no orphan keeps training while a
    rerun trains the same runs. A watcher thread polls the parent's PID; the worker's run lock
    dies with it and its last checkpoint stays the one to resume from."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every)
        os._exit(1)

    threading.Thread(target=watch, name="follow-parent", daemon=True).start()
    signal.signal(stopping.FORWARDED, lambda number, frame: None)  # between runs a stop passed on is no kill


def start_worker(parent: int, level: int) -> None:
    """Worker initializer: `follow_parent`, and log as the sweep process does: slmlab's lines at
    its level (INFO from the CLI: each run's line per evaluation, with its name), to stderr. A
    spawned worker's logging was unset, so its runs trained in silence."""
    follow_parent(parent)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)  # no-op where logging is set
    log.setLevel(level)


def sweep_lock(sweep: SweepConfig) -> DirectoryLock:
    """The sweep directory's writer lock: one `slmlab sweep` runs a sweep at a time (cluster
    tasks, `--only`, lock their own runs instead)."""
    return DirectoryLock(Path(sweep.out_dir) / sweep.name, "sweep")


_stopped: list[str] = []  # in a worker: set once a signal stopped one of its runs


def _execute(config: RunConfig, status: str, threads: int, device: str) -> dict:
    """Worker: train one run (fresh or resumed); returns its summary, the failure, or the stop
    (Ctrl-C or SIGTERM: the step under way ends with a checkpoint; a worker that stopped starts
    no other run, though the pool had already handed it one)."""
    from ..training import train

    if _stopped:
        return {"stopped": "not started: the sweep was stopped"}
    torch.set_num_threads(threads)
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, threads=threads, device=device))
    try:
        with stopping.stop_at_step_end():
            train(config, resume=status == "resume", overwrite=status == "new", progress=False)
            if stopping.requested():  # asked for after the last step: this run finished, the next must not start
                _stopped.append(stopping.requested())
    except SlmlabError as err:  # this run's own problem (diverged, in use, damaged): the others go on
        return {"failed": str(err)}
    except (stopping.TrainingStopped, KeyboardInterrupt) as stop:
        _stopped.append(str(stop))
        return {"stopped": str(stop) or "interrupted before its training loop"}
    return RunDir.for_config(config).read_summary()


def plan_devices(jobs: int) -> tuple[int, list[str], int]:
    """(parallel jobs, device per slot, threads per job): one job per GPU, else CPU cores shared."""
    gpus = torch.cuda.device_count()
    if gpus:
        return gpus, [f"cuda:{i}" for i in range(gpus)], max(1, (os.cpu_count() or 1) // gpus)
    jobs = max(1, jobs)
    return jobs, ["cpu"] * jobs, max(1, (os.cpu_count() or 1) // jobs)


def run_sweep(sweep: SweepConfig, jobs: list[Job], parallel: int = 1) -> dict[tuple[str, int], dict]:
    """Run every unfinished job; returns (variant, seed) -> summary (or {"failed": ...}). Ctrl-C or
    SIGTERM stops it (KeyboardInterrupt) once the runs under way have written a checkpoint."""
    check_run_places(jobs)
    check_runs_match(jobs)
    results: dict[tuple[str, int], dict] = {}
    pending = []
    for job in jobs:
        status = run_status(job)
        if status == "done":
            results[(job.variant, job.seed)] = job.run.read_summary()
            log.info("%s: finished earlier, skipped", job.run.path)
        else:  # a "new" run that started but never checkpointed is replaced (train(overwrite=True))
            pending.append((job, status))
    slots, devices, threads = plan_devices(min(parallel, len(pending)))  # --jobs 8 for 2 runs: 2 share the cores
    if devices[0] == "cpu" and slots > 1:  # as many side by side as the memory holds (a killed worker ends the pool)
        shapes = {job.variant: job.config for job, _ in pending}  # a variant's seeds share its shapes
        phases = [with_vocab(phase) for config in shapes.values() for phase in config.phase_configs()]  # a curriculum's each
        fit, largest = runs_that_fit(phases, slots)
        if fit < slots:
            message = "this machine's memory holds %d of these runs at a time (the largest needs at least %s): running %d in parallel, not %d"
            log.warning(message, fit, human(largest, "B"), fit, slots)
            slots, devices, threads = plan_devices(fit)
    log.info(
        "sweep %s: %s to do, %d done; %s, %s each",
        sweep.name,
        counted(len(pending), "runs"),
        len(results),
        counted(slots, "parallel jobs"),
        counted(threads, "threads"),
    )
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=slots, mp_context=context, initializer=start_worker, initargs=(os.getpid(), log.getEffectiveLevel())
    ) as pool:
        futures = {}
        try:
            for i, (job, status) in enumerate(pending):
                futures[pool.submit(_execute, job.config, status, threads, devices[i % slots])] = job
            for future in as_completed(futures):
                job = futures[future]
                outcome = results[(job.variant, job.seed)] = future.result()
                log.info("%s: %s", job.run.path, describe_outcome(outcome))
                if "stopped" in outcome:  # a signal reached this worker: the sweep stops with it
                    raise KeyboardInterrupt
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the workers got it too and stop at their step's end
            _stop_pool(pool, futures)
            raise
        except BrokenProcessPool:  # a worker was killed (the OOM killer's SIGKILL); the pool ends the others
            under_way = [
                str(job.run.path) for job in futures.values() if job.run.config.is_file() and not job.run.summary.is_file()
            ]
            raise TrainingError(
                f"a sweep worker was killed from outside (out of memory?) while training {', '.join(under_way) or 'a run'}; "
                "every run keeps its last checkpoint: run the same sweep again to continue them (with fewer --jobs "
                "if memory ran out)"
            ) from None
    check_same_text(jobs, results)
    return results


def _stop_pool(pool: ProcessPoolExecutor, futures: dict) -> None:
    """Start no queued run and wait for the runs under way to write their checkpoints (the pool
    would otherwise train every queued run before letting the sweep exit)."""
    log.warning("stopping the sweep: runs under way end their step with a checkpoint; queued runs are not started")
    for worker in multiprocessing.active_children():  # `kill SWEEP` reached this process alone
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, stopping.FORWARDED)
    pool.shutdown(wait=True, cancel_futures=True)
    for future, job in futures.items():
        if future.done() and not future.cancelled() and future.exception() is None:
            log.info("%s: %s", job.run.path, describe_outcome(future.result()))


def check_same_text(jobs: list[Job], results: dict[tuple[str, int], dict]) -> None:
    """Refuse a table whose runs trained on different token streams under the same data settings
    (the corpus changed between a run kept from an earlier `slmlab sweep` and one trained now):
    their comparison would be of data, not of variants. Summaries of older slmlab carry no
    `data_sha256` and are not checked."""
    streams: dict[str, dict[str, Path]] = {}
    for job in jobs:
        trained_on = results.get((job.variant, job.seed), {}).get("data_sha256")
        if trained_on is not None:
            setting = json.dumps({k: v for k, v in job.config.settings().items() if k.startswith("data.")}, sort_keys=True)
            streams.setdefault(setting, {}).setdefault(json.dumps(trained_on, sort_keys=True), job.run.path)
    for runs in streams.values():
        if len(runs) > 1:
            first, other = list(runs.values())[:2]
            raise ConfigError(
                f"{first} and {other} trained on different text under the same data settings (the corpus changed "
                "between them): delete the runs trained on the old corpus to train them again, or restore it"
            )


def dry_run_lines(jobs: list[Job]) -> list[str]:
    """One line per run: its index (for --only), directory, state and steps (a [budget] gives each
    variant its own)."""
    return [
        f"{i:3d}  {job.run.path}  [{'trained with other settings' if changed_since_trained(job) else run_status(job)}]"
        f"  {_steps(job.config)}"
        for i, job in enumerate(jobs)
    ]


def _steps(config: RunConfig) -> str:
    """The steps a run trains: "300 steps", or a curriculum's over its phases ("14 steps: 6 + 4 + 4
    in phases A, B, C"; its own train.steps is read by no phase)."""
    if not config.phases:
        return counted(config.train.steps, "steps")
    steps = [phase.train.steps for phase in config.phase_configs()]
    return (
        f"{counted(sum(steps), 'steps')}: {' + '.join(f'{n:,}' for n in steps)} "
        f"in phases {', '.join(phase.name for phase in config.phases)}"
    )


def tune_settings(sweep: SweepConfig, jobs: list[Job], parallel: int = 1, run: bool = True) -> tuple[list[Job], dict | None]:
    """With [tune]: run (or, `run=False`, only read) the tuning runs, then give each variant's
    jobs its chosen grid point (learning rate, warmup, weight decay) -> (jobs, the tuning record
    for the results); else unchanged."""
    if not sweep.tune.grid():
        return jobs, None
    tuning = tuning_jobs(sweep, jobs)
    if run:
        check_run_places(jobs)  # the runs after the tuning's, before it
        results = run_sweep(sweep, tuning, parallel)
    else:
        unfinished = [str(job.run.path) for job in tuning if run_status(job) != "done"]
        if unfinished:
            raise ConfigError(
                f"tuning runs not finished: {len(unfinished)} (e.g. {unfinished[0]}): run `slmlab sweep` on this "
                "config once locally to tune, or remove [tune]"
            )
        results = {(job.variant, job.seed): job.run.read_summary() for job in tuning}
    chosen = choose(sweep, results)
    return with_tuned_settings(jobs, chosen), tuning_record(sweep, results, chosen)


def describe_outcome(outcome: dict) -> str:
    """A run's outcome in a few words: its failure or stop, or its validation perplexity."""
    return outcome.get("failed") or outcome.get("stopped") or f"val ppl {outcome['val_ppl']:.3f}"


def failed_runs(jobs: list[Job], results: dict[tuple[str, int], dict]) -> list[str]:
    """'RUN: why' for each job whose run failed, in the sweep's order."""
    return [
        f"{job.run.path}: {results[(job.variant, job.seed)]['failed']}"
        for job in jobs
        if "failed" in results.get((job.variant, job.seed), {})
    ]


def run_one(sweep: SweepConfig, jobs: list[Job], index: int) -> tuple[Job, dict]:
    """Run job `index` alone (a cluster array task) -> (the job, its outcome)."""
    if not 0 <= index < len(jobs):
        raise ConfigError(f"--only {index}: the sweep has runs 0..{len(jobs) - 1} (see --dry-run)")
    job = jobs[index]
    return job, run_sweep(sweep, [job], 1)[(job.variant, job.seed)]
