"""Long phases outside the training loop show progress: a bar on a terminal, else a log line every
heartbeat with the count, the rate and the ETA (tokenizer training, tokenizing, scoring, ablating,
generating for many prompts). The heartbeat is set to 0 here so every update logs."""

from __future__ import annotations

import re

import pytest
import torch

import slmlab.phase_progress as phase_progress
from slmlab.data.tokens import prepare_tokens
from slmlab.evals.ablate import ablate
from slmlab.phase_progress import PhaseProgress
from slmlab.runs.run_dir import load_run
from slmlab.training import score_validation, train


@pytest.fixture
def every_update_logs(monkeypatch, caplog):
    monkeypatch.setattr(phase_progress, "PHASE_HEARTBEAT", 0.0)
    caplog.set_level("INFO", logger="slmlab")
    return lambda: [r.getMessage() for r in caplog.records]


def test_a_line_holds_the_count_share_rate_and_eta(monkeypatch):
    progress = PhaseProgress("tokenizing x", 400, "documents", bar=False)
    assert re.fullmatch(r"tokenizing x: 100/400 documents \(25%\), 10.0 documents/s, ETA 0:00:30", update(progress, 100, 10.0))
    progress.set_total(None)
    assert progress.line(10.0) == "tokenizing x: 100 documents, 10.0 documents/s"
    progress.close()


def update(progress: PhaseProgress, n: int, elapsed: float) -> str:
    progress.update(n)
    return progress.line(elapsed)


def test_lines_come_only_without_a_bar_and_once_a_heartbeat_has_passed(every_update_logs, capsys):
    with PhaseProgress("quiet", 3, "steps", bar=False, heartbeat=3600) as progress:
        progress.update(3)  # within its first hour: nothing
    with PhaseProgress("", 3, "steps", bar=False) as progress:
        progress.update(3)  # no label: nothing shown at all
    with PhaseProgress("loud", 3, "steps", bar=False) as progress:
        progress.update(2)
    with PhaseProgress("drawn", 3, "steps", bar=True) as progress:
        progress.update(1)
    lines = every_update_logs()
    assert lines == [lines[0]] and lines[0].startswith("loud: 2/3 steps (67%)")
    assert "drawn" in capsys.readouterr().err  # the bar, on stderr


def test_training_a_tokenizer_and_tokenizing_a_corpus_log_their_progress(text_corpus, make_config, every_update_logs):
    cfg = make_config(text_corpus, train={"steps": 4, "eval_every": 4, "checkpoint_every": 0})
    train(cfg, progress=False)
    lines = every_update_logs()
    assert any(re.match(r"training the char tokenizer: \d+/12 documents", line) for line in lines)
    assert any(line.startswith(f"tokenizing {text_corpus}: 12/12 documents (100%)") for line in lines)


def test_a_long_document_is_counted_in_parts_that_add_up_to_it(tmp_path, every_update_logs, monkeypatch):
    """A corpus of one large file was "0/1 documents" until its whole text was tokenized."""
    from slmlab.config import DataConfig
    from slmlab.data import tokens

    (tmp_path / "one.txt").write_text("a few words of one long document. " * 40)
    (tmp_path / "two.txt").write_text("a short one.")
    monkeypatch.setattr(tokens, "ENCODE_CHARS", 300)
    prepare_tokens(DataConfig(source=str(tmp_path), tokenizer="byte", cache_dir=str(tmp_path / "cache")), progress=False)
    lines = [line for line in every_update_logs() if line.startswith(f"tokenizing {tmp_path}:")]
    assert lines[0].startswith(f"tokenizing {tmp_path}: 0.22/2 documents (11%)")
    assert lines[-1].startswith(f"tokenizing {tmp_path}: 2/2 documents (100%)") and ": 1/2 documents" in "".join(lines)


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_a_tokenizer_is_trained_on_a_long_document_in_parts_as_it_is_on_the_whole(tmp_path, every_update_logs, monkeypatch, kind):
    """Training the tokenizer on a corpus of one large file said "0/1 documents" until it was
    trained: the document reaches the trainer in pieces (counted as they go), cut where the
    tokenizer is trained as on the whole: the same tokenizer, file for file."""
    from slmlab.config import DataConfig
    from slmlab.data import tokens

    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "long.txt").write_text("Some words, of one long document; and more. " * 60)
    (tmp_path / "corpus" / "short.txt").write_text("a short one.")  # the validation document: bpe learns from long.txt alone

    def tokenizer(cache: str):
        data = DataConfig(source=str(tmp_path / "corpus"), tokenizer=kind, vocab_size=300, cache_dir=str(tmp_path / cache))
        return prepare_tokens(data, progress=False)[0].to_json()

    whole = tokenizer("whole")
    monkeypatch.setattr(tokens, "ENCODE_CHARS", 300)
    assert tokenizer("pieced") == whole
    lines = [line for line in every_update_logs() if line.startswith(f"training the {kind} tokenizer:")]
    documents = 2 if kind == "char" else 1
    assert any(re.match(rf"training the {kind} tokenizer: 0\.\d\d/{documents} documents?", line) for line in lines)


