"""`slmlab eval RUN --text FILE`: every token of a text scored once, each after the text before it
that its window holds, against a naive token-by-token reference; bits per byte of the file's
bytes; bad input is one line."""

from __future__ import annotations

import itertools
import json
import math
import shutil

import pytest
import torch
import torch.nn.functional as F

from slmlab.cli import main
from slmlab.config import ModelConfig, config_from_dict
from slmlab.data.tokenizers import ByteTokenizer
from slmlab.evals.text_score import rolling_pairs, score_text
from slmlab.experiments.stats import ratio_interval
from slmlab.model import build_model
from slmlab.training import train
from tests.conftest import one_line_error, tiny_config

TEXT = "HAMLET:\nTo be, or not to be, that is the question.\nCafé — naïve? " * 3  # multi-byte characters


@pytest.mark.parametrize(
    ("n", "window", "stride"), [(1, 8, 8), (7, 8, 8), (8, 8, 3), (29, 8, 8), (29, 8, 5), (29, 8, 1), (30, 1, 1)]
)
def test_the_windows_predict_every_token_once_after_the_most_context_they_hold(n, window, stride):
    ids = list(range(10, 10 + n))
    full = [0, *ids]
    pairs = list(rolling_pairs(ids, [7, 0], window, stride))
    assert len(pairs) == 1 + math.ceil((n - min(window, n)) / stride)  # the count score_text reports
    assert [t for _, t in pairs] != [] and list(itertools.chain(*(t for _, t in pairs))) == ids  # once each, in order
    seen = 0
    for context, targets in pairs:
        inputs = (context + targets)[:-1]
        assert context and len(inputs) <= window
        start = full.index(targets[0]) - len(context)
        assert full[start : start + len(inputs) + 1] == context + targets  # contiguous text, nothing skipped
        if seen >= window:  # after the first window: at least window - stride tokens before each target
            assert len(context) >= window - stride
        seen += len(targets)


def _naive_windows(model, ids: list[int], separator: int, window: int, stride: int) -> dict[int, list[float]]:
    """Token by token, alone: token j of full = [separator] + ids is read by the first window whose
    end (min(window, n), then + stride) reaches it, from that window's first input on -> each
    window's (by its end) log-likelihoods of the tokens it scores."""
    full, n = [separator, *ids], len(ids)
    stops = [min(window, n)]
    while stops[-1] < n:
        stops.append(min(stops[-1] + stride, n))
    scored = {stop: [] for stop in stops}
    with torch.no_grad():
        for j in range(1, n + 1):
            stop = next(s for s in stops if s >= j)
            logits, _ = model(torch.tensor([full[max(0, stop - window) : j]]))
            scored[stop].append(float(F.log_softmax(logits[0, -1].double(), -1)[full[j]]))
    return scored


ARCHITECTURES = {
    "decoder": {},
    "block-local, RoPE": {"attention": "block_local", "local_block": 4, "pos": "rope"},
    "SMAT + Self Area": {"smat": {"use_S": True, "use_G": True}, "self_area": {"enabled": True, "self_dim": 8}},
    "Student-t head": {"head": "student_t"},
    "TapeTransformer": {"arch": "tape", "tape": {"n_critics": 2, "rnn_dim": 8}},
}


@pytest.mark.parametrize(("stride", "architecture"), [(None, "decoder"), (1, "decoder"), *((5, name) for name in ARCHITECTURES)])
def test_score_text_equals_a_token_by_token_reference(stride, architecture):
    torch.manual_seed(0)
    shape = {"n_layer": 2, "n_head": 2, "d_model": 32, "vocab_size": 260, "block_size": 16}
    model = build_model(ModelConfig(**shape, **ARCHITECTURES[architecture])).eval()
    tokenizer = ByteTokenizer()
    result = score_text(model, tokenizer, TEXT, stride, batch_size=3)
    ids = list(TEXT.encode("utf-8"))
    windows = _naive_windows(model, ids, tokenizer.separator_ids()[-1], 16, stride or 16)
    assert result["tokens"] == result["bytes"] == len(ids) and result["stride"] == (stride or 16)
    assert -result["loss"] * result["tokens"] == pytest.approx(sum(map(sum, windows.values())), rel=1e-5)
    # the loss's 95% CI over the windows, each scoring its own tokens (none twice)
    interval = ratio_interval([-sum(w) for w in windows.values()], [len(w) for w in windows.values()])
    assert (result["loss_low"], result["loss_high"]) == pytest.approx(interval, rel=1e-5)
    assert result["bpb"] == pytest.approx(result["loss"] / math.log(2))  # bytes are the tokens
    assert result["ppl"] == pytest.approx(math.exp(result["loss"]))


