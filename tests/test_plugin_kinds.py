"""Plugins of every registry kind beyond attention extensions: a whole architecture with no
attention layer, a tokenizer (with the reader of its file), a trainable-parameter selection. Each
is one file named in a config, and every verb that reads its runs reads them."""

from __future__ import annotations

import pytest
import torch

from tests.test_plugins import plugin_toml, slmlab

RECURRENT = '''
import torch.nn.functional as F
from torch import nn
from slmlab.model.generation import GenerationMixin
from slmlab.registry import ARCHITECTURES


class State:
    def __init__(self):
        self.length, self.h = 0, None


class RecurrentLM(GenerationMixin, nn.Module):
    """A GRU language model: an architecture with no attention layer at all."""

    extension_points = frozenset()

    def __init__(self, cfg, attention_extensions=None, conditioning=None):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.rnn = nn.GRU(cfg.d_model, cfg.d_model, num_layers=cfg.n_layer, batch_first=True)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)

    def forward(self, idx, targets=None, caches=None):
        out, h = self.rnn(self.wte(idx), caches[0].h if caches else None)
        if caches:
            caches[0].h, caches[0].length = h, caches[0].length + idx.shape[1]
        logits = self.head(out)
        loss = None if targets is None else F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-1)
        return logits, loss

    def make_caches(self):
        return [State()]

    def shard_units(self):
        return [self.rnn]

    def describe(self):
        return f"GRU, {self.cfg.n_layer} layers x {self.cfg.d_model}"


ARCHITECTURES.register("recurrent_test", RecurrentLM)
'''


@pytest.mark.slow
def test_an_architecture_without_attention_checks_trains_and_refuses_attention_maps_in_one_line(tmp_path, text_corpus):
    """A whole-architecture plugin with no CausalSelfAttention (a GRU) passes `slmlab check` and
    trains; the two verbs that draw attention maps say in one line why they cannot (`train
    --viz-every` crashed at its first frame, after training, and `viz attention` with a traceback)
    and write nothing."""
    plugin = tmp_path / "recurrent.py"
    plugin.write_text(RECURRENT)
    config = plugin_toml(tmp_path, text_corpus, plugin, section="")
    config.write_text(config.read_text().replace("[model]\n", '[model]\narch = "recurrent_test"\n'))
    checked = slmlab("check", str(config))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    compiled = next(line for line in checked.stdout.splitlines() if line.startswith("| compiled decoding"))
    assert (" 0 graphs" in compiled) == ("nothing captured: --compile decodes it eagerly" in compiled)  # nn.GRU
    framed = slmlab("train", str(config), "--name", "framed", "--viz-every", "2", "--no-progress")
    assert framed.returncode == 2 and not (tmp_path / "runs" / "framed").exists()
    assert "train.viz_every needs attention maps, and model.arch = 'recurrent_test' has no attention layers" in framed.stderr
    assert "Traceback" not in framed.stderr
    assert slmlab("train", str(config), "--name", "plain", "--no-progress").returncode == 0
    drawn = slmlab("viz", "attention", str(tmp_path / "runs" / "plain"), "--prompt", "abc", "--trust-plugins")
    assert drawn.returncode == 2 and "Traceback" not in drawn.stderr
    assert drawn.stderr.strip().splitlines()[-1].endswith("has no attention layers (CausalSelfAttention) to take them from")
    assert not (tmp_path / "runs" / "plain" / "viz").exists()


WORDS = '''
import json
import re

import numpy as np

from slmlab.data.tokenizers import Tokenizer
from slmlab.registry import TOKENIZER_FILES, TOKENIZERS

PIECES = re.compile(r"\\s+|\\S+")


class Words(Tokenizer):
    """Whitespace and words of the training text, the last id for any other piece."""

    kind = "{kind}"

    def __init__(self, words):
        self.words, self.vocab_size = list(words), np.int64(len(words))  # a numpy count, as numpy code gives
        self.index = {{w: i for i, w in enumerate(self.words)}}

    def encode(self, text):
        return [self.index.get(p, self.vocab_size - 1) for p in PIECES.findall(text)]

    def decode(self, ids):
        return "".join(self.words[i] for i in ids)

    def to_json(self):
        return json.dumps({{"slmlab_tokenizer": self.kind, "words": self.words}})

    def token_bytes(self):
        return np.array([len(w.encode()) for w in self.words[:-1]] + [0], dtype=np.int64)


def learn(data, texts):
    return Words(sorted({{p for t in texts for p in PIECES.findall(t)}}) + ["<other>"])


TOKENIZERS.register("{kind}", learn)
'''


