"""Report cards: a micro run and a micro sweep give report.md and a self-contained report.html
whose tables hold the real numbers from the runs' summaries and metrics."""

from __future__ import annotations

import base64
import json
import re

import pytest

from slmlab.cli import main
from slmlab.training import train


def test_run_report_holds_the_runs_numbers_and_embeds_its_images(text_corpus, make_config, capsys):
    cfg = make_config(text_corpus, train={"steps": 10, "eval_every": 5, "sample_tokens": 12}, model={"n_layer": 3})
    run = train(cfg, progress=False).run_dir
    assert main(["report", str(run)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    md = (run / "report.md").read_text()
    assert f"{summary['val_loss']:.4f}" in md and f"{summary['val_ppl']:.3f}" in md
    assert f"{summary['tokens']:,}" in md and f"{summary['tokens_per_s']:,.0f}" in md
    assert re.search(r"\| model\.n_layer\s+\| 3\s+\| 4\s+\|", md)  # a setting that differs from the default
    assert f"{summary['params']:,}" in md
    assert summary["sample"] in md
    html = (run / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') == 1 and 'src="training.png"' not in html
    assert "<table>" in html and f"{summary['val_loss']:.4f}" in html


@pytest.mark.slow
def test_sweep_report_holds_the_results_table_and_every_run(micro_sweep, tmp_path):
    assert main(["sweep", str(micro_sweep), "--jobs", "2"]) == 0
    sweep_dir = tmp_path / "runs" / "micro"
    assert main(["report", str(sweep_dir)]) == 0
    md = (sweep_dir / "report.md").read_text()
    results = json.loads((sweep_dir / "results.json").read_text())
    for record in results["variants"]:
        assert f"{record['val_ppl_mean']:.3f}" in md
    full = next(r for r in results["variants"] if r["variant"] == "full")
    assert f"[{full['ci_low']:+.2f}, {full['ci_high']:+.2f}]" in md
    for run in ("baseline_s1", "baseline_s2", "full_s1", "full_s2"):
        summary = json.loads((sweep_dir / run / "summary.json").read_text())
        assert re.search(rf"\| {run}\s+\| \w+\s+\| {summary['val_loss']:.4f}\s+\| {summary['val_ppl']:.3f}\s", md)
    assert "**full**: `model.smat.use_S` = true, `model.smat.use_G` = true" in md  # TOML, as a config writes them
    assert 'src="data:image/png;base64,' in (sweep_dir / "report.html").read_text()


@pytest.mark.slow
def test_report_flags_results_of_weights_the_run_has_trained_past(text_corpus, make_config, capsys):
    """Quantised and evaluated, then trained on: the report showed the old int8 table and plots as
    the run's. Each is flagged, naming the command that redoes it, until that command reruns."""
    cfg = make_config(text_corpus, train={"steps": 4, "checkpoint_every": 4})
    run = train(cfg, progress=False).run_dir
    assert main(["quantize", str(run), "--int8", "--batches", "1"]) == 0
    assert main(["eval", str(run), "--by-position", "--batches", "1"]) == 0
    assert main(["report", str(run)]) == 0
    assert "Out of date" not in (run / "report.md").read_text()
    assert main(["train", "--resume", str(run), "--train.steps", "8", "--no-progress"]) == 0
    assert main(["report", str(run)]) == 0
    md = (run / "report.md").read_text()
    assert md.count("Out of date") == 2
    assert "`quantize.md` came from other weights" in md and f"rerun `slmlab quantize {run} --int8`" in md
    assert "`eval_by_position.png` came from other weights" in md and "--by-position" in md
    assert main(["quantize", str(run), "--int8", "--batches", "1"]) == 0
    assert main(["report", str(run)]) == 0
    md = (run / "report.md").read_text()
    assert md.count("Out of date") == 1 and "`eval_by_position.png`" in md
    (run / "derived.json").write_text("damaged")  # a command's results never fail on their record
    assert main(["quantize", str(run), "--int8", "--batches", "1"]) == 0
    assert main(["report", str(run)]) == 0 and "Out of date" not in (run / "report.md").read_text()
    capsys.readouterr()


def test_each_readout_has_its_own_section_in_the_report(text_corpus, make_config, capsys):
    """Every PNG in RUN/viz was embedded under "Attention maps": the lens, patching and
    attribution figures too."""
    run = train(make_config(text_corpus, train={"steps": 3, "checkpoint_every": 0}), progress=False).run_dir
    assert main(["viz", "attention", str(run), "--prompt", "ROMEO"]) == 0
    assert main(["viz", "lens", str(run), "--prompt", "ROMEO"]) == 0
    assert main(["viz", "attribute", str(run), "--prompt", "ROMEO"]) == 0
    assert main(["report", str(run)]) == 0
    md = (run / "report.md").read_text()
    attention = md.split("## Attention maps")[1].split("\n## ")[0]
    assert "attention_text" in attention and "lens" not in attention and "attribution" not in attention
    assert "## Logit lens\n\n![logit lens: lens](viz/lens.png)" in md
    assert "![direct logit attribution: attribution](viz/attribution.png)" in md and "## Activation patching" not in md
    capsys.readouterr()


def test_report_on_a_directory_that_is_neither_run_nor_sweep(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "neither a run directory (config.json) nor a sweep directory (results.json, written" in capsys.readouterr().err
    (tmp_path / "a_s0").mkdir()  # a sweep that has not ended: its runs are named
    (tmp_path / "a_s0" / "config.json").write_text("{}")
    assert main(["report", str(tmp_path)]) == 2
    assert (
        capsys.readouterr()
        .err.rstrip()
        .endswith(f"when the sweep ends); it holds runs (a sweep, or an out_dir): name one, e.g. {tmp_path / 'a_s0'}")
    )
    assert main(["report", str(tmp_path / "gone")]) == 2
    assert capsys.readouterr().err.rstrip().endswith("gone does not exist")


def test_samples_and_prompts_never_reach_the_html_as_markup(text_corpus, make_config, tmp_path):
    """A model trained on web or Markdown text samples ``` and <script>: inside a ``` fence that
    ended the block, and the rest went into report.html as HTML."""
    from slmlab.evals.prompts import markdown_report
    from slmlab.tables import code_block, code_span

    run = train(make_config(text_corpus, train={"steps": 2, "checkpoint_every": 0}), progress=False).run_dir
    hostile = "plain\n```\n<script>alert(1)</script>\n````x"
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "sample": hostile}))
    record = {
        "id": "p",
        "prompt": "<b>`x`</b>\n# not a heading",
        "completion": hostile,
        "temperature": 0,
        "seed": 0,
        "max_tokens": 5,
    }
    (run / "prompts_hostile.md").write_text(markdown_report("r", "hostile", [record]))
    assert main(["report", str(run)]) == 0
    html = (run / "report.html").read_text()
    assert "<script>" not in html and "<b>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert code_block("a ``` b") == "````\na ``` b\n````" and code_span("`x`\ny") == "`` `x`⏎y ``"


def test_raw_html_in_report_markdown_is_shown_as_text(tmp_path):
    """data.doc_separator = "<EOS>" in the settings table vanished as an unknown tag; any raw HTML
    from a run's names or values is text, and the report's own images still embed."""
    from slmlab.analysis.report import to_html

    (tmp_path / "curves.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    page = to_html(
        "| key | value |\n|---|---|\n| sep | '<EOS>' |\n\n<img src=x onerror=alert(1)>\n\n![c](curves.png)\n", tmp_path, "t"
    )
    assert "&lt;EOS&gt;" in page and "&lt;img src=x onerror=alert(1)&gt;" in page and "<img src=x" not in page
    assert 'src="data:image/png;base64,' in page


def test_report_links_and_images_run_no_script_and_embed_nothing_from_outside_the_run(tmp_path):
    """A run named "[a](javascript:alert(1))" (a valid folder name) rendered as a script link;
    an image path may not carry a file from beside the run into a shared report."""
    from slmlab.analysis.report import to_html

    run = tmp_path / "run"
    run.mkdir()
    (tmp_path / "private.png").write_bytes(b"\x89PNG\r\n\x1a\nSECRET")
    (run / "curves.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    page = to_html(
        "# [a](javascript:alert(1))\n\n[b](JaVa&#115;cript:alert(2)) [c](java\tscript:alert(3)) [d](data:text/html,x)\n\n"
        "[ok](prompts_x.md) [web](https://example.org/)\n\n![p](../private.png) ![c](curves.png)\n",
        run,
        "t",
    )
    links = re.findall(r'href="([^"]*)"', page)
    assert links[:4] == ["", "", "java  script:alert(3)", ""]  # the tab became spaces: no scheme, a relative path
    assert not [link for link in links if link.lower().startswith(("javascript", "data"))]
    assert 'href="prompts_x.md"' in page and 'href="https://example.org/"' in page
    assert base64.b64encode(b"SECRET").decode() not in page and page.count('src="data:image/png;base64,') == 1


def test_a_table_cell_holding_a_pipe_or_a_line_break_keeps_its_column():
    """A variant named "a|b" (a valid folder name) or a prompt id with a newline shifted every
    later column of its row."""
    from slmlab.tables import markdown_table

    table = markdown_table(["variant", "ppl"], [["a|b", "1.5"], ["two\nlines", "2.0"]])
    rows = table.splitlines()
    assert rows[2] == "| a\\|b      | 1.5 |" and rows[3] == "| two lines | 2.0 |"
    assert all(row.replace("\\|", "").count("|") == 3 for row in rows)


def test_a_table_pads_wide_and_combining_characters_by_the_columns_they_take():
    """A variant named 'héllo 🚀' or in Japanese shifted its row's later columns in the plain text."""
    from slmlab.tables import display_width, markdown_table

    rows = markdown_table(["variant", "ppl"], [["日本語", "1.5"], ["héllo 🚀", "2.0"], ["e\u0301", "3.0"], ["plain", "4.0"]])
    assert len({display_width(line) for line in rows.splitlines()}) == 1
    assert display_width("日本語") == 6 and display_width("e\u0301") == 1


def test_counts_are_written_singular_for_one():
    """'1 layers', '1 entrie': every count in a message goes through `counted`."""
    from slmlab.tables import counted

    assert [counted(n, "entries") for n in (0, 1, 2)] == ["0 entries", "1 entry", "2 entries"]
    assert counted(1, "CUDA devices") == "1 CUDA device" and counted(1_200, "documents") == "1,200 documents"


def test_large_figures_take_the_next_prefix():
    """A GPU run's training FLOPs pass 1e15: '25.00P', not '25000.00T'."""
    from slmlab.tables import human

    assert [human(n) for n in (999, 2.57e12, 2.5e16, 3e19)] == ["999", "2.57T", "25.00P", "30.00E"]
    assert human(3 * 1024**5, "B") == "3.0 PiB" and human(1536, "B") == "1.5 KiB"
