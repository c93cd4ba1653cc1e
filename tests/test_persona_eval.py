"""persona-eval on a synthetic two-style corpus where the answer is known: a model trained only on
the persona's style adheres, one trained only on the other style does not, the classifier separates
the styles, perplexities point the right way, and the bootstrap intervals are computed right."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import scipy.stats

from slmlab.cli import main
from slmlab.experiments.stats import bootstrap_difference, bootstrap_mean
from slmlab.training import train

JOLLY = ["ha", "jolly", "laugh", "giggle", "merry", "fun", "joke", "grin", "tickle", "hoot"]
MECHANICAL = ["pump", "valve", "pressure", "engine", "torque", "gear", "shaft", "bolt", "piston", "flow"]


def write_style(folder, words, seed):
    rng = np.random.default_rng(seed)
    folder.mkdir()
    for i in range(10):
        sentences = [" ".join(rng.choice(words, 6)).capitalize() + "." for _ in range(50)]
        (folder / f"doc{i}.txt").write_text(" ".join(sentences))


@pytest.fixture
def two_styles(tmp_path, make_config):
    write_style(tmp_path / "jolly", JOLLY, 0)
    write_style(tmp_path / "mechanical", MECHANICAL, 1)
    runs = {}
    for style in ("jolly", "mechanical"):
        cfg = make_config(
            tmp_path / style,
            data={"tokenizer": "byte", "seq_len": 64},
            model={"block_size": 128},
            train={"steps": 150, "lr": 1e-2, "checkpoint_every": 0, "eval_every": 150},
        )
        runs[style] = train(dataclasses.replace(cfg, name=style), progress=False).run_dir
    return tmp_path, runs


def test_persona_eval_finds_the_known_answer(two_styles, capsys):
    root, runs = two_styles
    out = root / "persona.md"
    assert (
        main(
            [
                "persona-eval",
                "--compare",
                str(runs["jolly"]),
                str(runs["mechanical"]),
                "--persona-data",
                str(root / "jolly"),
                "--other-data",
                str(root / "mechanical"),
                "--max-new-tokens",
                "48",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    jolly = json.loads((runs["jolly"] / "persona_eval.json").read_text())
    mechanical = json.loads((runs["mechanical"] / "persona_eval.json").read_text())
    assert jolly["classifier_accuracy"] > 0.95
    assert jolly["neutral"][0] >= 0.9 and mechanical["neutral"][0] <= 0.1
    assert jolly["adversarial"][0] >= 0.8  # it only knows one voice: adversarial prompts cannot pull it away
    assert jolly["persona_ppl"] < mechanical["persona_ppl"] and mechanical["other_ppl"] < jolly["other_ppl"]
    assert (
        jolly["persona_bpb"] < mechanical["persona_bpb"] and mechanical["other_bpb"] < jolly["other_bpb"]
    )  # across tokenizers too
    assert (
        f"{jolly['persona_ppl']:.2f}" in printed
        and f"{jolly['persona_bpb']:.4f}" in printed
        and str(runs["mechanical"]) in out.read_text()
    )
    low, high = jolly["neutral"][1], jolly["neutral"][2]
    assert low <= jolly["neutral"][0] <= high
    # the second run against the first, paired: by prompt for adherence, by batch for perplexity
    drop = [m - j for j, m in zip(jolly["scores"]["neutral"], mechanical["scores"]["neutral"])]
    assert np.mean(drop) <= -0.8 and f"Against {runs['jolly']}, paired" in printed
    pairs = np.subtract(mechanical["texts"]["persona"]["batches"], jolly["texts"]["persona"]["batches"])
    half = scipy.stats.t.ppf(0.975, len(pairs) - 1) * pairs.std(ddof=1) / np.sqrt(len(pairs))
    change = mechanical["texts"]["persona"]["loss"] - jolly["texts"]["persona"]["loss"]
    low, high = 100 * np.expm1(change - half), 100 * np.expm1(change + half)
    assert low > 0 and f"{100 * np.expm1(change):+.2f}% [{low:+.2f}, {high:+.2f}]" in printed  # it costs persona text
    assert f"{np.mean(drop):+.2f} [" in printed and str(runs["mechanical"]) in printed.split("paired")[1]
    assert main(["report", str(runs["jolly"])]) == 0  # the report card picks the result up
    assert "## Persona robustness" in (runs["jolly"] / "report.md").read_text()
    (runs["jolly"] / "persona_eval.json").write_text(json.dumps({**jolly, "classifier_accuracy": None}))
    assert main(["report", str(runs["jolly"])]) == 0  # an accuracy not measured (null) is said so
    assert "held-out balanced accuracy not measured;" in (runs["jolly"] / "report.md").read_text()
    assert jolly["classifier_above_chance"] is True and "not clearly above chance" not in printed
    (runs["jolly"] / "persona_eval.json").write_text(json.dumps({**jolly, "classifier_above_chance": False}))
    assert main(["report", str(runs["jolly"])]) == 0  # a classifier at chance is said so beside its accuracy
    assert "(not clearly above chance: adherence may not tell" in (runs["jolly"] / "report.md").read_text()


def test_bootstrap_intervals():
    values = np.array([1.0] * 8 + [0.0] * 2)
    mean, low, high = bootstrap_mean(values, seed=0)
    assert mean == 0.8 and 0.5 <= low < 0.8 < high <= 1.0
    assert bootstrap_mean(np.ones(5), seed=0) == (1.0, 1.0, 1.0)  # no spread, no interval
    diff, low, high = bootstrap_difference(np.ones(10), np.zeros(10), seed=0)
    assert (diff, low, high) == (1.0, 1.0, 1.0)
    assert bootstrap_mean(values, seed=3) == bootstrap_mean(values, seed=3)  # fixed seeds reproduce


@pytest.mark.parametrize(
    "argv, option",
    [
        (["persona-eval", "RUN", "--persona-data", "GONE", "--other-data", "TEXT"], "--persona-data"),
        (["persona-eval", "RUN", "--persona-data", "TEXT", "--other-data", "GONE"], "--other-data"),
        (["persona-eval", "RUN", "--persona-data", "TEXT", "--other-data", "GONE", "--out", "OUT"], "--other-data"),
        (["persona", "RUN", "--persona-data", "GONE", "--train", "all"], "--persona-data"),
    ],
)
def test_a_persona_source_that_names_no_corpus_is_named_by_its_option(tmp_path, capsys, micro_toml, argv, option):
    """It was "data.source: 'gone.txt' is neither a built-in corpus ...": a key the user never gave."""
    assert main(["train", str(micro_toml), "--no-progress", "--name", "r"]) == 0
    (tmp_path / "p.txt").write_text("hello there")
    names = {"RUN": str(tmp_path / "runs" / "r"), "GONE": str(tmp_path / "gone.txt"), "TEXT": str(tmp_path / "p.txt")}
    capsys.readouterr()
    assert main([names.get(a, str(tmp_path / "out.md") if a == "OUT" else a) for a in argv]) == 2
    assert capsys.readouterr().err.startswith(f"slmlab: error: {option}: '{tmp_path / 'gone.txt'}' is neither a built-in")


def test_persona_eval_needs_other_text_for_a_plain_source(tmp_path, capsys):
    (tmp_path / "p.txt").write_text("hello")
    assert main(["persona-eval", "runs/x", "--persona-data", str(tmp_path / "p.txt")]) == 2
    assert "give --other-data SOURCE" in capsys.readouterr().err


def test_persona_eval_refuses_the_same_text_on_both_sides(tmp_path, capsys):
    """The classifier would be asked to tell a text from itself (chance accuracy, a meaningless table)."""
    from slmlab.config import ConfigError
    from slmlab.persona.classifier import persona_data

    (tmp_path / "p.txt").write_text("hello there, " * 50)
    with pytest.raises(ConfigError, match="select the same text"):
        persona_data(str(tmp_path / "p.txt"), str(tmp_path / "." / "p.txt"))
    (tmp_path / "q.txt").write_text("another voice entirely. " * 50)
    assert persona_data(str(tmp_path / "p.txt"), str(tmp_path / "q.txt")).other.source.endswith("q.txt")


def test_every_run_compared_is_checked_before_any_is_measured(tmp_path, micro_toml, text_corpus, capsys):
    """`--compare A B` with B missing, unfinished or unable to encode the prompts used to fail only
    after A's minutes of generation; now it fails before the classifier is trained."""
    digits = tmp_path / "digits"
    digits.mkdir()
    for i in range(6):
        (digits / f"{i}.txt").write_text(" ".join(str(n * i) for n in range(400)))
    argv = ["train", str(micro_toml), "--name", "char", "--data.source", str(digits), "--no-progress"]
    assert main(argv) == 0  # a char tokenizer that knows digits and spaces only
    assert main(["train", str(micro_toml), "--name", "byte", "--data.tokenizer", "byte", "--no-progress"]) == 0
    (tmp_path / "other.txt").write_text("another voice entirely, with its own words. " * 80)
    runs = tmp_path / "runs"
    shutil.copytree(runs / "byte", runs / "unfinished")
    (runs / "unfinished" / "final.safetensors").unlink()
    cases = [
        (runs / "none", "is not a run directory"),
        (runs / "unfinished", "has not finished training (no final.safetensors)"),
        (runs / "char", "its tokenizer cannot encode the prompts"),
    ]
    cases.append((f"{runs}/./byte", f"{runs}/./byte is named twice (as {runs / 'byte'})"))
    for second, message in cases:  # (the last: a run beside itself gave its row twice, every change exactly 0)
        argv = ["persona-eval", "--compare", str(runs / "byte"), str(second)]
        assert main([*argv, "--persona-data", str(text_corpus), "--other-data", str(tmp_path / "other.txt")]) == 2
        captured = capsys.readouterr()
        assert message in captured.err and "persona classifier" not in captured.out
    # an --out that is a folder or lies below a file, and a device slmlab cannot run on, failed only at the end
    (tmp_path / "a_file.txt").write_text("notes")
    for options, message in (
        (["--out", str(runs)], f"--out {runs} is a folder: name a file to write"),
        (["--out", str(tmp_path / "a_file.txt" / "t.md")], "a_file.txt is a file (a file stands where a folder is needed"),
        (["--device", "bogus"], "device 'bogus' is not one slmlab runs on"),
    ):
        argv = [
            "persona-eval",
            str(runs / "byte"),
            "--persona-data",
            str(text_corpus),
            "--other-data",
            str(tmp_path / "other.txt"),
        ]
        assert main([*argv, *options]) == 2
        captured = capsys.readouterr()
        assert message in captured.err and "persona classifier" not in captured.out + captured.err
    assert not (runs / "byte" / "persona_eval.json").exists()
    argv = ["persona-eval", str(runs / "byte"), "--persona-data", str(text_corpus), "--other-data", str(tmp_path / "other.txt")]
    assert main([*argv, "--seed", str(2**64 - 1), "--openings", "2", "--max-new-tokens", "4"]) == 0  # sklearn took < 2**32


