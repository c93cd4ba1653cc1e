"""The `slmlab` command end to end, on a small slice of the default (Shakespeare) corpus."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pytest

from slmlab.cli.main import build_parser, main
from tests.conftest import one_line_error, write_micro_toml

pytestmark = [pytest.mark.network, pytest.mark.slow]

QUICKSTART = str(Path(__file__).parents[1] / "configs" / "quickstart.toml")
SMALL = [
    "--data.max_documents",
    "4",
    "--model.n_layer",
    "2",
    "--model.d_model",
    "64",
    "--model.n_head",
    "2",
    "--data.seq_len",
    "64",
    "--train.batch_size",
    "16",
    "--train.eval_every",
    "20",
    "--train.eval_batches",
    "4",
    "--train.warmup_steps",
    "5",
    "--train.checkpoint_every",
    "0",
    "--train.sample_tokens",
    "40",
]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    code = main(["train", QUICKSTART, *SMALL, "--train.steps", "80", "--out_dir", str(out), "--name", "e2e", "--no-progress"])
    assert code == 0
    return out / "e2e"


def test_train_on_the_default_corpus_lowers_validation_loss(trained_run, capsys):
    records = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    val = [r["val_loss"] for r in records if "val_loss" in r]
    vocab = json.loads((trained_run / "config.json").read_text())["model"]["vocab_size"]
    assert len(val) == 4 and val[-1] < val[0] and val[-1] < math.log(vocab) - 1.5
    assert records[-1]["val_ppl"] < vocab / 3
    for name in ("config.json", "metrics.jsonl", "tokenizer.json", "final.safetensors", "summary.json"):
        assert (trained_run / name).is_file()


def test_generate_eval_and_info_on_a_run(trained_run, capsys):
    assert main(["generate", str(trained_run), "--prompt", "ROMEO:", "--max-new-tokens", "30", "--seed", "1"]) == 0
    first = capsys.readouterr().out
    assert first.startswith("ROMEO:") and len(first.strip()) >= 30
    main(["generate", str(trained_run), "--prompt", "ROMEO:", "--max-new-tokens", "30", "--seed", "1"])
    assert capsys.readouterr().out == first  # reproducible under the same seed
    assert main(["eval", str(trained_run), "--batches", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ppl"] > 1 and result["source"] == "shakespeare"
    assert main(["info", str(trained_run)]) == 0
    assert "parameters" in capsys.readouterr().out


def test_user_errors_are_one_line(trained_run, capsys, tmp_path):
    cases = [
        (["train", QUICKSTART, "--model.n_layr", "3"], "unknown config key 'model.n_layr' (did you mean 'model.n_layer'?)"),
        (["train", QUICKSTART, "--data.source", str(tmp_path / "none.txt")], "neither a built-in corpus"),
        (["generate", str(trained_run), "--prompt", "x" * 300], "the prompt is 300 tokens but the model's context is 256"),
        (["generate", str(tmp_path), "--prompt", "hi"], "is not a run directory (no config.json)"),
        (["generate", str(tmp_path / "gone"), "--prompt", "hi"], "gone is not a run directory: it does not exist"),
        (
            ["train", "--resume", str(trained_run), "--model.n_layer", "3"],
            "only --train.steps, --train.viz_every, the train.tracker* fields, where it runs (--train.device, "
            "--train.threads, --train.compile, --train.parallel, --model.local_kernel) and where its data lies (--data.source, "
            "--data.cache_dir) can change, not ['model.n_layer']",
        ),
        (["data", "download", "wikipedia"], "unknown download 'wikipedia'"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, err


def test_every_verb_has_help_with_examples(capsys):
    verbs = [
        ["train"],
        ["sweep"],
        ["ablate"],
        ["eval"],
        ["generate"],
        ["info"],
        ["diagnose"],
        ["data", "prepare"],
        ["data", "download"],
        ["tokenizer", "train"],
        ["report"],
        ["persona"],
        ["persona-eval"],
        ["surgery"],
        ["prompts"],
    ]
    for verb in verbs:
        with pytest.raises(SystemExit) as exit_info:
            build_parser().parse_args([*verb, "--help"])
        assert exit_info.value.code == 0
        assert "examples:" in capsys.readouterr().out


def every_option(parser: argparse.ArgumentParser, verb: str = "") -> list[tuple[str, argparse.Action]]:
    """(verb, action) of every option of every verb and sub-verb below `parser`."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += every_option(sub, f"{verb} {name}".strip())
        elif action.option_strings:
            found.append((verb, action))
    return found


def test_every_option_of_every_verb_says_what_it_does():
    """`eval --split`, `surgery --steps/--lr/--seq-len/...`, `lm-eval --num-fewshot` showed a bare
    name in --help, with neither what it sets nor its default."""
    bare = [f"{verb} {a.option_strings[0]}" for verb, a in every_option(build_parser()) if not (a.help or "").strip()]
    assert bare == []


def test_every_option_with_a_default_names_it_in_its_help():
    """`generate --temperature` said "0 = greedy", not that it samples at 0.8 unless told."""
    unnamed = [
        f"{verb} {a.option_strings[0]}"
        for verb, a in every_option(build_parser())
        if a.default not in (None, False, "", [], argparse.SUPPRESS) and "default" not in (a.help or "")
    ]
    assert unnamed == []


@pytest.mark.parametrize(
    "variant", [[], ["--model.self_area.enabled", "true", "--model.self_area.self_dim", "16"]], ids=["baseline", "smt"]
)
def test_diagnose_passes_on_a_small_model(capsys, variant):
    argv = ["diagnose", QUICKSTART, *SMALL, "--model.d_model", "32", "--data.seq_len", "32", "--steps", "300", *variant]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "[PASS] loss at init" in out and "[PASS] overfit one batch" in out and "ln V = " in out


