"""Ctrl-C or SIGTERM during `slmlab surgery`: the first ends the step under way and saves the Self
Area trained so far, scored like a finished one (exit 128 + the signal's number, one line saying
how to train it in full); a second, or one before training, stops at once and leaves the folder
as it was (no folder of a fresh surgery, an earlier surgery's files untouched), so that the same
command runs again. What a surgery killed outright leaves (its staged metrics, temp files) does not
block the next surgery into the folder; two surgeries do not write one folder at once. A persona
text too short for a window is refused before any of it."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch

transformers = pytest.importorskip("transformers")

from slmlab.cli import main
from slmlab.persona import surgery_training


@pytest.fixture(autouse=True)
def sigint_as_a_terminal_gives_it():
    """Ctrl-C handled as Python does by default, even under `make test &` (SIGINT ignored)."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny GPT-2 with a byte-level BPE tokenizer, saved as transformers saves a model."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.train_from_iterator(
        ["the day was long and the night was short"] * 20, trainers.BpeTrainer(vocab_size=80, special_tokens=["<unk>", "<eos>"])
    )
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="<unk>", eos_token="<eos>")
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=16, n_layer=2, n_head=2)
    folder = tmp_path_factory.mktemp("base")
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def surgery_argv(base, text_corpus, out, *more: str) -> list[str]:
    persona = ["--persona-data", str(text_corpus / "verse"), "--seq-len", "16", "--batch-size", "2", "--self-dim", "4"]
    return ["surgery", "--hf-model", str(base), *persona, "--steps", "12", "--out", str(out), "--device", "cpu", *more]


def signal_in_step(monkeypatch, step: int, number: int = signal.SIGINT, times: int = 1) -> None:
    """Send this process `number` (`times` times) while the Self Area's step `step` (from 1) trains."""
    real = surgery_training.WindowSampler

    class Signalling(real):
        drawn = 0

        def next_batch(self):
            Signalling.drawn += 1
            if Signalling.drawn == step:
                for _ in range(times):
                    os.kill(os.getpid(), number)
            return super().next_batch()

    monkeypatch.setattr(surgery_training, "WindowSampler", Signalling)


def contents(folder) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_saves_the_self_area_trained_so_far(base, text_corpus, tmp_path, capsys, caplog, monkeypatch, number):
    out = tmp_path / "area"
    signal_in_step(monkeypatch, 5, number)
    assert main(surgery_argv(base, text_corpus, out)) == 128 + number
    name = signal.Signals(number).name
    err = capsys.readouterr().err
    assert f"surgery stopped by {name} after 5 of 12 steps: the Self Area trained so far is saved" in err
    assert err.rstrip().endswith(" ".join(surgery_argv(base, text_corpus, out, "--overwrite")))
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["steps"], summary["steps_asked"], summary["stopped_by"]) == (5, 12, name)
    assert summary["persona_ppl_change"]["delta_pct"] is not None
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [5]
    assert sorted(contents(out)) == ["metrics.jsonl", "self_area.json", "self_area.safetensors", "summary.json"]
    caplog.set_level("WARNING", logger="slmlab")
    assert main(["surgery", "--hf-model", str(base), "--load", str(out), "--generate", "the", "--device", "cpu"]) == 0
    assert f"{out}: this Self Area trained 5 of 12 steps (stopped by {name})" in caplog.text
    monkeypatch.undo()  # the command it gives trains in full, over the stopped one
    assert main(surgery_argv(base, text_corpus, out, "--overwrite")) == 0
    assert "stopped_by" not in json.loads((out / "summary.json").read_text())


def test_a_second_signal_leaves_the_folder_as_it_was(base, text_corpus, tmp_path, capsys, monkeypatch):
    out = tmp_path / "area"
    signal_in_step(monkeypatch, 3, times=2)
    assert main(surgery_argv(base, text_corpus, out)) == 130
    assert "slmlab: interrupted" in capsys.readouterr().err
    assert not out.exists()  # a fresh surgery's folder is gone: the same command runs again
    monkeypatch.undo()
    assert main(surgery_argv(base, text_corpus, out)) == 0
    earlier = contents(out)
    signal_in_step(monkeypatch, 3, times=2)  # --overwrite stopped at once: the earlier surgery's files stay
    assert main(surgery_argv(base, text_corpus, out, "--overwrite", "--seed", "1")) == 130
    assert contents(out) == earlier


def test_a_surgery_killed_outright_does_not_block_the_next(base, text_corpus, tmp_path):
    out = tmp_path / "area"
    out.mkdir()
    (out / surgery_training.STAGED_METRICS).write_text('{"step": 10, "loss": 3.0}\n')
    (out / ".self_area.json.4242.k3x9.tmp").write_text('{"self_ar')  # killed as it saved
    assert main(surgery_argv(base, text_corpus, out)) == 0
    assert sorted(contents(out)) == ["metrics.jsonl", "self_area.json", "self_area.safetensors", "summary.json"]
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2  # steps 10 and 12 of this surgery only


def test_persona_text_too_short_for_a_window_names_surgerys_own_options(base, tmp_path, capsys):
    """It named data.val_fraction and data.seq_len, settings surgery does not have."""
    (tmp_path / "short.txt").write_text("the day was long. " * 12)
    argv = ["surgery", "--hf-model", str(base), "--persona-data", str(tmp_path / "short.txt"), "--out", str(tmp_path / "a")]
    assert main([*argv, "--seq-len", "32", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "the persona text's validation part is" in err and "fewer than --seq-len + 1 = 33; give more persona text" in err
    assert not (tmp_path / "a").exists()


def test_one_surgery_writes_a_folder_at_a_time(base, text_corpus, tmp_path, capsys):
    """Two surgeries into one --out shared its staged metrics, each removing the other's."""
    from slmlab.locks import DirectoryLock

    out = tmp_path / "area"
    with DirectoryLock(out, "Self Area folder"):  # as another surgery under way holds it
        assert main(surgery_argv(base, text_corpus, out)) == 2
    assert f"the Self Area folder {out} is in use by process" in capsys.readouterr().err
    assert not out.exists()
    assert main(surgery_argv(base, text_corpus, out)) == 0
