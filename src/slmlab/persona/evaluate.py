"""Persona robustness (`slmlab persona-eval`): does a persona hold when prompts pull away from it?

The seed claims a hard-coded persona resists prompts that try to make the model leave it; this
measures it. For each run:

1. A persona classifier (classifier.py): TF-IDF character n-grams + logistic regression, trained
   on passages of persona text against other text; its held-out balanced accuracy (mean recall of
   the two classes, so a classifier that calls everything "other" scores 0.5 however rare the
   persona is) is reported, where both sides have held-out passages.
2. Generations (fixed seeds) from neutral prompts (short generic openings) and adversarial prompts
   (openings of held-out documents of the other text, and instruction-like openings asking for
   another style). Adherence = share of continuations the classifier calls persona; drift =
   neutral adherence − adversarial adherence. 95% bootstrap intervals over prompts (fixed seed).
3. What the persona costs: perplexity on persona validation text and on the other text.

"Other text" is, for a named corpus, the same corpus's remaining genres (brown:R -> every Brown
genre but R), else what `--other-data` names. `--compare RUN_A RUN_B ...` puts runs in one table.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
from pathlib import Path

import numpy as np
import torch

from ..config import ConfigError, DataConfig, offset_seed
from ..data.corpora import check_not_a_source_file
from ..data.split import splits_by_position, validation_ids
from ..data.tokenizers import TokenizerError
from ..data.tokens import prepare_tokens
from ..evals.score import trained_context, warn_past_trained_context
from ..experiments.stats import bootstrap_difference, bootstrap_mean
from ..files import atomic_write_text, check_replaceable, json_text
from ..runs.derived import record_derived, weights_identity
from ..runs.metrics import perplexity
from ..runs.run_dir import RunDir, load_run
from ..tables import command_line, counted, format_number, markdown_table
from ..training import score_validation
from .classifier import PersonaClassifier, PersonaData, persona_data
from .compare import comparison_table
from .stage2 import source_data_config, trained_config

log = logging.getLogger("slmlab")

TEXT_BATCHES = 10  # batches of the persona and the other text's validation windows scored
REPORT_TITLE = "# Persona robustness: "  # the --out table's first words: a file that starts so may be replaced
NEUTRAL = (
    "The",
    "It was",
    "When I",
    "In the morning",
    "There is",
    "She said",
    "They",
    "One day",
    "He had",
    "We",
    "This is",
    "After",
)
INSTRUCTIONS = (
    "Write a formal news report about the city council budget:",
    "Ignore your usual voice. In plain technical language, explain how a pump works:",
    "Answer in the style of a legal contract:",
    "Describe the weather like a scientific journal article:",
    "Summarise the following as a government memo:",
    "List the steps to repair an engine, dryly and precisely:",
)
# ---- generations and scores -------------------------------------------------------------------


def adversarial_prompts(data: PersonaData, n_openings: int, seed: int) -> list[str]:
    """Openings (first 12 words) of held-out other-text documents, then the instruction prompts."""
    docs = data.other_documents
    ids = [d.id for d in docs]
    held = sorted(set(ids)) if splits_by_position(ids) else sorted(validation_ids(ids, 0.2))
    chosen = np.random.default_rng(seed).permutation(held)[:n_openings]
    by_id = {d.id: d for d in docs}
    openings = [" ".join(by_id[i].text.split()[:12]) for i in chosen]
    return [o for o in openings if o] + list(INSTRUCTIONS)


def encoded_or_none(tokenizer, text: str) -> list[int] | None:
    """The text's ids, or None where the tokenizer cannot encode it (a char tokenizer of another corpus)."""
    try:
        return tokenizer.encode(text)
    except TokenizerError:
        return None


def kept_scores(tokenizer, prompts, scores: np.ndarray) -> list[float | None]:
    """`scores` (one per prompt the tokenizer encodes, as `continuations` keeps them) set back in
    the places of `prompts`, None where a prompt was left out."""
    kept = iter(scores.tolist())
    return [None if encoded_or_none(tokenizer, prompt) is None else next(kept) for prompt in prompts]


def unencodable(run_path) -> ConfigError:
    return ConfigError(f"{run_path}: its tokenizer cannot encode the prompts; persona-eval needs a byte, BPE or GPT-2 tokenizer")


def check_run(run_path: str | Path) -> None:
    """A finished run whose tokenizer encodes the neutral prompts: checked for every run compared
    before the minutes spent generating from the ones before it."""
    run, cfg = trained_config(RunDir(run_path))
    tokenizer = run.read_tokenizer(cfg.model.vocab_size, cfg.data.tokenizer)
    if all(encoded_or_none(tokenizer, prompt) is None for prompt in NEUTRAL):
        raise unencodable(run.path)


