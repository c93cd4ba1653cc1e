"""lm-evaluation-harness: the slmlab adapter's loglikelihood, rolling loglikelihood and
generation agree with naive one-sequence-at-a-time references; the offline cloze task is built
from held-out text and scored end to end; sweeps put task scores with paired CIs in the table."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("lm_eval")

import slmlab.phase_progress as phase_progress
from slmlab.cli import main
from slmlab.config import DataConfig, config_from_dict
from slmlab.data.tokenizers import CharTokenizer
from slmlab.evals.cloze import cloze_examples, passages
from slmlab.evals.harness import SlmlabLM, evaluate_run
from slmlab.training import train
from tests.conftest import tiny_config


@pytest.fixture
def run(tmp_path, text_corpus):
    """A tiny trained char model with a 32-token window (so long inputs must be truncated)."""
    base = tiny_config(text_corpus, tmp_path).to_dict()
    base["model"]["block_size"] = 32
    base["train"].update(steps=30, checkpoint_every=0, eval_every=30)
    return train(config_from_dict(base), progress=False).run_dir


def request(*args):
    return SimpleNamespace(args=args)


def naive_logprob(lm: SlmlabLM, context: list[int], continuation: list[int]) -> tuple[float, bool]:
    """One sequence, no padding, no batching: the reference."""
    ids = (context + continuation)[-(lm.window + 1) :]
    with torch.no_grad():
        logits, _ = lm.model(torch.tensor([ids[:-1]]))
    logprobs = F.log_softmax(logits[0].float(), -1)[-len(continuation) :]
    target = torch.tensor(continuation)
    return float(logprobs.gather(1, target[:, None]).sum()), bool((logprobs.argmax(-1) == target).all())


def test_loglikelihood_batched_and_padded_equals_one_at_a_time(run, monkeypatch, caplog):
    lm = SlmlabLM(str(run), device="cpu", batch_size=3)
    pairs = [
        ("ROMEO:\nBut soft, what light", " through"),
        ("", "HAMLET:"),  # empty context: scored after the separator
        ("JULIET:\nO Romeo, Romeo, wherefore art thou Romeo? " * 4, "Romeo"),  # longer than the window
        ("To be, or not to be, ", "that is the question."),
        ("M", "ACBETH"),
    ]
    monkeypatch.setattr(phase_progress, "PHASE_HEARTBEAT", 0.0)  # a task of thousands took minutes in silence
    caplog.set_level("INFO", logger="slmlab")
    got = lm.loglikelihood([request(c, x) for c, x in pairs])
    lines = [r.getMessage().split(",")[0] for r in caplog.records]
    assert lines == ["lm-eval scoring: 3/5 requests (60%)", "lm-eval scoring: 5/5 requests (100%)"]
    for (context, continuation), (logprob, greedy) in zip(pairs, got):
        ids_context, ids_continuation = lm._encode_pair(context, continuation)
        expected, expected_greedy = naive_logprob(lm, ids_context, ids_continuation)
        assert logprob == pytest.approx(expected, abs=1e-4) and greedy == expected_greedy
        assert logprob < 0
    # the context's trailing space moves into the continuation, as the harness's own models do
    assert lm._encode_pair("To be, ", "or") == (lm.tokenizer.encode("To be,"), lm.tokenizer.encode(" or"))


def test_rolling_loglikelihood_predicts_every_token_once_with_the_most_context(run):
    lm = SlmlabLM(str(run), device="cpu", batch_size=4)
    window = lm.window
    text = "HAMLET:\nTo be, or not to be, that is the question.\n" * 3  # several windows of 32
    ids = lm.tokenizer.encode(text)
    assert [t for _, t in lm.rolling_windows(ids)] == [ids[i : i + window] for i in range(0, len(ids), window)]
    # the reference, token by token: ids[k] is read at the end of its chunk's window of inputs
    # (the separator, then the text), the window ending where the chunk ends
    full = lm.prefix[-1:] + ids
    reference = 0.0
    with torch.no_grad():
        for k in range(len(ids)):
            stop = min((k // window + 1) * window, len(ids))
            first = max(0, stop - window)
            logits, _ = lm.model(torch.tensor([full[first:stop]]))
            reference += float(F.log_softmax(logits[0, k - first].float(), -1)[ids[k]])
    (total,) = lm.loglikelihood_rolling([request(text)])
    assert total == pytest.approx(reference, abs=1e-3)


def test_generate_until_matches_greedy_decoding_and_stops_at_the_stop_string(run):
    lm = SlmlabLM(str(run), device="cpu", batch_size=8)
    contexts = ["ROMEO:\n", "HAMLET:", "To be, or not to be", "ROMEO:\n", "O"]  # lengths differ: one left-padded batch
    outputs = lm.generate_until([request(c, {"until": ["\n"], "max_gen_toks": 20}) for c in contexts])
    for context, text in zip(contexts, outputs):
        ids = torch.tensor([lm.tokenizer.encode(context)])
        greedy = lm.tokenizer.decode(lm.model.generate(ids, 20, temperature=0.0)[0, ids.shape[1] :].tolist())
        assert text == greedy.split("\n")[0]
        assert "\n" not in text
    assert outputs[0] == outputs[3]
    (plain,) = lm.generate_until([request("To be", {"max_gen_toks": 7})])
    assert len(lm.tokenizer.encode(plain)) == 7


def test_cloze_task_is_built_from_held_out_passages_only(text_corpus):
    data = DataConfig(source=str(text_corpus), val_fraction=0.3)
    tokenizer = CharTokenizer.train(p.read_text() for p in text_corpus.rglob("*.txt"))
    examples = cloze_examples(data, tokenizer, limit=20)
    assert 0 < len(examples) <= 20
    from slmlab.data.corpora import DocumentSelection
    from slmlab.data.split import validation_ids

    docs = list(DocumentSelection(data))
    held = validation_ids([d.id for d in docs], data.val_fraction)
    held_text = "".join(d.text for d in docs if d.id in held)
    for example in examples:
        assert len(example["choices"]) == 4 and len(set(example["choices"])) == 4
        word = example["choices"][example["gold"]]
        assert example["context"] in held_text and (example["context"] + word) in held_text
    assert passages("A B C D E F G H end.\n\nshort one\n\nI J K L M N O P final") == [
        ("A B C D E F G H ", "end"),
        ("I J K L M N O P ", "final"),
    ]


@pytest.mark.slow
def test_lm_eval_scores_the_cloze_task_end_to_end(run, capfd, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no git repository here: git said "fatal: not a git repository"
    scores, table = evaluate_run(run, ["slmlab_cloze"], limit=12)
    assert "fatal" not in capfd.readouterr().err
    assert 0.0 <= scores["slmlab_cloze"]["acc"] <= 1.0 and "acc_norm" in scores["slmlab_cloze"]
    assert "slmlab_cloze" in table
    saved = json.loads((run / "lm_eval" / "results.json").read_text())
    assert saved["scores"] == scores
    assert (run / "lm_eval" / "tasks" / "slmlab_cloze.yaml").is_file()
    assert main(["lm-eval", str(run), "--tasks", "slmlab_clozee"]) == 2
    assert "no task 'slmlab_clozee' (did you mean 'slmlab_cloze'?)" in capfd.readouterr().err
    for path in (run / "missing_tasks", run / "config.json"):  # ran without the user's tasks, in silence
        assert main(["lm-eval", str(run), "--tasks", "slmlab_cloze", "--include-path", str(path)]) == 2
        assert "is not a folder: give the folder that holds your task YAMLs" in capfd.readouterr().err
    results = (run / "lm_eval" / "results.json").read_bytes()
    assert main(["lm-eval", str(run), "--tasks", "slmlab_cloze", "--limit", "4", "--num-fewshot", "100000"]) == 2
    err = capfd.readouterr().err  # was lm-eval's ValueError traceback from random.sample
    assert "--num-fewshot 100000 is more examples than a task has" in err and "Traceback" not in err
    assert (run / "lm_eval" / "results.json").read_bytes() == results


@pytest.mark.slow
def test_a_sweep_with_an_unknown_task_fails_before_any_run_trains(tmp_path, micro_sweep, capsys):
    """The task names were read only once every run had trained: the sweep then failed without
    writing its results table."""
    text = micro_sweep.read_text()
    micro_sweep.write_text(text + '\n[lm_eval]\ntasks = ["slmlab_clozee"]\n')
    assert main(["sweep", str(micro_sweep)]) == 2
    assert "lm-eval knows no task 'slmlab_clozee' (did you mean 'slmlab_cloze'?)" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "micro").exists()
    micro_sweep.write_text(text + '\n[lm_eval]\ntasks = ["slmlab_cloze"]\nlimit = -1\n')
    assert main(["sweep", str(micro_sweep), "--dry-run"]) == 2
    assert "lm_eval.limit must be >= 0, got -1" in capsys.readouterr().err


@pytest.mark.slow
def test_a_sweep_puts_task_accuracy_with_paired_cis_in_its_table(tmp_path, micro_sweep, capsys):
    micro_sweep.write_text(micro_sweep.read_text() + '\n[lm_eval]\ntasks = ["slmlab_cloze"]\nlimit = 10\n')
    assert main(["sweep", str(micro_sweep)]) == 0
    table = (tmp_path / "runs" / "micro" / "results.md").read_text()
    assert "slmlab_cloze acc" in table and "Δ slmlab_cloze acc [95% CI]" in table
    records = json.loads((tmp_path / "runs" / "micro" / "results.json").read_text())["variants"]
    column = next(r for r in records if not r["is_baseline"])["lm_eval"]["slmlab_cloze acc"]
    assert 0 <= column["mean"] <= 1 and (column["low"] is None or column["low"] <= column["delta"] <= column["high"])


def test_the_harness_builds_the_adapter_from_its_model_args_string(run):
    from lm_eval.api.registry import get_model

    lm = get_model("slmlab").create_from_arg_string(
        f"run={run},max_gen_toks=7", {"batch_size": 8, "max_batch_size": 6, "device": "cpu"}
    )
    assert isinstance(lm, SlmlabLM) and lm.batch_size == 6 and lm.max_gen_toks == 7 and lm.window == 32
    assert get_model("slmlab").create_from_arg_string(f"run={run}", {"batch_size": "auto"}).batch_size == 16


def test_a_single_document_cloze_uses_exactly_the_tail_the_token_split_held_out(tmp_path):
    from slmlab.data.tokenizers import ByteTokenizer
    from slmlab.data.tokens import prepare_tokens
    from slmlab.evals.cloze import held_out_texts

    words = ["again", "today", "slowly", "there", "home", "away", "tonight"]
    text = "\n\n".join(f"Passage {i}: the quick brown fox jumps over the lazy dog {i} {words[i % 7]}." for i in range(300))
    (tmp_path / "one.txt").write_text(text)
    data = DataConfig(source=str(tmp_path / "one.txt"), tokenizer="byte", cache_dir=str(tmp_path / "cache"), val_fraction=0.1)
    tokenizer = ByteTokenizer()
    (held,) = held_out_texts(data, tokenizer)
    _, tokens = prepare_tokens(data, tokenizer)
    trained = tokenizer.decode(tokens.train.tokens.tolist())
    assert trained + held == text + "\n\n"  # the split's two sides, nothing shared
    examples = cloze_examples(data, tokenizer, limit=10)
    assert examples and all(e["context"] + e["choices"][e["gold"]] in held for e in examples)


def test_a_sweep_scores_a_run_again_once_it_has_trained_on(run, monkeypatch):
    """Saved lm-eval scores are reused only for the weights they were computed on."""
    import slmlab.evals.harness as harness
    from slmlab.experiments.sweep_config import Job
    from slmlab.runs import RunDir
    from slmlab.runs.derived import weights_identity

    calls = []

    def fake_evaluate(path, tasks, limit, num_fewshot, batch_size):
        calls.append(path)
        record = {"tasks": tasks, "limit": limit, "num_fewshot": num_fewshot, "scores": {"t": {"acc": 0.5}}}
        (path / "lm_eval").mkdir(exist_ok=True)
        (path / "lm_eval" / "results.json").write_text(json.dumps({**record, "weights_sha256": weights_identity(path)}))
        return record["scores"], ""

    monkeypatch.setattr(harness, "evaluate_run", fake_evaluate)
    job = Job("base", 0, RunDir(run).read_config())
    for _ in range(2):
        harness.score_sweep_runs([job], {("base", 0): {}}, ["t"], limit=4)
    assert len(calls) == 1  # the second time the saved scores of the same weights are reused
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "final_sha256": "0" * 64}))  # as if trained on
    harness.score_sweep_runs([job], {("base", 0): {}}, ["t"], limit=4)
    assert len(calls) == 2