@pytest.mark.slow
def test_a_tokenizer_plugin_trains_and_its_runs_read_back_or_is_refused_before_training(tmp_path, text_corpus):
    """A plugin tokenizer used to train a run that no verb could read (its tokenizer.json was
    'neither an slmlab nor a Hugging Face tokenizer file'). Its reader registers in
    TOKENIZER_FILES; a tokenizer whose file does not read back is refused before the run exists."""
    for kind, reader in (
        ("words_read", 'TOKENIZER_FILES.register("words_read", lambda spec: Words(spec["words"]))\n'),
        ("words_unread", ""),
    ):
        plugin = tmp_path / f"{kind}.py"
        plugin.write_text(WORDS.format(kind=kind) + reader)
        config = plugin_toml(tmp_path, text_corpus, plugin, section="")
        config.write_text(config.read_text().replace('tokenizer = "char"', f'tokenizer = "{kind}"'))
        trained = slmlab("train", str(config), "--name", kind, "--no-progress")
        if reader:
            assert trained.returncode == 0, trained.stderr
            evaluated = slmlab("eval", str(tmp_path / "runs" / kind), "--batches", "1", "--trust-plugins")
            assert evaluated.returncode == 0 and "bits/byte" in evaluated.stdout, evaluated.stderr
        else:
            assert trained.returncode == 2 and not (tmp_path / "runs" / kind).exists()
            assert trained.stderr.strip().endswith(
                "data.tokenizer = 'words_unread' writes a file slmlab cannot read back: tokenizer.json holds a "
                "'words_unread' tokenizer, which nothing loaded reads: name the plugin that registers its reader "
                "(registry.TOKENIZER_FILES) in the config's plugins"
            )


@pytest.mark.slow
def test_persona_trains_a_plugins_parameter_selection(tmp_path, text_corpus):
    """`persona --train` offered only the built-in selections (an argparse choice list), so a
    plugin's registry.TRAINABLE entry could not be used there; a name that is none of them is one
    line naming the closest."""
    from safetensors.torch import load_file

    plugin = tmp_path / "attention_only.py"
    plugin.write_text(
        "from slmlab.registry import TRAINABLE\n\n"
        "TRAINABLE.register('attention_only', lambda model: [p for n, p in model.named_parameters() if '.attn.' in n])\n"
    )
    config = plugin_toml(tmp_path, text_corpus, plugin, section="")
    assert slmlab("train", str(config), "--name", "base", "--no-progress").returncode == 0
    base = tmp_path / "runs" / "base"
    common = ["persona", str(base), "--persona-data", str(text_corpus), "--steps", "3", "--trust-plugins", "--no-progress"]
    wrong = slmlab(*common, "--train", "attention_onl")
    assert wrong.returncode == 2 and wrong.stderr.strip().splitlines()[-1].endswith("(did you mean 'attention_only'?)")
    tuned = slmlab(*common, "--train", "attention_only")
    assert tuned.returncode == 0, tuned.stderr
    before, after = load_file(base / "final.safetensors"), load_file(tmp_path / "runs" / "base_persona" / "final.safetensors")
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed and all(".attn." in name for name in changed)


LAYER_BIAS = """
from dataclasses import dataclass

import torch
from torch import nn

from slmlab.registry import CONDITIONING, register_section


@dataclass
class LayerBiasConfig:
    enabled: bool = False


class LayerBias(nn.Module):
    '''A learned shift of the residual stream before each block: x -> x + b_layer.'''

    padding_safe = True

    def __init__(self, cfg):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(cfg.n_layer, cfg.d_model))

    def forward(self, layer, x):
        return x + self.bias[layer], None

    def naive(self, layer, x):
        return x + self.bias[layer], None


CONDITIONING.register("layer_bias", lambda cfg: LayerBias(cfg) if cfg.layer_bias.enabled else None)
register_section("layer_bias", LayerBiasConfig, extends="conditioning")
"""


