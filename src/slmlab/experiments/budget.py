"""Equal-compute sweeps: a budget in tokens, training FLOPs or seconds sets each variant's steps.

    [budget]
    flops = 2e13          # or: tokens = 5_000_000, or: seconds = 300

Each variant trains steps = floor(budget / cost of one optimizer step), where one step is
batch_size x seq_len x grad_accum tokens; its FLOPs are that many tokens times the model's training
FLOPs per token (counted by torch.utils.flop_counter on the meta device, so a plugin's cost counts
without a formula; on the CPU for a forward that reads values, as an MoE's routing does); its
seconds are the median of 5 timed optimizer steps of the variant as it trains
(`seconds_per_step`) after 2 warm-up steps, on the machine that runs the sweep command, recorded
in the sweep folder's budget.json (`apply_budget`). The LR schedule is a function of train.steps,
so it stretches with the budget (warmup stays as configured). The results table says which budget
held and shows each variant's steps, tokens and FLOPs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import ConfigError, RunConfig, apply_overrides, config_from_dict, resolve_vocab
from ..config.checks import INT64_LIMIT
from ..data.tokens import vocab_size_of
from ..files import atomic_write_text, json_text, read_json
from ..model import build_model
from ..model.accounting import countable_model, measured_flops_per_token
from ..tables import counted
from ..training.distributed import World
from ..training.memory_room import check_training_room
from ..training.optim import build_optimizer, select_trainable
from ..training.runtime import median_seconds, resolve_device
from ..training.step import OptimizerStep

log = logging.getLogger("slmlab")
BUDGET_TIMINGS = "budget.json"  # a sweep folder's record of its variants' step times (seconds budgets)


@dataclass
class Budget:
    """`[budget]` in a sweep: equal compute, each variant's steps set by at most one of tokens,
    flops, seconds (0 = not this one)."""

    tokens: int = 0  # training tokens per run
    flops: float = 0.0  # training FLOPs per run (counted by torch.utils.flop_counter)
    seconds: float = 0.0  # seconds of training per run, from each variant's measured step time

    def held(self) -> tuple[str, float] | None:
        """("tokens" | "flops" | "seconds", amount), or None for a sweep at equal steps."""
        given = [(f.name, getattr(self, f.name)) for f in dataclasses.fields(self) if getattr(self, f.name)]
        if len(given) > 1:
            raise ConfigError(f"[budget] sets {' and '.join(n for n, _ in given)}: give one of tokens, flops, seconds")
        if given and given[0][1] < 0:
            raise ConfigError(f"budget.{given[0][0]} must be > 0, got {given[0][1]}")
        return given[0] if given else None


def tokens_per_step(cfg: RunConfig) -> int:
    return cfg.train.batch_size * cfg.data.seq_len * cfg.train.grad_accum


def with_vocab(cfg: RunConfig) -> RunConfig:
    """The config with model.vocab_size taken from its tokenizer when it is 0."""
    if cfg.model.vocab_size == 0:
        cfg = config_from_dict(cfg.to_dict())  # a copy: the job's own config resolves it when it trains
        resolve_vocab(cfg, vocab_size_of(cfg.data))
    return cfg


def flops_per_token(cfg: RunConfig) -> float:
    """Training FLOPs per token of the config's model at its seq_len (`countable_model`: on the meta
    device, no memory), with the parameters train.trainable freezes frozen: autograd computes no
    gradient for them."""
    model = countable_model(with_vocab(cfg).model)
    select_trainable(model, cfg.train.trainable)
    return measured_flops_per_token(model, cfg.data.seq_len)


class _RandomWindows:
    """A sampler of one fixed batch of random tokens, (batch_size, seq_len) inputs and targets."""

    def __init__(self, cfg: RunConfig, device: torch.device):
        shape = (cfg.train.batch_size, cfg.data.seq_len)
        self.batch = torch.randint(0, cfg.model.vocab_size, shape, device=device)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.batch, self.batch


def run_step(cfg: RunConfig) -> OptimizerStep:
    """One of the run's own optimizer steps (`OptimizerStep`, as the trainer takes them: its device,
    dtype, optimizer, trainable parameters, grad_accum micro-batches, gradient clipping,
    torch.compile) on one batch of random tokens of its shape, already on the device; a fresh
    model, seeded. A variant that trains with Muon steps with Muon."""
    cfg = with_vocab(cfg)
    device = resolve_device(cfg.train.device)
    check_training_room(cfg, device, World())
    torch.manual_seed(0)
    model = build_model(cfg.model).to(device)
    select_trainable(model, cfg.train.trainable)
    forward = torch.compile(model) if cfg.train.compile else model
    optimizer = build_optimizer(model, cfg.train, device)
    return OptimizerStep(model, model, forward, optimizer, _RandomWindows(cfg, device), cfg.train, World(), device)


def seconds_per_step(cfg: RunConfig, repeats: int = 5, warmup: int = 2) -> float:
    """Median wall-clock seconds of one of the run's own optimizer steps (`run_step`), after
    `warmup` steps (in which a compiled model compiles)."""
    step = run_step(cfg)
    for n in range(warmup):
        step(n)
    return median_seconds(lambda: step(warmup), repeats, step.device)


def step_cost(cfg: RunConfig, kind: str) -> float:
    """What one optimizer step of `cfg` spends of a budget of `kind`."""
    if kind == "tokens":
        return float(tokens_per_step(cfg))
    if kind == "flops":
        return flops_per_token(cfg) * tokens_per_step(cfg)
    return seconds_per_step(cfg)


def steps_within(cfg: RunConfig, kind: str, amount: float, label: str = "", cost: float | None = None) -> int:
    """The most steps `cfg` can take within the budget (at least 1), refusing a budget below warmup;
    `cost`: one step's, when already known (else step_cost measures it)."""
    steps = math.floor(amount / (step_cost(cfg, kind) if cost is None else cost))
    if steps <= cfg.train.warmup_steps:
        raise ConfigError(
            f"budget {kind} = {amount:g} buys {label or cfg.name} only {counted(steps, 'steps')}, not more than its "
            f"{counted(cfg.train.warmup_steps, 'warmup steps')}; raise the budget"
        )
    if steps >= INT64_LIMIT:  # train.steps must stay below it
        raise ConfigError(
            f"budget {kind} = {amount:g} buys {label or cfg.name} {steps:.3g} steps, more than a run can count "
            f"(below 2**63); lower the budget"
        )
    return steps


