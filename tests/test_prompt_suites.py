"""Prompt suites (TOML [[prompt]] tables or JSON lines) are read as written or refused in one
line that names the prompt and what to fix, before any prompt is generated."""

from __future__ import annotations

import json

import pytest

from slmlab.cli import main
from slmlab.config import ConfigError
from slmlab.evals.prompts import load_suite


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("seed = -1", "seed must be a whole number from 0"),
        ("max_tokens = 0", "max_tokens must be > 0"),
        ("temperature = -0.5", "temperature must be a finite number >= 0"),
        ("top_p = 0.0", "top_p must be in (0, 1]"),
        ("top_p = 1.5", "top_p must be in (0, 1]"),
        ("top_k = -3", "top_k must be a whole number >= 0"),
        ('prompt = ""', "prompt 'odd' is empty"),
        ('prompt = "T~"', "prompt 'odd': characters not in the tokenizer's vocabulary: '~'"),
        ("temperature = 0.0\ntop_k = 5", "top_k filters what is sampled, and temperature 0 samples nothing (greedy decoding)"),
        ("temperature = 0.0\nseed = 4", "seed 4 seeds the sampling, and temperature 0 samples nothing (greedy decoding)"),
        (
            "temperature = 0.0\ntop_p = 0.9\nseed = 4",
            "top_p filters what is sampled; seed 4 seeds the sampling, and temperature 0",
        ),
    ],
)
def test_a_prompt_suite_with_an_impossible_setting_is_one_line_naming_the_prompt(micro_toml, tmp_path, capsys, line, says):
    """Before: top_p = 0 blamed the model's weights ('probabilities are not finite'), a negative
    temperature sampled greedily, max_tokens = 0 wrote empty completions, and a greedy prompt's
    seed seeded nothing, all silently (`generate --seed` refused it already)."""
    assert main(["train", str(micro_toml), "--no-progress", "--name", "r"]) == 0
    suite = tmp_path / "suite.toml"
    odd = line if line.startswith("prompt =") else f'prompt = "T"\n{line}'
    suite.write_text(f'[[prompt]]\nid = "fine"\nprompt = "T"\n[[prompt]]\nid = "odd"\n{odd}\n')
    capsys.readouterr()
    assert main(["prompts", str(tmp_path / "runs" / "r"), "--suite", str(suite)]) == 2
    err = capsys.readouterr().err.strip()
    assert ("prompt[1] ('odd')" in err or "prompt 'odd'" in err) and says in err and "\n" not in err
    assert not list((tmp_path / "runs" / "r").glob("prompts_*"))


def test_a_prompt_suite_entry_without_its_id_or_text_is_one_line(tmp_path):
    """build_dataclass left required fields to the constructor: a TypeError traceback."""
    for entry, missing in (('prompt = "T"', "'id'"), ('id = "a"', "'prompt'")):
        suite = tmp_path / "suite.toml"
        suite.write_text(f"[[prompt]]\n{entry}\n")
        with pytest.raises(ConfigError, match=f"suite.toml: prompt\\[0\\]: {missing} must be given"):
            load_suite(suite)


def test_a_json_line_naming_a_setting_twice_is_refused(tmp_path):
    """json keeps the last of a repeated key: {"prompt": "A", ..., "prompt": "B"} generated from "B"
    in silence (TOML refuses a repeated key itself)."""
    suite = tmp_path / "suite.jsonl"
    suite.write_text('{"id": "a", "prompt": "T"}\n{"id": "b", "prompt": "A", "seed": 1, "prompt": "B"}\n')
    with pytest.raises(ConfigError, match=r"suite.jsonl:2: names 'prompt' more than once"):
        load_suite(suite)


def test_a_prompt_suite_with_other_tables_names_them(tmp_path):
    """[[prompts]] (plural) said only "the suite has no prompts"; a stray key was ignored."""
    suite = tmp_path / "suite.toml"
    suite.write_text('[[prompts]]\nid = "a"\nprompt = "T"\n')
    with pytest.raises(ConfigError, match=r"holds \[\[prompt\]\] tables only, not \['prompts'\] \(did you mean 'prompt'\?\)"):
        load_suite(suite)
    suite.write_text('[[prompt]]\nid = "a"\nprompt = "T"\n')
    assert [p.id for p in load_suite(suite)] == ["a"]


def test_a_suite_whose_prompt_is_not_a_list_of_tables_is_read_or_named(tmp_path):
    """`prompt = "KING"` was read letter by letter ("prompt[0]: expected a table of settings, got
    str 'K'"); one [prompt] table is a suite of one; a repeated id is named."""
    suite = tmp_path / "suite.toml"
    suite.write_text('prompt = "KING"\n')
    with pytest.raises(ConfigError, match=r"prompt = 'KING' is not a prompt table: write each prompt as a \[\[prompt\]\] table"):
        load_suite(suite)
    suite.write_text('[prompt]\nid = "a"\nprompt = "KING"\n')
    assert [(p.id, p.prompt) for p in load_suite(suite)] == [("a", "KING")]
    suite.write_text(
        '[[prompt]]\nid = "a"\nprompt = "K"\n[[prompt]]\nid = "b"\nprompt = "Q"\n[[prompt]]\nid = "a"\nprompt = "J"\n'
    )
    with pytest.raises(ConfigError, match="prompt ids must be unique; repeated: 'a'"):
        load_suite(suite)