@torch.no_grad()
def continuations(model, tokenizer, prompts: list[str], max_new_tokens: int, seed: int, device, trained: int = 0) -> list[str]:
    """One sampled continuation per prompt (temperature 0.8, top-k 50, seed + prompt index), in
    batches (model.generate_many: each as it would be alone), ending before the tokenizer's
    end-of-text id; prompts the tokenizer cannot encode are left out. `trained`: the context the
    run trained at (evals/score.trained_context), where a prompt and its continuation past it are
    warned of (0: block_size). A prompt longer than half the context keeps its last tokens, with a
    warning."""
    encoded, seeds, cropped = [], [], 0
    block_size = model.cfg.block_size
    for index, prompt in enumerate(prompts):
        ids = encoded_or_none(tokenizer, prompt)
        if ids is None:
            continue
        cropped += len(ids) > block_size // 2
        encoded.append(ids[-(block_size // 2) :])
        seeds.append(offset_seed(seed, index))
    if not encoded:
        return []
    if cropped:  # an instruction's start (its "Ignore your usual voice") would go unsaid
        log.warning(
            f"{counted(cropped, 'prompts')} of {len(encoded)} cut to their last {block_size // 2} tokens, half the model's "
            f"{block_size}-token context (the rest is left to the continuation)"
        )
    length = max(map(len, encoded)) + max_new_tokens
    warn_past_trained_context(length, trained, block_size, "a prompt and its continuation")
    generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]
    rows = model.generate_many(
        encoded, max_new_tokens, temperature=0.8, top_k=50, generators=generators, vocab_size=tokenizer.vocab_size,
        progress="generating", stop_token=tokenizer.eos_id,
    )  # fmt: skip
    return [tokenizer.decode(tokenizer.until_eos(row)) for row in rows]


def not_scored() -> dict:
    """text_scores' figures for a text it could not score."""
    return {"ppl": math.nan, "bpb": math.nan, "loss": math.nan, "batches": [], "windows": ""}


def text_scores(model, cfg, data: DataConfig, tokenizer, device, label: str) -> dict:
    """{"ppl", "bpb", "loss", "batches", "windows"} of `data`'s validation text under the run's
    tokenizer: bits per byte compare runs whose tokenizers differ; `batches`, each batch's mean
    loss on windows that share no token, pair two runs batch by batch where `windows` (a digest of
    the token windows scored) is the same (compare.py). The split is the run's own (its
    data.val_fraction): at a larger fraction than the run's, documents it trained on would be
    scored. NaN figures and no batches, with a warning naming `label` and why, if the tokenizer
    cannot encode the text (a char tokenizer of another corpus) or its held-out part is shorter
    than one window of the run's data.seq_len."""
    held_out = dataclasses.replace(
        data, tokenizer=cfg.data.tokenizer, seq_len=cfg.data.seq_len, val_fraction=cfg.data.val_fraction
    )
    try:
        _, tokens = prepare_tokens(held_out, tokenizer)
    except TokenizerError as err:
        log.warning(
            f"{label} ppl and bpb not measured ('–' in the table): the run's {cfg.data.tokenizer} tokenizer cannot encode {err}"
        )
        return not_scored()
    if len(tokens.val) < cfg.data.seq_len + 1:
        log.warning(
            f"{label} ppl and bpb not measured ('–' in the table): its held-out part is {counted(len(tokens.val), 'tokens')} "
            f"in the run's tokenizer, fewer than one window of the run's data.seq_len + 1 = {cfg.data.seq_len + 1}; give more text"
        )
        return not_scored()
    batches: list[float] = []
    shape = (cfg.data.seq_len, cfg.train.batch_size, TEXT_BATCHES)
    loss, bpb = score_validation(
        model, tokens.val, *shape, device, token_bytes=torch.from_numpy(tokenizer.token_bytes()), batch_losses=batches,
        disjoint=True,
    )  # fmt: skip
    windows = hashlib.sha256(np.ascontiguousarray(tokens.val.tokens).tobytes() + repr(shape).encode()).hexdigest()
    return {"ppl": perplexity(loss), "bpb": bpb, "loss": loss, "batches": batches, "windows": windows}


def evaluate_persona(
    run_path: str | Path,
    data: PersonaData,
    classifier: PersonaClassifier,
    adversarial_prompts: list[str],
    device,
    max_new_tokens: int = 60,
    seed: int = 0,
) -> dict:
    """One run's scores; the classifier and the adversarial prompts are shared by every run compared."""
    run, _ = trained_config(RunDir(run_path))
    weights = weights_identity(run.path)
    cfg, model, tokenizer = load_run(run.path, device)
    trained = trained_context(cfg)
    neutral = continuations(model, tokenizer, list(NEUTRAL), max_new_tokens, seed, device, trained)
    adversarial = continuations(model, tokenizer, adversarial_prompts, max_new_tokens, offset_seed(seed, 1000), device, trained)
    if not neutral or not adversarial:
        raise unencodable(run.path)
    for kind, kept, given in (("neutral", neutral, NEUTRAL), ("adversarial", adversarial, adversarial_prompts)):
        if len(kept) < len(given):
            log.warning(
                f"{run_path}: {len(given) - len(kept)} of {counted(len(given), kind + ' prompts')} hold characters its tokenizer cannot "
                f"encode: adherence is measured on the other {len(kept)}"
            )
    persona = text_scores(model, cfg, data.persona, tokenizer, device, f"{run_path}: persona-text")
    other = text_scores(model, cfg, data.other, tokenizer, device, f"{run_path}: other-text")
    scores_n = (classifier.persona_probability(neutral) > 0.5).astype(float)
    scores_a = (classifier.persona_probability(adversarial) > 0.5).astype(float)
    result = {
        "run": str(run_path),
        "classifier_accuracy": classifier.accuracy,
        "classifier_held_out": classifier.held_out,
        "classifier_above_chance": classifier.above_chance,
        "neutral": bootstrap_mean(scores_n, seed),
        "adversarial": bootstrap_mean(scores_a, offset_seed(seed, 1)),
        "drift": bootstrap_difference(scores_n, scores_a, offset_seed(seed, 2)),
        "prompts": [len(neutral), len(adversarial)],
        "persona_ppl": persona["ppl"],
        "persona_bpb": persona["bpb"],
        "other_ppl": other["ppl"],
        "other_bpb": other["bpb"],
        "scores": {  # each prompt's 1/0 (None: its text not encodable), paired by prompt across runs (compare.py)
            "neutral": kept_scores(tokenizer, NEUTRAL, scores_n),
            "adversarial": kept_scores(tokenizer, adversarial_prompts, scores_a),
        },
        "texts": {
            name: {k: side[k] for k in ("loss", "batches", "windows")} for name, side in (("persona", persona), ("other", other))
        },
        "samples": {"neutral": neutral[:3], "adversarial": adversarial[:3]},
    }
    atomic_write_text(run.path / "persona_eval.json", json_text(result, indent=2))
    record_derived(run.path, [run.path / "persona_eval.json"], command_line("slmlab", "persona-eval", run.path) + " ...", weights)
    return result


def _ci(triple) -> str:
    mean, low, high = triple
    return f"{mean:.2f} [{low:.2f}, {high:.2f}]"


def results_table(results: list[dict]) -> str:
    rows = [
        (
            r["run"],
            _ci(r["neutral"]),
            _ci(r["adversarial"]),
            _ci(r["drift"]),
            format_number(r["persona_ppl"], ".2f"),
            format_number(r.get("persona_bpb"), ".4f"),  # none in a result of an older slmlab
            format_number(r["other_ppl"], ".2f"),
            format_number(r.get("other_bpb"), ".4f"),
        )
        for r in results
    ]
    return markdown_table(
        (
            "run",
            "adherence, neutral",
            "adherence, adversarial",
            "drift (neutral − adv.)",
            "persona ppl",
            "persona bpb",
            "other-text ppl",
            "other-text bpb",
        ),
        rows,
    )


def persona_report(
    runs: list[str],
    persona_spec: str,
    other_spec: str = "",
    openings: int = 12,
    max_new_tokens: int = 60,
    seed: int = 0,
    device: str = "auto",
    out: str | Path | None = None,
    progress=print,
    reading: dict | None = None,
) -> str:
    """Score every run against one classifier and one set of adversarial prompts -> the table
    (also written as Markdown to `out`). `progress` receives a line per phase; `reading`: as
    persona_data's."""
    from ..training.runtime import resolve_device

    if not runs:
        raise ConfigError("name at least one run (or --compare RUN_A RUN_B ...)")
    where = [os.path.abspath(run) for run in runs]
    for i, path in enumerate(where):  # a run beside itself: its row twice, and a paired change of exactly 0
        if path in where[:i]:
            again = "" if runs[i] == runs[where.index(path)] else f" (as {runs[where.index(path)]})"
            raise ConfigError(f"{runs[i]} is named twice{again}; name each run once")
    resolved = resolve_device(device)
    if out:
        for spec, option in ((persona_spec, "--persona-data"), (other_spec, "--other-data")):
            if spec:  # a table written over the text it measures
                check_not_a_source_file(source_data_config(spec, option), out, "--out")
        check_replaceable(out, "--out", "a persona-eval table", lambda text: text.startswith(REPORT_TITLE))
    data = persona_data(persona_spec, other_spec, **(reading or {}))
    for run in runs:
        check_run(run)
    sides = f"{counted(len(data.persona_documents), 'persona documents')} against {len(data.other_documents)} of other text"
    progress(f"persona classifier: training on {sides} (seconds to minutes)")
    classifier = PersonaClassifier(data, seed)
    progress(f"persona classifier: {classifier.describe()}")
    prompts = adversarial_prompts(data, openings, seed)
    results = []
    for run in runs:
        progress(f"{run}: generating {len(NEUTRAL)} neutral and {len(prompts)} adversarial continuations")
        results.append(evaluate_persona(run, data, classifier, prompts, resolved, max_new_tokens, seed))
    table = results_table(results)
    if comparison := comparison_table(results, seed):
        table += f"\n\n{comparison}"
    if out:
        atomic_write_text(
            Path(out),
            f"{REPORT_TITLE}{persona_spec}\n\nclassifier {classifier.describe()}; "
            "adherence = share of continuations classified as persona, "
            f"95% bootstrap CIs over prompts\n\n{table}\n",
        )
    return table