def apply_budget(
    configs: dict[str, RunConfig], budget: Budget, timings: Path | None = None, step_times: str = "measure"
) -> dict[str, int]:
    """variant -> steps under the budget (costs measured once per variant); {} without a budget.

    A seconds budget times each variant's step, and a timing moves from run to run: measured
    anew by every command, it gave a finished sweep run again more steps to train, and each SLURM
    task its own. So the step times are read from `timings` (the sweep folder's budget.json) for
    every variant it holds at the same settings, and the others (`step_times`) are "measure"d here,
    measured and "record"ed in it, or refused ("recorded", for --slurm and --only: a SLURM script
    is written on a login node, whose step times are not those of the nodes that train, and SLURM
    tasks that each timed a variant anew would each train their own number of steps)."""
    held = budget.held()
    if held is None:
        return {}
    kind, amount = held
    costs = _recorded_step_times(configs, timings, step_times) if kind == "seconds" else {}
    return {
        variant: steps_within(cfg, kind, amount, f"variant '{variant}'", costs.get(variant)) for variant, cfg in configs.items()
    }


def _timing_key(cfg: RunConfig) -> str:
    """What a variant's step time depends on: its settings but its name, folder, steps and seed."""
    unread = {"name", "out_dir", "train.steps", "train.seed"}
    settings = {key: value for key, value in cfg.settings().items() if key not in unread and not key.startswith("train.tracker")}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _recorded_step_times(configs: dict[str, RunConfig], timings: Path | None, step_times: str) -> dict[str, float]:
    """variant -> seconds per step: from `timings` where it holds the variant at its settings, else
    as `step_times` says (see apply_budget)."""
    entries = _recorded(timings) if timings is not None else {}
    costs, timed = {}, []
    for variant, cfg in configs.items():
        key, entry = _timing_key(cfg), entries.get(variant)
        seconds = entry.get("seconds_per_step") if isinstance(entry, dict) and entry.get("settings") == key else None
        if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and 0 < seconds < math.inf:
            costs[variant] = float(seconds)
            continue
        if step_times == "recorded":
            raise ConfigError(
                f"budget seconds: variant '{variant}' has no step time in {timings} at its settings, and --slurm and "
                "--only time nothing (a login node's step times are not a training node's, and each task timing "
                "its own would train its own budget): record them on a node that trains by running the same "
                "`slmlab sweep` command there with --dry-run (e.g. through srun), then run this again"
            )
        costs[variant] = seconds_per_step(cfg)
        entries[variant] = {
            "settings": key,
            "seconds_per_step": costs[variant],
            "measured": time.strftime("%Y-%m-%d %H:%M:%S"),
            "machine": _machine(resolve_device(cfg.train.device)),
        }
        timed.append(variant)
    if len(timed) < len(configs):
        log.info("budget seconds: step times as measured earlier, in %s (delete it to time the variants again)", timings)
    if timed and step_times == "record" and timings is not None:
        timings.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(timings, json_text({"variants": entries}, indent=2))
    return costs


def _machine(device: torch.device) -> str:
    """Where a step time was measured: the host and its device ("gpu01, NVIDIA H100 80GB HBM3")."""
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{device.type}, {torch.get_num_threads()} threads"
    return f"{platform.node() or 'this machine'}, {where}"


def _recorded(timings: Path) -> dict:
    """budget.json's {variant: {settings, seconds_per_step, measured, machine}} ({} without one)."""
    if not timings.is_file():
        return {}
    held = read_json(timings, "the sweep's step times", ConfigError, f"delete {timings} to time the variants again")
    return dict(held["variants"]) if isinstance(held.get("variants"), dict) else {}


def timing_machines(timings: Path) -> str:
    """The machines the step times in `timings` were measured on, as one phrase."""
    entries = _recorded(timings).values()
    machines = sorted({str(e.get("machine", "an unrecorded machine")) for e in entries if isinstance(e, dict)})
    return "; ".join(machines) or "an unrecorded machine"


def set_steps(cfg: RunConfig, steps: int) -> RunConfig:
    return config_from_dict(apply_overrides(cfg.to_dict(), {"train.steps": steps}))
