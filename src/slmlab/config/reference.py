"""Settings as Markdown tables, their type, default and meaning, for docs/settings.md
(experiments/settings_doc.py puts the run config's and the sweep config's together).

The meanings are the comments beside each field in the config dataclasses (a field's trailing
`# ...`, read from its source lines), so the document cannot drift from the code."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import textwrap
import tokenize
import types
import typing

from ..registry import MODEL_SECTIONS, is_builtin_module, load_builtins
from .schema import DataConfig, ModelConfig, PhaseConfig, RunConfig, TrainConfig
from .values import toml_literal


def field_comments(cls: type) -> dict[str, str]:
    """{field name: the comment on its source lines} of a dataclass's fields (not its ClassVars),
    read from its source: a trailing `# ...` on the line (or lines) that declare it."""
    source = textwrap.dedent(inspect.getsource(cls))
    comments: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
    fields = {f.name for f in dataclasses.fields(cls)}
    body = ast.parse(source).body[0].body
    declared = [node for node in body if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", None) in fields]
    return {
        node.target.id: " ".join(comments[line] for line in range(node.lineno, node.end_lineno + 1) if line in comments)
        for node in declared
    }


def _type_name(hint: object) -> str:
    """int, float, bool, str, list[str], one of "a" | "b" (a Literal), ... for a type hint."""
    if typing.get_origin(hint) is typing.Literal:
        return " \\| ".join(toml_literal(choice) for choice in typing.get_args(hint))
    args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:  # int | None: a phase's "keep"
        return _type_name(args[0])
    if args:
        return f"{typing.get_origin(hint).__name__}[{', '.join(_type_name(arg) for arg in args)}]"
    return getattr(hint, "__name__", str(hint))


def settings_table(cls: type, prefix: str) -> list[str]:
    """A Markdown table of `cls`'s settings, each named `prefix.name`: type, default, meaning. A
    table of settings of its own (a section, [[phases]]) is left to a table of its own."""
    hints, comments, instance = typing.get_type_hints(cls), field_comments(cls), cls()
    rows = ["| setting | type | default | meaning |", "|---|---|---|---|"]
    for f in dataclasses.fields(cls):
        if f.name in ("sections", "phases") or dataclasses.is_dataclass(getattr(instance, f.name)):
            continue
        meaning = comments.get(f.name, "").replace("|", "\\|").replace("<", "&lt;")  # <name> read as no HTML tag
        rows.append(
            f"| `{prefix}{f.name}` | {_type_name(hints[f.name])} | `{toml_literal(getattr(instance, f.name))}` | {meaning} |"
        )
    return rows


def _summary(cls: type) -> str:
    """The first paragraph of a dataclass's docstring, on one line, and the file it is in."""
    path = "src/" + cls.__module__.replace(".", "/") + ".py"
    return " ".join(inspect.getdoc(cls).split("\n\n")[0].split()) + f" (`{path}`)"


def reference_sections(parts: list[tuple[str, type, str]]) -> list[str]:
    """Markdown lines: for each (title, dataclass, prefix) a heading, the dataclass's summary and
    the table of its settings."""
    lines = []
    for title, cls, prefix in parts:
        lines += [f"## {title}", "", _summary(cls), "", *settings_table(cls, prefix), ""]
    return lines


def run_config_parts() -> list[tuple[str, type, str]]:
    """(title, dataclass, prefix) of a run config's parts: the top level, [model], each built-in
    [model.<section>], [data], [train] and a curriculum's [[phases]]."""
    load_builtins()
    return [
        ("The top level", RunConfig, ""),
        ("[model]", ModelConfig, "model."),
        *(
            (f"[model.{name}]", section.config, f"model.{name}.")
            for name, section in MODEL_SECTIONS.items()
            if is_builtin_module(section.config.__module__)
        ),
        ("[data]", DataConfig, "data."),
        ("[train]", TrainConfig, "train."),
        ("[[phases]]", PhaseConfig, "phases.NAME."),
    ]
