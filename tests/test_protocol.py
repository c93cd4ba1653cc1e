"""Every registered architecture offers the generic tools what model/protocol.py promises, and a
setting an architecture does not support is refused at load instead of being ignored."""

from __future__ import annotations

import pytest
import torch

from slmlab.analysis.info import size_table
from slmlab.config import ConfigError, config_from_dict
from slmlab.evals.long_context import loss_by_position
from slmlab.model import LanguageModel, build_model
from slmlab.model.attention_maps import capture_attention
from slmlab.model.generation import keeps_logits
from slmlab.registry import ARCHITECTURES, load_builtins
from slmlab.training import Trainer
from slmlab.training.curriculum import assert_patterns
from slmlab.training.optim import select_trainable

load_builtins()
SMALL = {
    "decoder": {},
    "tape": {"pos": "sinusoidal", "tape": {"n_critics": 2, "coda_layers": 1, "critic_layers": 1, "rnn_dim": 8}},
}


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_every_architecture_runs_through_every_generic_tool(arch, text_corpus, make_config):
    assert arch in SMALL, f"add a tiny config for the architecture '{arch}' to this test"
    cfg = make_config(
        text_corpus, model={"arch": arch, **SMALL[arch]}, train={"steps": 6, "eval_every": 3, "checkpoint_every": 3}
    )
    trainer = Trainer(cfg, progress=False)  # training, checkpoints, the kernel choice
    model = trainer.model
    assert isinstance(model, LanguageModel)
    assert_patterns(trainer)  # the curriculum's check
    result = trainer.fit()
    assert result.step == 6 and result.val_loss == result.val_loss
    units = model.shard_units()  # what FSDP2 shards
    assert units and all(any(p is q for q in model.parameters()) for u in units for p in u.parameters())
    assert select_trainable(model, "all") == sum(p.numel() for p in model.parameters())
    idx = torch.randint(0, cfg.model.vocab_size, (1, 6)).to(trainer.device)
    cached = model.generate(idx, 8, temperature=0)
    assert torch.equal(cached, model.generate(idx, 8, temperature=0, use_cache=False))
    maps, logits = capture_attention(model, idx)  # viz
    assert maps and logits.shape == (1, 6, cfg.model.vocab_size)
    rows, _ = loss_by_position(model, trainer.data.val, 32, 16, 2, 1, trainer.device)  # long context
    assert len(rows) == 2
    assert model.describe() in size_table(cfg)  # info


@pytest.mark.parametrize(
    ("model", "train", "message"),
    [
        (
            {"arch": "tape", "smat": {"use_S": True}},
            {},
            "takes no attention extension, so model.smat.use_S = True would be ignored",
        ),
        ({"arch": "tape", "self_area": {"enabled": True}}, {}, "takes no conditioning extension"),
        ({"arch": "tape", "attention_layers": ["full", "full", "full", "full"]}, {}, "has no per-layer attention patterns"),
        ({"arch": "tape", "global_every": 2}, {}, "has no per-layer attention patterns"),
        ({"tape": {"n_critics": 2}}, {}, "model.tape.n_critics = 2 applies only to model.arch = 'tape'"),
        ({"arch": "tape"}, {"trainable": "self_area"}, "needs a Self Area"),
        ({"pos": "alibi"}, {}, "model.pos = 'alibi' is not one of learned, rope, sinusoidal"),
        ({"arch": "mamba"}, {}, "model.arch = 'mamba' is not one of decoder, tape"),
        ({"local_kernel": "fast"}, {}, "model.local_kernel = 'fast' is not one of auto, windows, flex"),
        ({"smat": {"centrality_norm": "pre"}}, {}, "(did you mean 'prefix'?)"),
        ({"smat": {"s_dim": 0}}, {}, "model.smat.s_dim must be > 0"),
        ({}, {"lr": float("nan")}, "train.lr must be a finite number"),
        ({}, {"optimizer": "sgd"}, "train.optimizer = 'sgd' is not one of "),
        ({"smut": {}}, {}, "unknown config key 'model.smut' (did you mean 'model.smat'?)"),
    ],
)
def test_unsupported_or_unknown_settings_are_one_line_errors(model, train, message):
    with pytest.raises(ConfigError) as info:
        config_from_dict({"model": model, "train": train})
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_mistyped_setting_given_in_python_is_told_the_setting_closest():
    """ModelConfig(posn=...) takes unknown names as sections; it was told only the sections."""
    from slmlab.config import ModelConfig

    with pytest.raises(ConfigError, match=r"unknown config key 'model.posn' \(did you mean 'model.pos'\?\)"):
        ModelConfig(n_layer=1, posn="rope")


