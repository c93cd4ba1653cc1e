"""The decoder backbone: causal, cache-consistent, sensibly initialised, trainable."""

from __future__ import annotations

import math

import pytest
import torch

from slmlab.config import ConfigError, ModelConfig
from slmlab.errors import CheckpointError
from slmlab.model import KVCache, build_model, model_stats
from slmlab.model.attention_maps import capture_attention
from slmlab.model.modes import eval_mode

V = 61


def tiny(**fields) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=V, n_layer=2, n_head=4, d_model=32, block_size=48, **fields)
    return build_model(cfg).eval()


@pytest.mark.parametrize("fields", [{}, {"norm": "rmsnorm"}, {"bias": False, "tie_embeddings": False}])
def test_changing_a_future_token_never_changes_earlier_logits(fields, device):
    model = tiny(**fields).double().to(device)
    idx = torch.randint(0, V, (3, 40)).to(device)
    base, _ = model(idx)
    for t in (0, 17, 38):
        changed = idx.clone()
        changed[:, t + 1] = (changed[:, t + 1] + 1 + torch.arange(3, device=device)) % V
        logits, _ = model(changed)
        assert torch.equal(logits[:, : t + 1], base[:, : t + 1])
        assert not torch.allclose(logits[:, t + 1], base[:, t + 1])


def test_cached_decoding_equals_full_recomputation(device):
    model = tiny().double().to(device)
    idx = torch.randint(0, V, (2, 30)).to(device)
    full, _ = model(idx)
    caches = [KVCache(48) for _ in model.blocks]
    prefill, _ = model(idx[:, :12], caches=caches)
    steps = [model(idx[:, t : t + 1], caches=caches)[0] for t in range(12, 22)]
    chunk, _ = model(idx[:, 22:30], caches=caches)  # chunked prefill onto a non-empty cache
    cached = torch.cat([prefill, *steps, chunk], dim=1)
    torch.testing.assert_close(cached, full, rtol=1e-10, atol=1e-10)


def test_generate_with_cache_matches_generate_without():
    model = tiny()
    prompt = torch.randint(0, V, (2, 5))
    with_cache = model.generate(prompt, 60, temperature=0)  # runs past block_size: sliding window
    without = model.generate(prompt, 43, temperature=0, use_cache=False)
    assert with_cache.shape == (2, 65)
    assert torch.equal(with_cache[:, :48], without[:, :48])
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(
        model.generate(prompt, 20, generator=g1, top_k=10), model.generate(prompt, 20, generator=g2, top_k=10, use_cache=False)
    )


def test_too_long_prompt_is_a_clear_error():
    with pytest.raises(ValueError, match="prompt has 49 tokens but the model's context is 48"):
        tiny().generate(torch.zeros(1, 49, dtype=torch.long), 1)
    with pytest.raises(ValueError, match="exceeds the 48 positions"):
        tiny()(torch.zeros(1, 49, dtype=torch.long))


def test_loss_at_init_is_close_to_ln_vocab():
    model = tiny()
    idx, targets = torch.randint(0, V, (2, 8, 32))
    _, loss = model(idx, targets)
    assert abs(loss.item() - math.log(V)) < 0.1