@pytest.mark.parametrize(
    "overrides, says",
    [
        (["--model.dropout", "0.5"], "(target < 0.1; dropout off;"),  # under dropout the loss stayed at ~1.1
        (["--data.seq_len", "1"], "above the batch's floor"),  # one-token contexts with several next tokens
    ],
)
def test_diagnose_passes_a_sound_model_that_no_model_could_take_below_0_1(capsys, overrides, says):
    argv = ["diagnose", QUICKSTART, *SMALL, "--model.d_model", "32", "--data.seq_len", "32", "--steps", "500", *overrides]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "[PASS] overfit one batch" in out and says in out


def test_the_context_floor_equals_the_entropy_of_next_tokens_grouped_by_their_whole_context():
    from collections import Counter, defaultdict

    import torch

    from slmlab.evals.diagnose import context_floor

    generator = torch.Generator().manual_seed(0)
    for vocab, rows, length in [(2, 8, 6), (3, 16, 5), (50, 4, 32)]:
        x = torch.randint(vocab, (rows, length), generator=generator)
        y = torch.randint(vocab, (rows, length), generator=generator)
        groups = defaultdict(Counter)
        for b in range(rows):
            for t in range(length):
                groups[tuple(x[b, : t + 1].tolist())][int(y[b, t])] += 1
        naive = sum(c * math.log(sum(g.values()) / c) for g in groups.values() for c in g.values()) / x.numel()
        assert context_floor(x, y) == pytest.approx(naive, abs=1e-12)
    assert context_floor(x[:1], y[:1]) == 0.0  # one row: every context is its own


def test_compile_decodes_the_same_text_in_generate_and_prompts(trained_run, capsys, caplog, monkeypatch, tmp_path):
    """--compile goes through generation.compiled (here with a backend that runs each captured graph
    as it is, and keeps it) and changes no token."""
    import torch

    import slmlab.model.generation as generation

    graphs = []
    torch._dynamo.reset()
    monkeypatch.setattr(
        generation,
        "compiled",
        lambda model, backend: torch.compile(model, backend=lambda gm, inputs: graphs.append(gm) or gm.forward),
    )
    args = ["generate", str(trained_run), "--prompt", "ROMEO:", "--max-new-tokens", "30", "--seed", "1"]
    caplog.set_level("INFO", logger="slmlab")
    assert main(args) == 0
    eager = capsys.readouterr().out
    assert main([*args, "--compile"]) == 0
    assert capsys.readouterr().out == eager and graphs and "decoding through torch.compile" in caplog.text
    caplog.clear()
    assert main([*args[:2], "--prompt", "ROMEO " * 100, "--compile"]) == 2
    assert "torch.compile" not in caplog.text  # refused before the notice
    one_line_error(capsys, "shorten it")
    reports = [tmp_path / "eager.md", tmp_path / "compiled.md"]
    assert main(["prompts", str(trained_run), "--out", str(reports[0])]) == 0
    assert main(["prompts", str(trained_run), "--out", str(reports[1]), "--compile"]) == 0
    assert reports[0].read_text() == reports[1].read_text()
    torch._dynamo.reset()


def test_a_terminal_that_cannot_show_a_character_gets_an_escape_not_a_traceback(tmp_path, make_config, monkeypatch):
    """PYTHONIOENCODING=ascii or a Latin-1 locale: printing the closing sample's '—' ended a
    finished training run in a UnicodeEncodeError traceback."""
    import io

    from slmlab.training import train

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(4):
        (corpus / f"{i}.txt").write_text(f"text number {i} — with a dash — and more words. " * 20)
    cfg = make_config(corpus, train={"steps": 2, "eval_every": 2, "checkpoint_every": 0})
    run = train(cfg, progress=False).run_dir
    for name in ("stdout", "stderr"):
        monkeypatch.setattr(sys, name, io.TextIOWrapper(io.BytesIO(), encoding="ascii"))
    assert main(["generate", str(run), "--prompt", "a —", "--max-new-tokens", "3", "--temperature", "0"]) == 0
    assert main(["generate", str(run), "--prompt", "é"]) == 2  # the error names the character
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    assert sys.stdout.buffer.getvalue().startswith(b"a \\u2014")
    assert b"vocabulary: '\\xe9'" in sys.stderr.buffer.getvalue()


def test_commands_slmlab_prints_paste_back_with_paths_that_need_quoting(tmp_path, text_corpus, capsys):
    """A run under "my runs/it's" was advised as `slmlab generate my runs/it's/r --int8`: pasted,
    the shell splits the path (and stops at the apostrophe). Printed commands quote each word."""
    import shlex

    root = tmp_path / "my runs" / "it's"
    config = write_micro_toml(tmp_path / "base.toml", text_corpus, root, steps=2, every=2)
    run = root / "runs" / "r"
    assert main(["train", str(config), "--name", "r", "--no-progress"]) == 0
    assert main(["quantize", str(run), "--int8", "--batches", "1"]) == 0
    advised = capsys.readouterr().out.strip().splitlines()[-1].split("`")[1]
    assert shlex.split(advised) == ["slmlab", "generate", str(run), "--int8"]
    assert main(["train", str(config), "--name", "r", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert shlex.split(err.split("resume it with ")[1].split(" or pick")[0]) == ["slmlab", "train", "--resume", str(run)]
    assert main(["new-variant", "quoted_idea", "--out", str(root / "ideas")]) == 0
    assert shlex.split(capsys.readouterr().out.strip().splitlines()[-1].removeprefix("next: ")) == [
        "slmlab",
        "check",
        f"{root / 'ideas'}/quoted_idea.toml",
    ]
