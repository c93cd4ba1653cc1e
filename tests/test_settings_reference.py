"""docs/settings.md: every setting of a run config and of a sweep config with its type, default
and meaning, generated from the config dataclasses and kept current by this test."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from slmlab.config import ModelConfig
from slmlab.config.reference import field_comments
from slmlab.experiments.settings_doc import settings_document

DOC = Path(__file__).resolve().parents[1] / "docs" / "settings.md"


def test_the_settings_document_is_current():
    assert DOC.read_text(encoding="utf-8") == settings_document(), (
        "docs/settings.md is out of date: python -m slmlab.experiments.settings_doc > docs/settings.md"
    )


def test_every_setting_says_what_it_does():
    """A field added without a comment beside it would reach the document with no meaning."""
    rows = [line for line in settings_document().splitlines() if line.startswith("| `")]
    assert len(rows) > 100
    assert [row.split("|")[1] for row in rows if not row.rstrip("| ").split("|")[-1].strip()] == []


def test_a_comment_is_read_from_every_line_of_a_declaration():
    """model.local_kernel's comment sits inside its parenthesised default, a line below its name."""
    comments = field_comments(ModelConfig)
    assert comments["local_kernel"].startswith("how block_local runs")
    assert comments["d_ff"] == "0 -> 4 * d_model"
    assert set(comments) == {f.name for f in dataclasses.fields(ModelConfig)}


def test_defaults_and_types_are_written_as_a_config_writes_them():
    reference = settings_document()
    assert '| `model.local_kernel` | "auto" \\| "windows" \\| "flex" | `"auto"` |' in reference
    assert "| `model.bias` | bool | `true` |" in reference  # TOML's true, not Python's True
    assert "| `phases.NAME.steps` | int | `–` |" in reference  # a phase's None: the earlier phase's value
    assert "| `data.genres` | list[str] | `[]` |" in reference
    assert "| `seeds` | list[int] | `[0]` |" in reference and "| `budget.flops` | float | `0.0` |" in reference
    assert "its run folder phaseN_&lt;name>" in reference  # '<name>' would be read as an HTML tag and vanish


def test_a_value_is_written_as_toml_reads_it_back():
    """Reports wrote Python's reprs ('cpu', True): a setting copied from one into a config failed."""
    import tomllib

    from slmlab.config.values import toml_literal

    for value in ["cpu", 'say "hi"\n', True, False, 0, 1e-05, 3.0, [1, 2], ["A", "B"], {"J": 0.4, "E": 0.6}, [], {}]:
        assert tomllib.loads(f"x = {toml_literal(value)}")["x"] == value, value
    assert toml_literal(None) == "–"