def test_the_cli_scores_a_file_as_corpus_text_in_bits_per_byte_and_refuses_bad_input_in_one_line(tmp_path, text_corpus, capsys):
    base = tiny_config(text_corpus, tmp_path).to_dict()
    base["model"]["block_size"] = 32
    base["train"].update(steps=40, checkpoint_every=0, eval_every=40)
    run = train(config_from_dict(base), progress=False).run_dir
    sample = tmp_path / "sample.txt"
    sample.write_bytes(("ROMEO:\r\nBut soft, what light through yonder window breaks?\r\n" * 6).encode())
    assert main(["eval", str(run), "--text", str(sample), "--json"]) == 0
    disjoint = json.loads(capsys.readouterr().out)
    assert main(["eval", str(run), "--text", str(sample), "--stride", "4", "--json"]) == 0
    sliding = json.loads(capsys.readouterr().out)
    text = sample.read_text().replace("\r\n", "\n")  # read as corpus files are
    assert disjoint["tokens"] == len(text) and disjoint["bytes"] == len(text.encode()) and disjoint["windows"] == 11
    assert sliding["tokens"] == disjoint["tokens"] and sliding["windows"] == 1 + math.ceil((len(text) - 32) / 4)
    assert disjoint["bpb"] == pytest.approx(disjoint["loss"] * disjoint["tokens"] / math.log(2) / disjoint["bytes"])
    assert main(["eval", str(run), "--text", str(sample)]) == 0
    line = capsys.readouterr().out.strip()
    found = "0 of its 8 passages found in the run's training split"
    assert line.startswith(
        f"{sample}: {len(text)} tokens ({len(text)} bytes; {found}), each scored once, in 11 windows of 32 moved by 32"
    )
    low, high = disjoint["loss_low"], disjoint["loss_high"]
    assert low < disjoint["loss"] < high
    assert line.endswith(f"{disjoint['bpb']:.4f} bits/byte; 95% CI of the loss [{low:.4f}, {high:.4f}] over 11 windows")
    (tmp_path / "short.txt").write_text("ROMEO")  # one window: no interval, and the line says why
    assert main(["eval", str(run), "--text", str(tmp_path / "short.txt")]) == 0
    assert capsys.readouterr().out.strip().endswith("bits/byte; no interval from 1 window")
    (tmp_path / "one.txt").write_text("R")  # it read "1 tokens (1 bytes"
    assert main(["eval", str(run), "--text", str(tmp_path / "one.txt")]) == 0
    assert ": 1 token (1 byte" in capsys.readouterr().out

    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "latin1.txt").write_bytes("Café".encode("latin-1"))
    (tmp_path / "unknown.txt").write_text("ROMEO: ☃")
    for argv, says in [
        (["--text", str(tmp_path / "empty.txt")], "the text is empty"),
        (["--text", ""], "--text is empty: give the path of a UTF-8 text file"),
        (["--text", str(tmp_path / "missing.txt")], "--text " + str(tmp_path / "missing.txt") + ": no such file"),
        (["--text", str(tmp_path / "latin1.txt")], "not UTF-8"),
        (["--text", str(tmp_path / "unknown.txt")], "not in the tokenizer's vocabulary"),
        (["--text", str(sample), "--stride", "33"], "the stride must be a whole number from 1 to the model's window of 32"),
        (["--text", str(sample), "--data.source", "x.txt"], "--text scores that file: settings such as --data.source"),
        (["--stride", "4"], "--stride applies only with --text"),
        (["--text", str(sample), "--by-position"], "--text scores the file, not the run's validation split"),
    ]:
        assert main(["eval", str(run), *argv]) == 2, argv
        one_line_error(capsys, says)