def test_a_side_of_one_document_is_held_out_by_position_so_the_balanced_accuracy_is_balanced(tmp_path):
    """`--other-data other.txt` (one document) put every 'other' passage into training: the
    held-out 'balanced' accuracy was the persona's recall alone (sklearn warned that one label was
    found). Now a one-document side holds out its last fifth of passages; a side too short for
    that leaves the accuracy unmeasured, and the report card says so instead of failing."""
    from slmlab.persona.classifier import PersonaClassifier, held_out_passages, passages, persona_data

    rng = np.random.default_rng(0)
    for name, words in (("jolly.txt", JOLLY), ("mechanical.txt", MECHANICAL)):
        (tmp_path / name).write_text(" ".join(" ".join(rng.choice(words, 6)) + "." for _ in range(300)))
    chunks = passages((tmp_path / "jolly.txt").read_text())
    document = type("Doc", (), {"id": "a", "text": (tmp_path / "jolly.txt").read_text()})
    [(first, kept), (second, held)] = held_out_passages([document])
    assert (first, second) == (False, True) and kept + held == chunks and len(held) == max(1, len(chunks) // 5)
    classifier = PersonaClassifier(persona_data(str(tmp_path / "jolly.txt"), str(tmp_path / "mechanical.txt")))
    assert classifier.accuracy == 1.0 and classifier.held_out == 2 * len(held)
    (tmp_path / "short.txt").write_text("one short line of another voice.")
    unmeasured = PersonaClassifier(persona_data(str(tmp_path / "jolly.txt"), str(tmp_path / "short.txt")))
    assert np.isnan(unmeasured.accuracy) and "not measured" in unmeasured.describe()


def test_text_a_char_run_cannot_encode_is_said_to_be_left_out_not_a_silent_nan(tmp_path, micro_toml, caplog, capsys):
    """A char-level run measured against another text whose characters it has never seen printed
    'nan' as the other text's perplexity, and left out the openings it could not encode, without a
    word: each is now a warning saying why, and the table shows '–', as every table does for a value not measured."""
    from slmlab.persona.evaluate import INSTRUCTIONS, NEUTRAL

    sentences = [*NEUTRAL, *INSTRUCTIONS]
    rng = np.random.default_rng(0)
    for side, mark in (("persona", ""), ("other", "§ ")):
        (tmp_path / side).mkdir()
        for i in range(8):
            words = " ".join(rng.permutation(sentences)) * 3
            (tmp_path / side / f"doc{i}.txt").write_text((mark if i % 2 else "") + words)
    argv = ["train", str(micro_toml), "--name", "char", "--data.source", str(tmp_path / "persona"), "--no-progress"]
    assert main(argv) == 0
    capsys.readouterr()
    caplog.set_level("WARNING")
    run = tmp_path / "runs" / "char"
    argv = ["persona-eval", str(run), "--persona-data", str(tmp_path / "persona"), "--other-data", str(tmp_path / "other")]
    assert main([*argv, "--openings", "8", "--max-new-tokens", "4"]) == 0
    assert "other-text ppl and bpb not measured ('–' in the table)" in caplog.text and "'§' (U+00A7)" in caplog.text
    assert f"cannot encode {tmp_path / 'other'}, document 'doc1.txt': characters not in" in caplog.text  # the first one
    assert "adversarial prompts hold characters its tokenizer cannot encode" in caplog.text
    assert "persona-text ppl and bpb not measured" not in caplog.text
    assert capsys.readouterr().out.splitlines()[-1].rstrip(" |").endswith("–")
    saved = json.loads((run / "persona_eval.json").read_text())
    assert saved["other_ppl"] is None and saved["other_bpb"] is None and saved["persona_bpb"] > 0  # JSON has no NaN


def test_persona_documents_inside_the_other_text_are_left_out_of_its_side(tmp_path, caplog):
    """`--persona-data brown:R --other-data brown` (or a folder and the larger folder it came from)
    put each persona document on both sides: one passage under both labels, and the same held-out
    documents on each side, so the classifier scored chance and adherence was 0 for any model, in
    silence. The other side now leaves out documents whose text is a persona document's, and says
    how many; other text that is all persona text is refused."""
    from slmlab.config import ConfigError
    from slmlab.persona.classifier import PersonaClassifier, persona_data
    from slmlab.persona.evaluate import adversarial_prompts

    write_style(tmp_path / "jolly", JOLLY, 0)
    write_style(tmp_path / "everything", MECHANICAL, 1)
    for doc in (tmp_path / "jolly").iterdir():
        (tmp_path / "everything" / f"copy_{doc.name}").write_text(doc.read_text())
    caplog.set_level("WARNING")
    data = persona_data(str(tmp_path / "jolly"), str(tmp_path / "everything"))
    assert f"10 of the 20 documents of --other-data {tmp_path / 'everything'} are also persona documents" in caplog.text
    persona_texts = {doc.text for doc in data.persona_documents}
    assert len(data.other_documents) == 10 and not persona_texts & {doc.text for doc in data.other_documents}
    openings = adversarial_prompts(data, 10, 0)
    assert not any(text.startswith(opening) for opening in openings for text in persona_texts)
    classifier = PersonaClassifier(data)
    assert classifier.accuracy == 1.0 and classifier.above_chance and "not clearly above chance" not in classifier.describe()
    with pytest.raises(ConfigError, match="every document of --other-data .* is persona text"):
        persona_data(str(tmp_path / "everything"), str(tmp_path / "jolly"))


@pytest.mark.parametrize("seed", range(3))
def test_the_held_out_score_is_sklearns_balanced_accuracy_and_chance_is_named(seed):
    """A classifier no better than chance (the same passages under both labels, or one that calls
    everything one class) printed its accuracy as any other; adherence measured through it tells
    nothing. The held-out score says so; a real separation, even on few passages, is above chance."""
    from sklearn.metrics import balanced_accuracy_score

    from slmlab.persona.classifier import HeldOutScore

    rng = np.random.default_rng(seed)
    labels = (rng.random(400) < 0.2).astype(int)
    coin = rng.integers(0, 2, 400)
    for predicted in (coin, np.zeros(400, int), np.ones(400, int), np.where(rng.random(400) < 0.9, labels, coin)):
        score = HeldOutScore(labels, predicted)
        assert score.balanced_accuracy == pytest.approx(balanced_accuracy_score(labels, predicted), abs=1e-12)
    assert not HeldOutScore(labels, np.zeros(400, int)).above_chance()
    assert not HeldOutScore(labels, np.ones(400, int)).above_chance()
    halves = labels.copy()  # each class half right: 0.5 exactly
    for c in (0, 1):
        where = np.flatnonzero(labels == c)
        halves[where[: len(where) // 2]] = 1 - c
    assert HeldOutScore(labels, halves).balanced_accuracy == pytest.approx(0.5, abs=0.01)
    assert not HeldOutScore(labels, halves).above_chance() and HeldOutScore(labels, labels).above_chance()
    few = np.repeat([0, 1], 10)  # ten passages a side, all right: above chance; three a side are too few to say
    assert HeldOutScore(few, few).above_chance() and not HeldOutScore(few, 1 - few).above_chance()
    assert not HeldOutScore(few[7:13], few[7:13]).above_chance()


def test_persona_text_is_scored_on_the_runs_own_validation_split(tmp_path, micro_toml, monkeypatch):
    """persona-eval scored the persona and other texts at the default val_fraction of 0.1: for a
    run trained at 0.05, the documents between the two thresholds were trained on and scored as
    held out. Each run's texts are now scored on its own split."""
    import slmlab.persona.evaluate as evaluate
    from slmlab.data.split import validation_ids

    write_style(tmp_path / "jolly", JOLLY, 0)
    for i in range(10, 40):  # forty persona documents: some between u = 0.05 and u = 0.1
        (tmp_path / "jolly" / f"doc{i}.txt").write_text((tmp_path / "jolly" / f"doc{i % 10}.txt").read_text()[::-1])
    write_style(tmp_path / "mechanical", MECHANICAL, 1)
    argv = ["train", str(micro_toml), "--name", "r", "--data.source", str(tmp_path / "jolly"), "--data.tokenizer", "byte"]
    assert main([*argv, "--data.val_fraction", "0.05", "--no-progress"]) == 0
    names = [f"doc{i}.txt" for i in range(40)]
    assert validation_ids(names, 0.05) < validation_ids(names, 0.1)  # the band the default would have scored
    scored = []
    real = evaluate.prepare_tokens

    def recording(data, tokenizer):
        tokenizer, tokens = real(data, tokenizer)
        scored.append((data.source, data.val_fraction, set(tokens.manifest["val_ids"])))
        return tokenizer, tokens

    monkeypatch.setattr(evaluate, "prepare_tokens", recording)
    run = str(tmp_path / "runs" / "r")
    argv = ["persona-eval", run, "--persona-data", str(tmp_path / "jolly"), "--other-data", str(tmp_path / "mechanical")]
    assert main([*argv, "--openings", "2", "--max-new-tokens", "2"]) == 0
    persona = next(ids for source, _, ids in scored if source == str(tmp_path / "jolly"))
    assert {fraction for _, fraction, _ in scored} == {0.05} and persona == validation_ids(names, 0.05)


def test_a_persona_file_with_another_text_field_is_read_as_the_error_says(tmp_path, micro_toml, capsys):
    """persona-eval (and surgery) on a JSON-lines file whose text is under 'content' said "set
    data.text_field", then refused --data.text_field as a config override it does not take: an
    error with no way out. The two verbs take data.text_field and data.doc_separator (how their
    SOURCE files are read), and refuse any other setting by name."""
    rng = np.random.default_rng(0)
    for name, words in (("persona", JOLLY), ("other", MECHANICAL)):
        rows = [{"content": " ".join(rng.choice(words, 300)), "id": f"{name}{i}"} for i in range(10)]
        (tmp_path / f"{name}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    assert main(["train", str(micro_toml), "--name", "r", "--data.tokenizer", "byte", "--no-progress"]) == 0
    argv = ["persona-eval", str(tmp_path / "runs" / "r"), "--persona-data", str(tmp_path / "persona.jsonl")]
    argv += ["--other-data", str(tmp_path / "other.jsonl"), "--openings", "2", "--max-new-tokens", "2"]
    capsys.readouterr()
    assert main(argv) == 2
    assert "no field 'text' (its fields: 'content', 'id'); set data.text_field" in capsys.readouterr().err
    assert main([*argv, "--data.text_field", "content"]) == 0
    captured = capsys.readouterr()
    assert "held-out balanced accuracy 1.000" in captured.out + captured.err
    assert main([*argv, "--data.text_field", "content", "--data.seq_len", "16"]) == 2
    err = capsys.readouterr().err
    assert "reads only the settings data.text_field and data.doc_separator, so ['data.seq_len'] would change nothing" in err
    with pytest.raises(SystemExit) as exit:  # nanoGPT's spelling: the setting it is named
        main([*argv, "--text_field", "content"])
    assert exit.value.code == 2 and "(did you mean --data.text_field?)" in capsys.readouterr().err
    surgery = ["surgery", "--hf-model", str(tmp_path / "none"), "--persona-data", str(tmp_path / "persona.jsonl")]
    assert main([*surgery, "--train.lr", "1"]) == 2
    assert "reads only the settings data.text_field and data.doc_separator" in capsys.readouterr().err


def test_runs_that_scored_other_windows_are_not_paired_by_batch():
    """Paired batch by batch only where both runs scored the same token windows (one tokenizer,
    seq_len and batch size): other windows give '–' and say to compare bits per byte; adherence
    pairs the prompts both runs' tokenizers encoded, and nothing where none."""
    from slmlab.persona.compare import adherence_change, comparison_table

    def result(run, windows, losses, neutral):
        text = {"loss": float(np.mean(losses)), "batches": losses, "windows": windows}
        return {"run": run, "scores": {"neutral": neutral, "adversarial": [None]}, "texts": {"persona": text, "other": text}}

    base = result("a", "w1", [1.0, 1.2, 1.1], [1.0, 0.0, None, 1.0])
    same = result("b", "w1", [1.1, 1.3, 1.15], [0.0, 0.0, 1.0, None])
    other = result("c", "w2", [0.5, 0.6, 0.7], [1.0, 1.0, 1.0, 1.0])
    table = comparison_table([base, same, other])
    assert "| b   | -0.50 [" in table and "+8.69% [" in table.split("| b")[1].split("\n")[0]  # 100 (e^0.0833 − 1)
    assert "| c   | +0.33 [+0.00, +1.00] | –" in table and "compare bits per byte" in table
    assert np.isnan(adherence_change([1.0, None], [None, 0.0], 0)).all()  # no prompt both encoded
    assert comparison_table([base]) == ""