def test_scoring_ablating_and_generating_log_their_progress(text_corpus, make_config, every_update_logs):
    from slmlab.cli import main

    cfg = make_config(text_corpus, train={"steps": 4, "eval_every": 4, "checkpoint_every": 0})
    run = train(cfg, progress=False).run_dir
    assert main(["eval", str(run), "--batches", "3"]) == 0
    assert any(line.startswith(f"scoring {run}: 3/3 batches (100%)") for line in every_update_logs())
    ablate(run, n_batches=1, layers=True)
    evaluations = 1 + 2 * cfg.model.n_layer  # unmodified, then each layer's attention and MLP zeroed
    assert any(line.startswith(f"ablating {run}: {evaluations}/{evaluations} evaluations") for line in every_update_logs())
    _, model, _ = load_run(run, torch.device("cpu"))
    model.generate_many([[1, 2], [3], [4, 5, 6]], 2, batch_size=2, progress="generating")
    assert any(line.startswith("generating: 6/6 tokens (100%)") for line in every_update_logs())
    # one prompt of many tokens was one unit: silent until it finished (20,000 tokens, 16 s)
    model.generate_many([[1, 2]], 5, progress="one long")
    assert [line.split(" tokens")[0] for line in every_update_logs() if line.startswith("one long")] == [
        f"one long: {n}/5" for n in range(1, 6)
    ]
    stop = model.generate_many([[1, 2]], 1, temperature=0)[0][0]  # what it decodes first, as a stop token: the batch ends at once
    model.generate_many([[1, 2]], 5, temperature=0, stop_token=stop, progress="stopped")
    assert [line.split(" tokens")[0] for line in every_update_logs() if line.startswith("stopped")] == ["stopped: 5/5"]
    # `slmlab generate --num-samples N` printed nothing until its batch finished (3,000 samples: 30 s)
    assert main(["generate", str(run), "--prompt", "RO", "--num-samples", "3", "--max-new-tokens", "4"]) == 0
    assert [line.split(" tokens")[0] for line in every_update_logs() if line.startswith("sampling 3")] == [
        f"sampling 3: {n}/12" for n in (3, 6, 9, 12)
    ]


def test_writing_an_animation_logs_its_frames(tmp_path, every_update_logs):
    import numpy as np
    from matplotlib import pyplot as plt

    from slmlab.analysis.viz import animate

    for step in range(3):
        plt.imsave(tmp_path / f"frame_{step:06d}.png", np.full((8, 8), step, dtype=float))
    (gif, *_) = animate(tmp_path, tmp_path / "movie")
    assert gif.is_file()
    assert any(line.startswith(f"writing {gif}: 3/3 frames (100%)") for line in every_update_logs())


def test_slmlab_check_logs_the_properties_it_has_checked(text_corpus, make_config, every_update_logs):
    from slmlab.analysis.conformance import PROPERTIES, run_checks

    run_checks(make_config(text_corpus))
    count = len(PROPERTIES)
    assert any(line.startswith(f"checking: {count}/{count} properties (100%)") for line in every_update_logs())


def test_showing_progress_changes_no_score(text_corpus, make_config):
    """Scoring with a progress label gives the very figures scoring without one gives."""
    cfg = make_config(text_corpus, train={"steps": 2, "eval_every": 2, "checkpoint_every": 0})
    run = train(cfg, progress=False).run_dir
    _, model, tokenizer = load_run(run, torch.device("cpu"))
    _, data = prepare_tokens(cfg.data, tokenizer)
    token_bytes = torch.from_numpy(tokenizer.token_bytes())
    args = (model, data.val, cfg.data.seq_len, 4, 3, torch.device("cpu"))
    assert score_validation(*args, token_bytes=token_bytes, progress="scoring") == score_validation(
        *args, token_bytes=token_bytes
    )


def test_a_phase_past_its_count_says_it_is_still_working(every_update_logs):
    """The BPE trainer merges for a while after its last document: the line said 'N/N documents
    (100%), ETA 0:00:00' or nothing at all."""
    with PhaseProgress("training the bpe tokenizer", 2, "documents", bar=False) as progress:
        progress.update(2)
        progress.tick()
    assert re.fullmatch(
        r"training the bpe tokenizer: all 2 documents done, still working \(0:00:0\d so far\)", every_update_logs()[-1]
    )


def test_a_native_call_runs_off_the_main_thread_and_is_waited_on_with_ticks():
    import threading
    import time

    from slmlab.interruptible import interruptible

    ticks, threads = [], []

    def call() -> int:
        threads.append(threading.current_thread())
        time.sleep(0.35)
        return 7

    assert interruptible(call, waiting=lambda: ticks.append(1)) == 7
    assert threads[0] is not threading.main_thread() and ticks
    with pytest.raises(ValueError, match="from the call"):
        interruptible(lambda: (_ for _ in ()).throw(ValueError("from the call")))