@pytest.mark.slow
def test_a_sweep_scores_the_text_with_every_finished_run_and_pairs_the_variants_by_seed(micro_sweep, tmp_path, capsys, caplog):
    from slmlab.evals.score import load_for_inference
    from slmlab.experiments.stats import paired_difference

    assert main(["sweep", str(micro_sweep)]) == 0
    sweep_dir = tmp_path / "runs" / "micro"
    sample = tmp_path / "sample.txt"
    sample.write_text("To be, or not to be, that is the question. " * 8)
    (sweep_dir / "full_s2" / "summary.json").unlink()  # as if killed: left out, and said so
    capsys.readouterr()
    with caplog.at_level("WARNING", logger="slmlab"):
        assert main(["eval", str(sweep_dir), "--text", str(sample), "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert f"{sweep_dir / 'full_s2'} has not finished (no summary.json): left out" in caplog.text
    by_variant = {v["variant"]: v for v in figures["variants"]}
    assert {v: sorted(by_variant[v]["bpb_by_seed"]) for v in by_variant} == {"baseline": ["1", "2"], "full": ["1"]}
    for variant, seed in [("baseline", 1), ("baseline", 2), ("full", 1)]:
        _, model, tokenizer, _ = load_for_inference(sweep_dir / f"{variant}_s{seed}", "cpu")
        alone = score_text(model, tokenizer, sample.read_text())["bpb"]
        assert by_variant[variant]["bpb_by_seed"][str(seed)] == pytest.approx(alone, rel=1e-9)
    full, base = ({int(s): b for s, b in by_variant[v]["bpb_by_seed"].items()} for v in ("full", "baseline"))
    assert by_variant["full"]["delta_bpb"] == pytest.approx(paired_difference(full, base)[0])
    assert by_variant["full"]["wins"] == int(full[1] < base[1])
    assert main(["eval", str(sweep_dir), "--text", str(sample)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"micro on {sample} (bits per byte):\n| variant") and "| full " in out
    assert main(["eval", str(sweep_dir), "--text", str(sample), "--int8"]) == 2
    one_line_error(capsys, "--int8 reads one run;")
    assert "windows of their own context" not in caplog.text  # every run's block_size is one
    sample.write_text("To be, or not to be: 42% of {the} question")  # characters the char tokenizers never saw
    assert main(["eval", str(sweep_dir), "--text", str(sample)]) == 2
    assert one_line_error(capsys, "characters not in").startswith(
        f"slmlab: error: {sweep_dir / 'baseline_s1'} (variant 'baseline'): characters not in the tokenizer's vocabulary"
    )


def test_a_sweep_whose_variants_trained_at_other_contexts_is_scored_with_a_warning(micro_sweep, tmp_path, caplog):
    """Each run scores the text in windows of the context it trained at: a longer context lowers the
    loss of the same text, and the Δ counted it as the idea's. A larger block_size alone (positions
    the run never trained) changes no window."""
    base = micro_sweep.read_text().replace("seeds = [1, 2]", "seeds = [1]")
    micro_sweep.write_text(base + '"model.block_size" = 64\n')
    assert main(["sweep", str(micro_sweep)]) == 0
    sample = tmp_path / "sample.txt"
    sample.write_text("To be, or not to be, that is the question. " * 8)
    with caplog.at_level("WARNING", logger="slmlab"):
        assert main(["eval", str(tmp_path / "runs" / "micro"), "--text", str(sample)]) == 0
    assert "windows of the context they trained at" not in caplog.text
    shutil.rmtree(tmp_path / "runs" / "micro")
    micro_sweep.write_text(base + '"model.block_size" = 64\n"data.seq_len" = 64\n')
    assert main(["sweep", str(micro_sweep)]) == 0
    with caplog.at_level("WARNING", logger="slmlab"):
        assert main(["eval", str(tmp_path / "runs" / "micro"), "--text", str(sample)]) == 0
    assert "windows of the context they trained at (data.seq_len: baseline 32, full 64)" in caplog.text


def test_a_text_is_scored_in_windows_of_the_context_the_run_trained_at(text_corpus, tmp_path, capsys):
    """A RoPE model holds no position table, so block_size = 10**9 trains at any seq_len; `eval
    --text` scored a whole text in one window of 10**9, extrapolated far past the 32 tokens it
    trained at. The window is now data.seq_len; --context-length asks for another, up to the
    block size; the lm-eval adapter scores in the same window."""
    from slmlab.evals.harness import SlmlabLM
    from slmlab.runs.run_dir import RunDir

    cfg = tiny_config(text_corpus, tmp_path, model={"pos": "rope", "block_size": 10**9})
    train(cfg, progress=False)
    run = str(RunDir.for_config(cfg).path)
    sample = tmp_path / "sample.txt"
    sample.write_text((text_corpus / "prose" / "doc00.txt").read_text()[:2000])

    def window(*options: str) -> int:
        capsys.readouterr()
        assert main(["eval", run, "--text", str(sample), "--json", *options]) == 0
        return json.loads(capsys.readouterr().out)["window"]

    assert window() == 32 and window("--context-length", "96") == 96
    assert SlmlabLM(run=run).window == 32
    assert main(["eval", run, "--text", str(sample), "--context-length", str(10**9 + 1)]) == 2
    assert "past the model's context of 1000000000 tokens" in capsys.readouterr().err


def test_a_generation_past_the_context_the_run_trained_at_says_so(text_corpus, tmp_path, caplog):
    """Generation crops its context at model.block_size; a RoPE model of a vast block size
    generates past the seq_len it trained at in silence. A warning now says so in `generate`,
    `prompts` and persona-eval's continuations (and nothing where block_size is the trained
    context: there the window slides)."""
    from slmlab.evals.score import trained_context
    from slmlab.persona.evaluate import continuations
    from slmlab.runs.run_dir import RunDir, load_run

    wide = tiny_config(text_corpus, tmp_path, model={"pos": "rope", "block_size": 10**9})
    plain = tiny_config(text_corpus, tmp_path, model={"block_size": 32})
    plain.name = "plain"
    for cfg in (wide, plain):
        train(cfg, progress=False)
    warning = "past the 32 the run trained at (data.seq_len; model.block_size is 1000000000)"
    for cfg, new, warned in ((wide, 40, True), (wide, 10, False), (plain, 40, False)):
        caplog.clear()
        with caplog.at_level("WARNING", logger="slmlab"):
            argv = ["generate", str(RunDir.for_config(cfg).path), "--prompt", "The", "--max-new-tokens", str(new)]
            assert main(argv) == 0
        assert (warning in caplog.text) == warned and ("never trained on" in caplog.text) == warned
        suite = tmp_path / f"suite_{new}.toml"
        suite.write_text(f'[[prompt]]\nid = "short"\nprompt = "The"\nmax_tokens = 2\n\n'
                         f'[[prompt]]\nid = "long"\nprompt = "The"\nmax_tokens = {new}\n')  # fmt: skip
        caplog.clear()
        with caplog.at_level("WARNING", logger="slmlab"):
            assert main(["prompts", str(RunDir.for_config(cfg).path), "--suite", str(suite)]) == 0
        assert (f"prompt 'long' and its completion runs to {new + 3} tokens, {warning}" in caplog.text) == warned
        run_cfg, model, tokenizer = load_run(RunDir.for_config(cfg).path)
        caplog.clear()
        with caplog.at_level("WARNING", logger="slmlab"):
            continuations(model, tokenizer, ["Th", "The"], new, 0, torch.device("cpu"), trained_context(run_cfg))
        assert (f"a prompt and its continuation runs to {new + 3} tokens, {warning}" in caplog.text) == warned


@pytest.mark.parametrize("counts", [[7, 7, 7, 7], [16, 5, 5, 5, 2], [3, 9]])
def test_the_interval_of_a_mean_over_units_of_unequal_size(counts):
    """ratio_interval: for units of equal size, scipy's t interval of their means; for unequal
    sizes, the ratio estimator's linearised variance written out term by term."""
    import numpy as np
    import scipy.stats

    rng = np.random.default_rng(len(counts))
    totals = [float(rng.normal(2.0, 0.4, n).sum()) for n in counts]
    low, high = ratio_interval(totals, counts)
    ratio = sum(totals) / sum(counts)
    if len(set(counts)) == 1:
        means = np.array(totals) / counts[0]
        expected = scipy.stats.t.interval(0.95, len(means) - 1, loc=means.mean(), scale=scipy.stats.sem(means))
        assert (low, high) == pytest.approx(expected)
    k, mean_size = len(counts), sum(counts) / len(counts)
    variance = sum((y - ratio * n) ** 2 for y, n in zip(totals, counts)) / (k * (k - 1) * mean_size**2)
    half = scipy.stats.t.ppf(0.975, k - 1) * math.sqrt(variance)
    assert (low, high) == pytest.approx((ratio - half, ratio + half))
    assert all(math.isnan(v) for v in ratio_interval(totals[:1], counts[:1]))


def test_a_count_names_one_thing_in_the_singular():
    from slmlab.tables import counted

    words = {"batches": "batch", "windows": "window", "entries": "entry", "passes": "pass", "boxes": "box", "steps": "step"}
    for plural, singular in words.items():
        assert (counted(1, plural), counted(2, plural)) == (f"1 {singular}", f"2 {plural}")