def test_the_members_slmlab_requires_are_the_protocols():
    """registry.MODEL_MEMBERS (checked on a built model) and config.checks.CLASS_MEMBERS (checked
    on the class before building) are written out where torch may not be imported; they must
    name exactly what model/protocol.py's LanguageModel declares, forward aside (nn.Module's)."""
    from slmlab.config.checks import CLASS_MEMBERS
    from slmlab.model.protocol import LanguageModel
    from slmlab.registry import MODEL_MEMBERS

    declared = set(LanguageModel.__annotations__) | {
        name for name, value in vars(LanguageModel).items() if callable(value) and not name.startswith("_")
    }
    assert declared - {"forward"} == set(MODEL_MEMBERS) | set(CLASS_MEMBERS)


def test_an_unknown_optimizer_lists_every_registered_one():
    """The listing follows registration order, which depends on which module was imported first
    (variants/wolf.py registers "wolf"), so only the names are checked."""
    with pytest.raises(ConfigError) as info:
        config_from_dict({"train": {"optimizer": "sgd"}})
    listed = str(info.value).split("is not one of ", 1)[1]
    assert sorted(listed.split(", ")) == ["adamw", "muon", "wolf"]


def test_tape_with_moderator_last_builds_only_what_it_reads():
    cfg = config_from_dict(
        {"model": {"arch": "tape", "vocab_size": 20, "d_model": 16, "n_head": 2, "tape": {"moderator": "last"}}}
    )
    merge = config_from_dict({"model": {"arch": "tape", "vocab_size": 20, "d_model": 16, "n_head": 2}})
    last, full = build_model(cfg.model), build_model(merge.model)
    assert len(last.critics) == 1 and len(full.critics) == merge.model.tape.n_critics
    assert sum(p.numel() for p in last.parameters()) < sum(p.numel() for p in full.parameters())


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_logits_to_keep_gives_the_last_positions_logits_and_generation_reads_the_prompt_for_one(arch, monkeypatch):
    """forward(..., logits_to_keep=k): the last k positions' logits of the full forward (with
    caches or without); generate computes the prompt's head for its last token only, and draws
    the tokens it drew when the head ran on every position."""
    assert arch in SMALL, f"add a tiny config for the architecture '{arch}' to this test"
    cfg = config_from_dict({"model": {"arch": arch, "n_layer": 2, "n_head": 2, "d_model": 16, "vocab_size": 40, **SMALL[arch]}})
    torch.manual_seed(0)
    model = build_model(cfg.model).double().eval()
    idx = torch.randint(0, 40, (2, 7))
    full, _ = model(idx)
    for k in (1, 3, 7, 9):
        kept, _ = model(idx, logits_to_keep=k)
        torch.testing.assert_close(kept, full[:, -k:], rtol=0, atol=1e-12)
    kept, _ = model(idx, caches=model.make_caches(), logits_to_keep=1)
    torch.testing.assert_close(kept, full[:, -1:], rtol=0, atol=1e-12)
    rows = []
    handle = model.head.register_forward_hook(lambda module, args, out: rows.append(args[0].shape[1]))
    sampled = model.generate(idx, 5, generator=torch.Generator().manual_seed(1))
    handle.remove()
    assert rows == [1] * 5  # the prompt's forward and each step: one position each
    every_position = type(model).forward  # a plugin's forward without logits_to_keep: generates the same
    monkeypatch.setattr(
        type(model), "forward", lambda self, idx, targets=None, caches=None: every_position(self, idx, targets, caches)
    )
    keeps_logits.cache_clear()
    try:
        assert torch.equal(model.generate(idx, 5, generator=torch.Generator().manual_seed(1)), sampled)
    finally:
        keeps_logits.cache_clear()