def test_one_batch_can_be_overfitted():
    model = tiny().train()
    idx = torch.randint(0, V, (4, 32))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    for _ in range(150):
        _, loss = model(idx[:, :-1], idx[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.1


def test_parameter_count_matches_the_formula():
    d, L, f, T = 32, 2, 128, 48
    per_layer = 4 * d + (3 * d * d + 3 * d) + (d * d + d) + (d * f + f) + (f * d + d)  # 2 norms, qkv, proj, fc, proj
    expected = V * d + T * d + L * per_layer + 2 * d
    stats = model_stats(tiny(), tiny().cfg)
    assert stats.params == expected and stats.embedding_params == V * d + T * d
    assert stats.flops_per_token(T) == 6 * (expected - T * d) + 12 * L * d * T
    untied = tiny(tie_embeddings=False)
    assert model_stats(untied, untied.cfg).params == expected + V * d
    local = tiny(attention_layers=["block_local", "full"], local_block=8)  # layer 0 reaches 2B = 16 keys
    assert model_stats(local, local.cfg).flops_per_token(T) == 6 * (expected - T * d) + 12 * d * (16 + T)


def test_residual_projections_get_the_scaled_init():
    torch.manual_seed(0)
    model = build_model(ModelConfig(vocab_size=V, n_layer=8, d_model=256, n_head=4))
    std = model.blocks[0].mlp.proj.weight.std().item()
    assert abs(std - 0.02 / math.sqrt(16)) < 0.0005 and abs(model.blocks[0].mlp.fc.weight.std().item() - 0.02) < 0.001


@pytest.mark.parametrize(
    "arch, common, variant",
    [
        ("decoder", {}, {"smat": {"use_S": True, "use_G": True}}),
        ("decoder", {}, {"self_area": {"enabled": True}}),
        ("decoder", {}, {"smat": {"use_S": True}, "pos": "rope"}),
        ("decoder", {"head": "student_t", "tie_embeddings": False}, {"smat": {"use_G": True}}),
        ("tape", {"tie_embeddings": False}, {"tape": {"coda_rule": "sum", "critic_rule": "soft_xor"}}),
    ],
    ids=["smat full", "self area", "smat s + rope", "smat g, untied student-t head", "tape rules, untied head"],
)
def test_variants_built_with_one_seed_share_every_weight_they_have_in_common(arch, common, variant):
    """Common random numbers: a sweep pairs variants by seed, and a variant's extra modules (SMAT's
    score and gate layers, the Self Area) used to shift the global random stream, so the baseline
    and the variant started from unrelated weights. Each module now draws by its own name."""
    from slmlab.config import config_from_dict

    def weights(model: dict, seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(seed)
        cfg = config_from_dict({"model": {"arch": arch, "n_layer": 2, "n_head": 2, "d_model": 32, "block_size": 16,
                                          "vocab_size": V, **model}, "data": {"seq_len": 16}}).model  # fmt: skip
        torch.randn(int(1e3 * seed))  # whatever was drawn before does not matter beyond the seed
        return dict(build_model(cfg).named_parameters())

    base, other = weights(common, 0), weights({**common, **variant}, 0)
    shared = [n for n in base if n in other]
    assert len(shared) >= len(base) - 1  # RoPE has no learned position table
    drawn = [n for n in shared if base[n].std() > 0]
    assert len(drawn) >= 8 and all(torch.equal(base[n], other[n]) for n in shared)
    reseeded = weights(common, 1)
    assert not any(torch.equal(base[n], reseeded[n]) for n in drawn)  # another seed, other weights


def test_hook_points_can_read_and_replace_activations():
    model = tiny()
    idx = torch.randint(0, V, (1, 10))
    seen = {}
    handle = model.blocks[1].hook_attn_out.register_forward_hook(lambda m, i, o: seen.setdefault("out", o))
    base, _ = model(idx)
    handle.remove()
    assert seen["out"].shape == (1, 10, 32)
    handle = model.blocks[1].hook_attn_out.register_forward_hook(lambda m, i, o: torch.zeros_like(o))
    ablated, _ = model(idx)
    handle.remove()
    assert not torch.allclose(base, ablated)


@pytest.mark.parametrize("mlp", ["gelu", "swiglu"])
def test_dropout_acts_in_training_only_and_a_zero_dropout_is_no_module(mlp):
    cfg = dict(vocab_size=50, n_layer=2, n_head=2, d_model=32, block_size=16, mlp=mlp)
    idx = torch.randint(0, 50, (2, 16))
    torch.manual_seed(0)
    model = build_model(ModelConfig(dropout=0.3, **cfg))
    assert sum(isinstance(m, torch.nn.Dropout) for m in model.modules()) == 1 + 2 * 2  # embeddings, each block's 2
    assert not torch.equal(model(idx)[0], model(idx)[0])
    model.eval()
    assert torch.equal(model(idx)[0], model(idx)[0])
    plain = build_model(ModelConfig(dropout=0.0, **cfg))
    assert not any(isinstance(m, torch.nn.Dropout) for m in plain.modules())  # one call less per use when decoding
    plain.load_state_dict(model.state_dict())
    torch.testing.assert_close(plain(idx)[0], model(idx)[0], rtol=0, atol=0)


def test_evaluation_helpers_restore_the_training_mode_however_they_end():
    """Attention capture runs in eval mode and leaves a training model training, also when the
    forward raises (generate's own case: test_decoding_layout.py)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(n_layer=2, n_head=2, d_model=32, block_size=32, vocab_size=50))
    capture_attention(model, torch.tensor([[1, 2, 3]]))
    assert model.training
    with pytest.raises(ValueError), eval_mode(model):
        assert not model.training
        raise ValueError
    assert model.training
    with pytest.raises(ConfigError, match="positions"):
        capture_attention(model, torch.tensor([[1] * 40]))  # longer than the model's 32 positions
    assert model.training


@pytest.mark.parametrize(
    "prompt, message",
    [
        (torch.zeros(1, 0, dtype=torch.long), "the prompt is empty"),
        (torch.zeros(0, 3, dtype=torch.long), r"the prompt batch of shape \(0, 3\) has no rows"),  # RuntimeError from aminmax
        (torch.zeros(1, 3), "tensor of token ids, got torch.float32"),
        (torch.tensor([1, 2]), r"of shape \(2,\)"),  # an IndexError from the shape unpacking
        (torch.tensor([[1, 50]]), "token id 50, outside this model's vocabulary 0..49"),  # IndexError from the embedding
        (torch.tensor([[1, -1]]), "token id -1, outside"),
    ],
)
def test_generate_refuses_a_prompt_that_is_not_token_ids_of_this_model(prompt, message):
    model = build_model(ModelConfig(vocab_size=50, n_layer=1, n_head=2, d_model=16, block_size=16))
    with pytest.raises(ConfigError, match=message):
        model.generate(prompt, 3)
    assert model.generate(torch.tensor([[1, 49]], dtype=torch.int32), 3).shape == (1, 5)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"max_new_tokens": -3}, "max_new_tokens must be a whole number >= 0, got -3"),  # returned the prompt in silence
        ({"max_new_tokens": 2.5}, "got 2.5"),
        ({"max_new_tokens": 3, "vocab_size": 0}, r"vocab_size = 0 must be in 1..50"),  # sampled from no logits
        ({"max_new_tokens": 3, "vocab_size": 51}, r"vocab_size = 51 must be in 1..50"),
        # a stop token the model cannot sample stopped nothing, in silence; the others raised TypeError
        ({"max_new_tokens": 3, "stop_token": 50}, r"stop_token = 50 is no id of this model: give one of 0..49"),
        ({"max_new_tokens": 3, "stop_token": -1}, r"stop_token must be a whole number >= 0, got -1"),
        ({"max_new_tokens": 3, "stop_token": 2.5}, r"stop_token must be a whole number >= 0, got 2.5"),
        ({"max_new_tokens": 3, "top_k": 2.5}, r"top_k must be a whole number >= 0 \(0 or None = off\), got 2.5"),
        ({"max_new_tokens": 3, "top_k": True}, r"top_k must be a whole number >= 0 \(0 or None = off\), got True"),
        ({"max_new_tokens": 3, "temperature": "1"}, r"temperature must be a finite number >= 0 \(0 = greedy\), got '1'"),
        ({"max_new_tokens": 3, "compile": "nope"}, r"compile = 'nope' is not a torch.compile backend: give True"),
        ({"max_new_tokens": 3, "top_p": "0.9"}, r"top_p must be in \(0, 1\] \(1 or None = off\), got '0.9'"),
        # TypeErrors from inside the loop ('int' object is not callable), or accepted: "no" is truthy
        ({"max_new_tokens": 3, "until": 5}, r"until must be a function \(or None\), got int 5"),
        ({"max_new_tokens": 3, "sample": "greedy"}, r"sample must be a function \(or None\), got str 'greedy'"),
        ({"max_new_tokens": 3, "generator": 7}, r"generator must be a torch.Generator \(or None\), got int 7"),
        ({"max_new_tokens": 3, "use_cache": "no"}, r"use_cache must be True or False, got 'no'"),
        ({"max_new_tokens": 3, "padding": 1}, r"padding must be a \(1,\) tensor of whole numbers, one per prompt row; got int"),
        ({"max_new_tokens": 3, "padding": torch.tensor([0, 0])}, r"got torch.int64 of shape \(2,\)"),
        ({"max_new_tokens": 3, "padding": torch.tensor([0.0])}, r"got torch.float32 of shape \(1,\)"),
        (
            {"max_new_tokens": 3, "padding": torch.tensor([2])},
            r"padding holds \[2\]: each row's count of pad tokens must be in 0..1",
        ),
    ],
)
def test_generate_refuses_impossible_counts(settings, message):
    model = build_model(ModelConfig(vocab_size=50, n_layer=1, n_head=2, d_model=16, block_size=16))
    with pytest.raises(ConfigError, match=message):
        model.generate(torch.tensor([[1, 2]]), **settings)
    assert model.generate(torch.tensor([[1, 2]]), 0).tolist() == [[1, 2]]
    assert model.generate(torch.tensor([[1, 2]]), torch.tensor(2), vocab_size=50).shape == (1, 4)


def test_build_model_and_train_name_the_config_they_take():
    """build_model({...}) and train("config.toml") raised AttributeError ('dict' object has no
    attribute 'arch', 'str' object has no attribute 'phases')."""
    from slmlab.config import RunConfig
    from slmlab.training import train

    for given in ({"n_layer": 2}, "configs/quickstart.toml", None):
        with pytest.raises(ConfigError, match=f"build_model takes a ModelConfig, got {type(given).__name__} "):
            build_model(given)
        with pytest.raises(
            ConfigError, match=f"expected a RunConfig \\(slmlab.config.load_config builds one\\), got {type(given).__name__}"
        ):
            train(given)
    with pytest.raises(ConfigError, match="got RunConfig: give its .model"):
        build_model(RunConfig())


@pytest.mark.parametrize("arch", ["decoder", "tape"])
def test_a_forward_refuses_ids_that_are_not_a_tensor(arch):
    """model([[1, 2]]) raised AttributeError: 'list' object has no attribute 'dim'."""
    model = build_model(ModelConfig(vocab_size=50, n_layer=1, n_head=2, d_model=16, block_size=16, arch=arch)).eval()
    with pytest.raises(ConfigError, match="idx is a list: give token ids as a torch tensor"):
        model([[1, 2]])
    with pytest.raises(ConfigError, match="targets is a list: give token ids as a torch tensor"):
        model(torch.tensor([[1, 2]]), [[2, 3]])


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"batch_size": 0}, "batch_size must be a whole number >= 1, got 0"),  # ValueError from range()
        ({"generators": [torch.Generator()]}, "1 generator for 2 prompts: give one per prompt"),  # IndexError
        ({"stop_token": 50}, r"stop_token = 50 is no id of this model"),
        ({"top_k": 1.5}, r"top_k must be a whole number >= 0"),
        ({"generators": 3}, r"generators must be a list, one per prompt, or None; got int"),  # TypeError from len()
        ({"generators": [None, 3]}, r"generators\[1\] must be a torch.Generator \(or None\), got int 3"),
        ({"until": "\n"}, r"until must be a function \(or None\), got str"),
        ({"progress": 1}, r"progress must be a label \(a string; '' = none\), got 1"),
    ],
)
def test_generate_many_refuses_impossible_settings(settings, message):
    model = build_model(ModelConfig(vocab_size=50, n_layer=1, n_head=2, d_model=16, block_size=16))
    with pytest.raises(ConfigError, match=message):
        model.generate_many([[1, 2], [3]], 3, **settings)


@pytest.mark.parametrize("arch", ["decoder", "tape"])
def test_targets_of_another_shape_are_refused_not_flattened_into_a_wrong_loss(arch):
    """(1, 4) tokens with (1, 5) targets returned a loss: the flattened rows met the wrong targets
    and the fifth was dropped. Same-shaped targets still give the loss the naive formula gives."""
    from slmlab.model.loss import linear_cross_entropy

    cfg = ModelConfig(vocab_size=50, n_layer=1, n_head=2, d_model=16, block_size=16, arch=arch)
    model = build_model(cfg).eval()
    idx = torch.randint(0, 50, (1, 4))
    for targets in (torch.zeros(1, 5, dtype=torch.long), torch.zeros(4, dtype=torch.long), torch.zeros(2, 2, dtype=torch.long)):
        with pytest.raises(ConfigError, match="give one target per input token"):
            model(idx, targets)
    targets = torch.randint(0, 50, (1, 4))
    logits, _ = model(idx)
    torch.testing.assert_close(model(idx, targets)[1], torch.nn.functional.cross_entropy(logits[0], targets[0]))
    with pytest.raises(ValueError, match="targets of shape \\(5,\\) for 4 rows"):
        linear_cross_entropy(torch.randn(4, 8), torch.randn(50, 8), torch.zeros(5, dtype=torch.long))


@pytest.mark.parametrize("arch", ["decoder", "tape"])
@pytest.mark.parametrize(
    "idx, targets, message",
    [
        ([[1, 50]], None, "idx holds token id 50, outside this model's vocabulary of 50"),  # IndexError
        ([[-1, 2]], None, "idx holds token id -1, outside"),  # IndexError
        ([[1, 2]], [[3, 50]], "targets holds token id 50, outside"),  # RuntimeError from gather
        ([1, 2], None, "give token ids as \\(batch, time\\)"),  # "not enough values to unpack"
        ([[1.0, 2.0]], None, "idx of dtype torch.float32: token ids are torch.long"),  # RuntimeError
        ([[1, 2]], [[1.0, 2.0]], "targets of dtype torch.float32: token ids are torch.long"),  # RuntimeError from gather
        (torch.zeros(2, 0, dtype=torch.long), None, "holds no tokens"),  # Tape: "stack expects a non-empty TensorList"
        (torch.zeros(0, 2, dtype=torch.long), torch.zeros(0, 2, dtype=torch.long), "holds no tokens"),  # "cannot reshape"
    ],
)
def test_a_forward_refuses_ids_it_cannot_read_with_one_line_saying_what_to_fix(arch, idx, targets, message):
    """Before, each of these failed inside PyTorch (the comment names how), or, for an empty row,
    differently by architecture. Ignored targets (negative) and int32 ids are still read."""
    model = build_model(ModelConfig(vocab_size=50, n_layer=1, n_head=2, d_model=16, block_size=16, arch=arch)).eval()
    as_tensor = lambda value: value if value is None or isinstance(value, torch.Tensor) else torch.tensor(value)
    with pytest.raises(ConfigError, match=message):
        model(as_tensor(idx), as_tensor(targets))
    logits, _ = model(torch.tensor([[1, 49]], dtype=torch.int32))
    _, loss = model(torch.tensor([[1, 49]]), torch.tensor([[-100, 3]]))
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits[0, 1:], torch.tensor([3])))


@pytest.mark.parametrize("temperature", [0, 1.0])
def test_weights_that_give_nan_logits_are_an_error_in_greedy_decoding_too(temperature, device):
    """Sampling refuses NaN probabilities; greedy decoding's argmax of NaN logits is a token all the
    same, so generate checks each step's logits (on the device, read once at the end: on CUDA a
    NaN reaching multinomial is a device-side assert that ends the process's CUDA context)."""
    model = tiny().to(device)
    with torch.no_grad():
        model.head.weight.fill_(float("nan"))
    with pytest.raises(CheckpointError, match="next-token probabilities are not finite"):
        model.generate(torch.zeros(2, 3, dtype=torch.long, device=device), 4, temperature=temperature)