@pytest.mark.slow
def test_a_conditioning_plugin_checks_and_two_conditionings_are_refused_not_one_dropped(tmp_path, text_corpus):
    """The decoder takes one residual conditioning; with a plugin's and the Self Area both
    switched on, build_model kept the first registered (the Self Area) and dropped the plugin's in
    silence. Now that is one line, before any run directory is written."""
    plugin = tmp_path / "layer_bias.py"
    plugin.write_text(LAYER_BIAS)
    config = plugin_toml(tmp_path, text_corpus, plugin, section="[model.layer_bias]\nenabled = true\n")
    checked = slmlab("check", str(config))
    assert checked.returncode == 0 and "naive reference (float64) | pass" in checked.stdout, checked.stdout + checked.stderr
    both = ["--model.self_area.enabled", "true"]
    message = "the model would have 2 residual conditionings (self_area, layer_bias), and an architecture takes one"
    for verb in (["check", str(config), *both], ["train", str(config), "--name", "both", "--no-progress", *both]):
        result = slmlab(*verb)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "runs" / "both").exists()


HALF_DONE = """
import torch
from torch import nn
from slmlab.registry import ARCHITECTURES, HEADS, OPTIMIZERS, POSITIONS, TOKENIZERS, TRACKERS


class NoPositions(nn.Module):
    '''No position information at all (NoPE), but without max_positions.'''

    def __init__(self, cfg):
        super().__init__()

    def embed(self, positions):
        return None

    def rotate(self, q, k, positions):
        return q, k


class BareHead(nn.Linear):
    '''A linear head without the loss(h, targets) the trainer calls.'''

    def __init__(self, cfg):
        super().__init__(cfg.d_model, cfg.vocab_size, bias=False)


class Forward(nn.Module):
    '''An architecture that is only a forward: none of what the generic tools read.'''

    def __init__(self, cfg, attention_extensions=None, conditioning=None):
        super().__init__()
        self.cfg = cfg

    def forward(self, idx, targets=None, caches=None):
        raise NotImplementedError


POSITIONS.register("nope_half_done", NoPositions)
HEADS.register("head_half_done", BareHead)
class Tracker:
    '''A tracker that logs but cannot be closed.'''

    def __init__(self, cfg, run, resume):
        pass

    def log(self, scalars, step):
        pass


ARCHITECTURES.register("arch_half_done", Forward)
TRACKERS.register("tracker_half_done", Tracker)
OPTIMIZERS.register("optimizer_half_done", lambda model, cfg, device: [p for p in model.parameters()])
TOKENIZERS.register("tokenizer_half_done", lambda data, texts: {c: i for i, c in enumerate(sorted(set("".join(texts))))})
"""


@pytest.mark.slow
def test_a_plugin_class_missing_a_member_the_backbone_reads_is_one_line(tmp_path, text_corpus):
    """A position scheme without max_positions, a head without loss(), or an architecture without
    the class attributes the config checks read failed with an AttributeError traceback; now the
    config or the model is refused, in one line."""
    plugin = tmp_path / "half_done.py"
    plugin.write_text(HALF_DONE)
    config = plugin_toml(tmp_path, text_corpus, plugin, section="")
    for setting, message in (
        ("--model.pos=nope_half_done", "position scheme 'nope_half_done' (NoPositions) has no max_positions"),
        ("--model.head=head_half_done", "LM head 'head_half_done' (BareHead) has no loss"),
        ("--model.arch=arch_half_done", "architecture 'arch_half_done' (Forward) has no extension_points"),
    ):
        for verb in (["check", str(config)], ["train", str(config), "--name", "half", "--no-progress"]):
            result = slmlab(*verb, setting)
            assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
            assert message in result.stderr.strip().splitlines()[-1]
    for setting, message in (  # what only training builds
        ('--train.trackers=["tracker_half_done"]', "tracker 'tracker_half_done' (Tracker) has no close"),
        ("--train.optimizer=optimizer_half_done", "optimizer 'optimizer_half_done' (list) has no param_groups, step"),
        ("--data.tokenizer=tokenizer_half_done", "data.tokenizer = 'tokenizer_half_done' built a dict, not a tokenizer"),
    ):
        result = slmlab("train", str(config), "--name", "half", "--no-progress", setting)
        assert result.returncode == 2 and message in result.stderr.strip().splitlines()[-1], result.stderr
    assert not (tmp_path / "runs" / "half").exists()
