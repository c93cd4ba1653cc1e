"""`slmlab check` against plugins that break one property each (a token that sees the next one, an
extension that ignores the KV cache, a parameter left out of the graph, a per-step Python value
that makes torch.compile recompile, faults behind a gate that starts shut): each fails, naming the
property, and only it."""

from __future__ import annotations

from pathlib import Path

import pytest

from slmlab.cli import main
from tests.conftest import write_micro_toml

BROKEN = {
    "peek": (
        "causality (eval)",
        "return q, k, v.roll(-1, dims=2), scale  # each value slot holds the next token's value",
    ),
    "amnesia": (
        "KV cache = recomputation",
        "n = torch.arange(1, k.shape[2] + 1, device=k.device)[:, None]\n"
        "        return q, k - k.cumsum(2) / n, v, scale  # a prefix mean over this chunk only: forgets the cache",
    ),
    "dead": ("gradients", "return q, k, v, scale  # self.unused never enters the graph"),
    "restless": (
        "compiled decoding = eager",
        "if state is not None:  # a step count kept as a Python string: each step's code differs\n"
        "            state['steps'] = state.get('steps', '') + 'x'\n"
        "            v = v * (1.0 + 0.0 * len(state['steps']))\n"
        "        return q, k, v, scale",
    ),
    "prompt bound": (
        "compiled decoding = eager",
        "if state is not None:  # the prompt's length kept as a Python int: each prompt's steps differ\n"
        "            state.setdefault('prompt', k.shape[2])\n"
        "            v = v * (1.0 + 0.0 * state['prompt'])\n"
        "        return q, k, v, scale",
    ),
    # faults behind a gate that starts shut (alpha = 0 at init, as ReZero and LayerScale start):
    # the model at its init has none of them
    "gated peek": (
        "causality (eval)",
        "alpha = self.unused[0] - 1.0  # 0 at init: opens as it trains\n"
        "        return q, k, v + alpha * v.roll(-1, dims=2), scale",
    ),
    "gated padding count": (
        "left-padded batch = alone",
        "alpha = self.unused[0] - 1.0  # 0 at init: opens as it trains\n"
        "        start = state.get('count', 0) if state is not None else 0  # counts the padding too\n"
        "        if state is not None:\n"
        "            state['count'] = start + k.shape[2]\n"
        "        steps = torch.arange(start, start + k.shape[2], dtype=v.dtype, device=v.device)[:, None]\n"
        "        return q, k, v * (1.0 + alpha * steps / 64), scale",
        "self.padding_safe = True  # declared, but its position count includes the padding",
    ),
}


def broken_plugin(tmp_path: Path, text_corpus, name: str) -> Path:
    """A one-file plugin whose extension breaks one property, and a config switching it on."""
    _, body, *declaration = BROKEN[name]
    slug = name.replace(" ", "_")
    plugin = tmp_path / f"broken_{slug}.py"
    plugin.write_text(f"""
from dataclasses import dataclass
import torch
from torch import nn
from slmlab.registry import ATTENTION_EXTENSIONS, register_section

@dataclass
class BrokenConfig:
    enabled: bool = False

class Broken(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.unused = nn.Parameter(torch.ones(3))
        {"".join(declaration)}

    def forward(self, q, k, v, h, scale, state):
        {body}

ATTENTION_EXTENSIONS.register("broken_{slug}", lambda cfg, layer: Broken(cfg) if cfg.broken_{slug}.enabled else None)
register_section("broken_{slug}", BrokenConfig, extends="attention")
""")
    config = write_micro_toml(tmp_path / f"{slug}.toml", text_corpus, tmp_path)
    config.write_text(f'plugins = ["{plugin.name}"]\n' + config.read_text() + f"[model.broken_{slug}]\nenabled = true\n")
    return config


@pytest.mark.parametrize("name", list(BROKEN))
def test_a_broken_plugin_fails_naming_the_property(tmp_path, text_corpus, capsys, name):
    config = broken_plugin(tmp_path, text_corpus, name)
    assert main(["check", str(config)]) == 1
    err = capsys.readouterr().err
    property_name = BROKEN[name][0]
    assert f"FAIL {property_name}:" in err
    assert len([line for line in err.splitlines() if line.startswith("FAIL")]) >= 1
    failing = {line.split(":")[0].removeprefix("FAIL ") for line in err.splitlines()}
    assert "determinism" not in failing and "save/load round trip" not in failing  # only what is broken
