"""lm-evaluation-harness adapter: any slmlab run as an `lm_eval.api.model.LM` ("slmlab").

    loglikelihood          (context, continuation) -> (log p(continuation | context), greedy?)
    loglikelihood_rolling  (text,) -> log p(text) over windows of the model's context, each token
                           predicted once with as much context as fits, the first from the
                           document separator (the tokenizer's [EOS], else its blank line)
    generate_until         (context, {until, max_gen_toks, temperature, ...}) -> continuation,
                           cut before the first stop string

Scoring runs in batches of `batch_size` sequences, right-padded: the models are causal, so a
position never sees the padding after it, and the scores equal unpadded ones (tested against
one-at-a-time scoring). A context longer than the model's window keeps its last tokens.
Generation goes through `generate_many` (prompts of different lengths batched, each continuation
the one it would be alone) and stops a batch once every row has produced a stop string or its
end-of-text token.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

from ..config import ConfigError
from ..errors import RunFileError
from ..files import atomic_write_text, json_text, read_json
from ..phase_progress import PhaseProgress
from ..registry import closest
from ..runs.derived import weights_identity
from .text_score import rolling_pairs

log = logging.getLogger("slmlab")

try:
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model
except ImportError as err:  # the adapter is an optional extra
    raise ConfigError("lm-eval is not installed: pip install 'slmlab[lm-eval]'") from err


@register_model("slmlab")
class SlmlabLM(LM):
    """`lm_eval.simple_evaluate(model=SlmlabLM(run="runs/x"), tasks=[...])`, or from a string:
    `model="slmlab", model_args="run=runs/x,batch_size=16"` once this module is imported."""

    def __init__(
        self,
        run: str,
        device: str | None = "auto",
        batch_size: int | str = 16,
        max_batch_size: int | None = None,
        max_gen_toks: int = 128,
        int8: bool = False,
    ):
        """`batch_size` "auto" (the harness's default) means 16; `max_batch_size` caps it."""
        super().__init__()
        from .score import load_for_inference, scoring_window

        self.cfg, self.model, self.tokenizer, self._device = load_for_inference(
            run, device or "auto", str(int8) in ("True", "true", "1")
        )
        self.batch_size = int(batch_size) if str(batch_size).isdigit() else 16
        if max_batch_size:
            self.batch_size = min(self.batch_size, int(max_batch_size))
        self.max_gen_toks = int(max_gen_toks)
        self.window = scoring_window(self.cfg)  # the context it trained at, as `slmlab eval --text` scores
        self.prefix = self.tokenizer.separator_ids()

    @property
    def device(self):
        return self._device

    # ---- scoring ----------------------------------------------------------------------------
    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Token ids of context and continuation, split as the harness's own models split them:
        trailing spaces of the context move to the continuation, and the continuation's ids are
        the whole text's ids after the context's (so a BPE merge across the boundary is kept)."""
        spaces = len(context) - len(context.rstrip(" "))
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        whole = self.tokenizer.encode(context + continuation)
        context_ids = self.tokenizer.encode(context) if context else []
        if whole[: len(context_ids)] != context_ids:  # the boundary merged: score the continuation alone
            return context_ids or self.prefix, self.tokenizer.encode(continuation)
        return (context_ids or self.prefix), whole[len(context_ids) :]

    @torch.no_grad()
    def score_tokens(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """(log-probability of each continuation after its context, whether greedy decoding
        produces it), in batches of `batch_size`, right-padded (the model is causal: a position
        never sees the padding after it); inputs keep their last `window` tokens."""
        results: list[tuple[float, bool] | None] = [None] * len(pairs)
        order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
        with PhaseProgress("lm-eval scoring", len(pairs), "requests") as progress:  # a task of thousands takes minutes
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                self._score_batch(pairs, batch, results)
                progress.update(len(batch))
        return results

    def _score_batch(self, pairs: list[tuple[list[int], list[int]]], batch: list[int], results: list) -> None:
        """Score `pairs[i]` for each i in `batch` (one forward of the padded rows) into results[i]."""
        rows = []
        for i in batch:
            context, continuation = pairs[i]
            if not continuation:
                raise ConfigError("lm-eval asked to score an empty continuation")
            if len(continuation) > self.window:
                raise ConfigError(f"a continuation of {len(continuation)} tokens exceeds the model's window of {self.window}")
            rows.append((context + continuation)[-(self.window + 1) :][:-1])
        ids = torch.zeros(len(rows), max(map(len, rows)), dtype=torch.long)
        for r, row in enumerate(rows):
            ids[r, : len(row)] = torch.tensor(row)
        logits, _ = self.model(ids.to(self._device))
        for r, i in enumerate(batch):
            target = torch.tensor(pairs[i][1], device=logits.device)
            end = len(rows[r])
            logprobs = F.log_softmax(logits[r, end - len(target) : end].float(), dim=-1)  # a row at a time: (n, V)
            total = float(logprobs.gather(1, target[:, None]).sum())
            greedy = logprobs[:, : self.tokenizer.vocab_size].argmax(-1)  # as generation draws: text tokens only
            results[i] = (total, bool((greedy == target).all()))

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        return self.score_tokens([self._encode_pair(*request.args) for request in requests])

    def rolling_windows(self, ids: list[int]) -> Iterator[tuple[list[int], list[int]]]:
        """(context, targets) windows predicting every id once, in disjoint chunks of `window`, each
        after as much preceding text as fits the window (the first after the separator)."""
        return rolling_pairs(ids, self.prefix, self.window, self.window)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        pairs, owner = [], []
        for index, request in enumerate(requests):
            (text,) = request.args[:1]
            for pair in self.rolling_windows(self.tokenizer.encode(text)):
                pairs.append(pair)
                owner.append(index)
        totals = [0.0] * len(requests)
        for index, (logprob, _) in zip(owner, self.score_tokens(pairs)):
            totals[index] += logprob
        return totals

    # ---- generation -------------------------------------------------------------------------
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        outputs: list[str | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = defaultdict(list)
        prompts = []
        for index, request in enumerate(requests):
            context, kwargs = request.args
            kwargs = dict(kwargs or {})
            until = kwargs.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(kwargs.pop("max_gen_toks", self.max_gen_toks))
            temperature = float(kwargs.pop("temperature", 0.0)) if kwargs.pop("do_sample", False) else 0.0
            prompts.append((self.tokenizer.encode(context) if context else self.prefix)[-max(1, self.window - 1) :])
            groups[(tuple(until), max_new, temperature)].append(index)
        for (until, max_new, temperature), members in groups.items():
            texts = self._generate([prompts[i] for i in members], list(until), max_new, temperature)
            for i, text in zip(members, texts):
                outputs[i] = text
        return outputs

    def _generate(self, prompts: list[list[int]], until: list[str], max_new: int, temperature: float) -> list[str]:
        """Continue prompts (model.generate_many, batched); each continuation cut before its
        first stop string, a batch ending once every row has produced one."""

        def finished(continuations: torch.Tensor) -> bool:
            texts = [self.tokenizer.decode(row) for row in continuations.tolist()]
            return all(any(stop in text for stop in until) for text in texts)

        rows = self.model.generate_many(
            prompts, max_new, temperature=temperature, stop_token=self.tokenizer.eos_id,
            batch_size=self.batch_size, until=finished if until else None, vocab_size=self.tokenizer.vocab_size,
            progress="lm-eval generating",
        )  # fmt: skip
        texts = []
        for row in rows:
            if self.tokenizer.eos_id is not None and self.tokenizer.eos_id in row:
                row = row[: row.index(self.tokenizer.eos_id)]
            text = self.tokenizer.decode(row)
            cuts = [text.index(stop) for stop in until if stop in text]
            texts.append(text[: min(cuts)] if cuts else text)
        return texts


def results_path(run: str | Path) -> Path:
    """RUN/lm_eval/results.json: a run's last harness scores (its tasks are in RUN/lm_eval/tasks)."""
    return Path(run) / "lm_eval" / "results.json"


def check_tasks(tasks: list[str], include_path: str = "") -> None:
    """Refuse task names lm-eval does not know (slmlab_cloze always exists; lm-eval's own task
    index is read only when other tasks are named: seconds) and an --include-path that is no
    folder, before any run is loaded or trained."""
    from .cloze import TASK

    if not tasks:
        raise ConfigError(f"name at least one task, e.g. --tasks {TASK}")
    if include_path and not Path(include_path).is_dir():  # lm-eval walks it: a file or a typo gave no tasks, in silence
        raise ConfigError(f"--include-path {include_path} is not a folder: give the folder that holds your task YAMLs")
    others = [t for t in tasks if t != TASK]
    if others:
        from lm_eval.tasks import TaskManager

        known = [*TaskManager(include_path=include_path or None).all_tasks, TASK]
        unknown = [t for t in others if t not in known]
        if unknown:
            raise ConfigError(
                f"lm-eval knows no task {unknown[0]!r}{closest(unknown[0], known)}; give its folder with --include-path, or use {TASK}"
            )


def evaluate_run(
    run: str | Path,
    tasks: list[str],
    limit: int = 0,
    num_fewshot: int | None = None,
    batch_size: int = 16,
    device: str = "auto",
    include_path: str = "",
    cloze_examples_limit: int = 500,
) -> tuple[dict[str, dict[str, float]], str]:
    """Score `run` on lm-eval `tasks` ({task: {metric: value}}, the harness's table), offline;
    writes RUN/lm_eval/results.json. `slmlab_cloze` is built from the run's held-out text."""
    import os

    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # tasks read local data; nothing is downloaded
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import lm_eval
    from lm_eval.tasks import TaskManager
    from lm_eval.utils import make_table

    from .cloze import TASK, cloze_examples, write_cloze_task

    check_tasks(tasks, include_path)
    include = [include_path] if include_path else []
    others = [t for t in tasks if t != TASK]
    weights = weights_identity(run)  # before loading: see runs/derived.py
    model = SlmlabLM(str(run), device=device, batch_size=batch_size)
    if TASK in tasks:
        examples = cloze_examples(model.cfg.data, model.tokenizer, cloze_examples_limit)
        include.append(str(write_cloze_task(results_path(run).parent / "tasks", examples)))
    manager = TaskManager(include_path=include or None, include_defaults=bool(others))
    try:
        with _quiet_git_hash(), _no_dataset_bars():
            output = lm_eval.simple_evaluate(
                model=model,
                tasks=tasks,
                num_fewshot=num_fewshot,
                limit=limit or None,
                task_manager=manager,
                log_samples=False,
                bootstrap_iters=1000,
            )
    except (ConnectionError, OSError) as err:
        raise ConfigError(
            f"lm-eval could not read a task's dataset offline ({str(err).splitlines()[0][:120]}); "
            "standard tasks need their datasets in the local Hugging Face cache"
        ) from None
    except ValueError as err:  # random.sample in lm-eval's few-shot sampler
        if num_fewshot and "larger than population" in str(err):
            raise ConfigError(
                f"--num-fewshot {num_fewshot} is more examples than a task has to draw its few-shot examples from; give fewer"
            ) from None
        raise
    scores = {  # lm-eval names a metric "acc,none" (metric, filter); its stderr "acc_stderr,none"
        task: {
            k.split(",")[0]: float(v) for k, v in values.items() if "," in k and "stderr" not in k and isinstance(v, (int, float))
        }
        for task, values in output["results"].items()
    }
    record = {
        "run": str(run),
        "weights_sha256": weights,
        "tasks": tasks,
        "limit": limit,
        "num_fewshot": num_fewshot,
        "scores": scores,
        "results": output["results"],
    }
    atomic_write_text(results_path(run), json_text(record, indent=2, default=str) + "\n")
    return scores, make_table(output)


def score_sweep_runs(
    jobs, results: dict, tasks: list[str], limit: int = 0, num_fewshot: int | None = None, batch_size: int = 16
) -> dict:
    """Add {"lm_eval": {task: {metric: value}}} to the result of every finished run of a sweep,
    reusing a run's RUN/lm_eval/results.json when it holds the same tasks, limit and shots of the
    same final weights (a run trained on since is scored again)."""
    for job in jobs:
        result = results.get((job.variant, job.seed))
        if result is None or "failed" in result:
            continue
        saved = results_path(job.run.path)
        fix = "delete it to score the run again"
        record = read_json(saved, "lm-eval results", RunFileError, fix) if saved.is_file() else {}
        asked = (tasks, limit, num_fewshot, weights_identity(job.run.path))
        if (record.get("tasks"), record.get("limit"), record.get("num_fewshot"), record.get("weights_sha256")) == asked:
            scores = record["scores"]
        else:
            log.info("%s: lm-eval %s", job.run.path, ", ".join(tasks))
            scores, _ = evaluate_run(job.run.path, tasks, limit, num_fewshot, batch_size)
        result["lm_eval"] = scores
    return results


@contextlib.contextmanager
def _quiet_git_hash() -> Iterator[None]:
    """lm-eval records `git describe --always` of the working directory and lets git write
    "fatal: not a git repository" to the terminal wherever there is none, as if slmlab had
    failed. Within this block it records the same hash (lm-eval's own fallback where git cannot
    say) with git's complaint kept off the terminal."""
    import lm_eval.evaluator as evaluator
    from lm_eval.loggers.utils import get_commit_from_path

    def git_hash() -> str | None:
        try:
            described = subprocess.run(["git", "describe", "--always"], capture_output=True, text=True, check=True)
            return described.stdout.strip()
        except (subprocess.CalledProcessError, FileNotFoundError):
            return get_commit_from_path(Path.cwd())

    original = getattr(evaluator, "get_git_commit_hash", None)
    if original is None:  # another lm-eval: nothing to quieten
        yield
        return
    evaluator.get_git_commit_hash = git_hash
    try:
        yield
    finally:
        evaluator.get_git_commit_hash = original


@contextlib.contextmanager
def _no_dataset_bars() -> Iterator[None]:
    """Hugging Face datasets without its bars ("Generating test split: 500 examples") while a task
    reads its local data: a second's work, printed as two bars per run of a sweep. slmlab shows
    the scoring itself (PhaseProgress)."""
    import datasets

    shown = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if shown:
            datasets.enable_progress_bars()