@pytest.mark.parametrize("renderer", ["commonmark", "python-markdown"])
def test_a_prompt_id_with_markup_is_its_own_heading_text(renderer):
    """Before: an id was written into its heading as it was, so `a\\n# Prompt suite` began a new
    title line, `<b>` reached a rendered report as HTML, `x*y*` as emphasis and a closing `#` was
    dropped. Each report's title, heading and prompt must render to exactly the text given."""
    import html
    import re

    from slmlab.evals.prompts import markdown_report

    odd = "a\n# Prompt suite <b>x*y* [l](u) _i_ `c` \\ ~~s~~ | &amp; #"
    report = markdown_report(
        "run`1", "su~ite", [{"id": odd, "prompt": "T", "completion": "x", "temperature": 0.0, "seed": 0, "max_tokens": 1}]
    )
    assert report.count("\n# ") == 0 and len([line for line in report.splitlines() if line.startswith("## ")]) == 1
    if renderer == "commonmark":
        markdown_it = pytest.importorskip("markdown_it")  # CommonMark, as GitHub reads it (installed with rich)
        rendered = markdown_it.MarkdownIt("commonmark").enable(["strikethrough", "table"]).render(report)
    else:
        import markdown

        rendered = markdown.markdown(report)
    headings = re.findall(r"<h2>(.*?)</h2>", rendered)
    assert [html.unescape(re.sub(r"<[^>]+>", "", h)) for h in headings] == [odd.replace("\n", "⏎")]
    title = html.unescape(re.sub(r"<[^>]+>", "", re.search(r"<h1>(.*?)</h1>", rendered).group(1)))
    assert title == "Prompt suite su~ite on run`1"


def test_a_prompt_suite_saved_as_utf16_without_its_mark_is_named(tmp_path):
    """Read as UTF-8 it decoded, NUL beside each letter, and was refused as '[[prompt]]' missing."""
    suite = tmp_path / "s.toml"
    suite.write_bytes('[[prompt]]\nid = "a"\nprompt = "T"\n'.encode("utf-16-be"))
    with pytest.raises(ConfigError, match=r"s.toml is not text: 50% of its first 66 bytes are NUL, as in UTF-16"):
        load_suite(suite)
    suite = tmp_path / "s.jsonl"
    suite.write_bytes('{"id": "a", "prompt": "T"}\n'.encode("utf-16-le"))
    with pytest.raises(ConfigError, match=r"prompt suite .*s.jsonl is not text: 50% of its first 54 bytes are NUL"):
        load_suite(suite)


@pytest.mark.parametrize("prompt_id", ["", "  ", "\n"])
def test_a_prompt_with_an_empty_id_is_refused(tmp_path, prompt_id):
    """An empty id made the prompt's section of the report a heading with no text ('## ')."""
    suite = tmp_path / "suite.jsonl"
    suite.write_text(json.dumps({"id": prompt_id, "prompt": "T"}) + "\n")
    with pytest.raises(ConfigError, match=r"prompt\[0\] .*: id is empty"):
        load_suite(suite)


def test_the_bundled_suite_fits_the_context_of_every_shipped_config():
    """`slmlab prompts` on a run of configs/smat_quick.toml (the README's main job, 128 positions)
    or tape_small.toml refused the bundled suite: its 'thermostat' prompt was 130 characters. Every
    bundled prompt now fits every shipped model's context in any tokenizer (at most a token per
    UTF-8 byte, and the separator before it)."""
    from pathlib import Path

    from slmlab.config import load_config, read_toml
    from slmlab.evals.prompts import DEFAULT_SUITE
    from slmlab.experiments.sweep_config import load_sweep

    longest = max(len(p.prompt.encode("utf-8")) for p in load_suite(DEFAULT_SUITE))
    for preset in sorted(Path(__file__).parents[1].glob("configs/*.toml")):
        configs = [job.config for job in load_sweep(preset)[1]] if "base" in read_toml(preset) else [load_config(preset)]
        for cfg in configs:
            assert longest + 1 < cfg.model.block_size, (preset.name, cfg.model.block_size)


def test_an_unknown_key_of_a_prompt_lists_a_prompts_keys_not_a_run_configs(tmp_path):
    """`name = ...` in a [[prompt]] was answered "did you mean 'name'?" (the run config's own
    setting of that name), which the suite cannot hold; the keys a prompt holds are listed."""
    suite = tmp_path / "suite.toml"
    suite.write_text('[[prompt]]\nname = "a"\nprompt = "T"\n')
    with pytest.raises(ConfigError, match=r"unknown config key 'prompt\[0\]\.name' \(prompt\[0\] holds id, prompt, "):
        load_suite(suite)
