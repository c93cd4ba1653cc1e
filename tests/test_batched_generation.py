"""generate_many: prompts of different lengths continue in batches, left-padded where the model
decodes padding exactly, else grouped by length, and every continuation equals the one its prompt
gets alone (float64, greedy and sampled with per-row generators, per-row stop tokens)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from slmlab.config import ConfigError, ModelConfig
from slmlab.model import build_model
from slmlab.model.generation import left_padded
from slmlab.plugins import activate

GATED = str(Path(__file__).parents[1] / "examples" / "plugins" / "gated_attention.py")
SHAPE = {"n_layer": 2, "n_head": 2, "d_model": 32, "block_size": 40, "vocab_size": 50}
ARCHITECTURES = {  # name -> (model fields, decodes left-padded batches)
    "learned": ({}, True),
    "rope scaled": ({"pos": "rope", "rope_scale": 2.0, "norm": "rmsnorm", "mlp": "swiglu"}, True),
    "partial rope": ({"pos": "rope", "rope_fraction": 0.5}, True),
    "sinusoidal": ({"pos": "sinusoidal"}, True),
    "self area": ({"self_area": {"enabled": True, "self_dim": 8, "token_dependent": True, "surgery_safe": False}}, True),
    "gated plugin": ({"gated_attention": {"enabled": True}}, True),
    "smat s only": ({"smat": {"use_S": True}}, True),
    "smat full": ({"smat": {"use_S": True, "use_G": True, "mu_init": 3.0}}, True),  # mu = 0 would hide c
    "smat gate per head, seq norm": (
        {"smat": {"use_G": True, "gate_per_head": True, "centrality_norm": "seq", "mu_init": -4.0}},
        True,
    ),
    "block local": ({"pos": "rope", "attention": "block_local", "local_block": 4}, True),
    "block local, learned, global layer": ({"attention": "block_local", "local_block": 3, "global_every": 2}, True),
    "tape": ({"arch": "tape", "tape": {"n_critics": 2, "coda_layers": 1, "critic_layers": 1}}, True),
    "tape, block local, rope": (
        {"arch": "tape", "pos": "rope", "attention": "block_local", "local_block": 3, "tape": {"n_critics": 1, "coda_layers": 1}},
        True,
    ),
}
PROMPTS = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10, 11, 12], [13], [14, 15, 16, 17], [18, 19, 20], [21, 22, 23, 24, 25, 26]]


def model_for(name: str):
    fields, _ = ARCHITECTURES[name]
    if "gated_attention" in fields:
        activate([GATED])
    torch.manual_seed(0)
    return build_model(ModelConfig(**SHAPE, **fields)).double().eval()


def alone(model, prompt, n, **options):
    return model.generate(torch.tensor([prompt]), n, **options)[0, len(prompt) :].tolist()


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_batched_continuations_equal_each_prompt_alone(name):
    model = model_for(name)
    assert model.decodes_padded() == ARCHITECTURES[name][1]
    greedy = model.generate_many(PROMPTS, 12, temperature=0.0, batch_size=4)
    assert greedy == [alone(model, p, 12, temperature=0.0) for p in PROMPTS]
    generators = [torch.Generator().manual_seed(i) for i in range(len(PROMPTS))]
    sampled = model.generate_many(PROMPTS, 10, top_k=20, generators=generators, batch_size=8)
    expected = [alone(model, p, 10, top_k=20, generator=torch.Generator().manual_seed(i)) for i, p in enumerate(PROMPTS)]
    assert sampled == expected


@pytest.mark.parametrize("name", ["learned", "tape"])
def test_generate_refuses_padding_for_a_model_that_does_not_decode_it_exactly(name):
    """generate(padding=) on a model with a part that does not mask padding (here an attention
    pattern that does not declare `padding_safe`) would decode the padded rows with the padding in
    their context: refused in one line, and generate_many batches such prompts by length."""
    model = model_for(name)
    idx, padding = torch.tensor([[0, 0, 1, 2], [3, 4, 5, 6]]), torch.tensor([2, 0])
    assert model.generate(idx, 3, padding=padding).shape == (2, 7)
    attention = next(m for m in model.modules() if hasattr(m, "pattern"))
    attention.pattern.padding_safe = False  # this layer's pattern alone: the model no longer decodes padding
    assert not model.decodes_padded()
    with pytest.raises(ConfigError, match=r"does not decode left-padded batches exactly \(decodes_padded\(\) is False\)"):
        model.generate(idx, 3, padding=padding)
    assert model.generate_many(PROMPTS, 5, temperature=0.0) == [alone(model, p, 5, temperature=0.0) for p in PROMPTS]


@pytest.mark.parametrize("name", [name for name, (_, padded) in ARCHITECTURES.items() if padded])
def test_padding_never_leaks_into_a_row(name):
    """A padded row's logits are its prompt's alone to float64 rounding, over the prompt and a
    cached step after it, whatever ids the padding holds (greedy tokens alone would miss a
    leak too small to flip them: SMAT's centrality once counted the padding)."""
    model = model_for(name)
    idx = torch.tensor([[0, 0, 0, 5, 6, 7], [1, 2, 3, 4, 5, 6]])
    other = idx.clone()
    other[0, :3] = torch.tensor([40, 41, 42])
    outs = []
    for tokens in (idx, other):
        caches = model.make_caches()
        for cache in caches:
            cache.padding = torch.tensor([3, 0])
        with torch.no_grad():
            prompt = model(tokens, caches=caches)[0][0, 3:]
            step = model(torch.tensor([[9], [9]]), caches=caches)[0][0]
        outs.append(torch.cat([prompt, step]))
    assert torch.equal(outs[0], outs[1]) and torch.isfinite(outs[0]).all()
    with torch.no_grad():
        alone_logits = model(torch.tensor([[5, 6, 7, 9]]))[0][0]
    torch.testing.assert_close(outs[0], alone_logits, rtol=0, atol=1e-12)


def test_block_local_rows_count_their_blocks_from_their_first_token():
    """Block-local attention decodes a left-padded batch row by row: each row's blocks start at its
    own first token, through a prefill longer than the windowed cache holds (23 tokens against 2 x
    2B = 12) and steps that roll the window, logits equal to each prompt's alone (float64)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(**SHAPE, attention="block_local", local_block=3, pos="rope")).double().eval()
    with torch.no_grad():
        for parameter in model.parameters():  # off the init, so every block's attention matters
            parameter.add_(torch.randn_like(parameter) * 0.3)
    prompts, steps = [[7, 8], list(range(1, 10)), list(range(20, 43))], torch.arange(11, 21)
    idx, padding = left_padded(prompts)
    caches = model.make_caches()
    for cache in caches:
        cache.padding = padding
    with torch.no_grad():
        together = [model(idx, caches=caches)[0]] + [model(torch.full((3, 1), int(step)), caches=caches)[0] for step in steps]
        together = torch.cat(together, dim=1)
        for row, prompt in enumerate(prompts):
            alone_logits = model(torch.tensor([prompt + steps.tolist()]))[0][0]
            torch.testing.assert_close(together[row, int(padding[row]) :], alone_logits, rtol=0, atol=1e-12)


def test_each_row_stops_at_its_own_stop_token_and_long_prompts_fall_back_to_equal_lengths():
    model = model_for("learned")
    free = model.generate_many(PROMPTS, 12, temperature=0.0)
    stop = free[1][3]  # a token row 1 produces at its 4th step
    stopped = model.generate_many(PROMPTS, 12, temperature=0.0, stop_token=stop)
    for row, full in zip(stopped, free):
        cut = full.index(stop) + 1 if stop in full else len(full)
        assert row == full[:cut]
    # the longest prompt + new tokens past the context: sliding windows, equal to each alone
    long = [list(range(1, 31)), list(range(2, 20)), [3, 4]]
    assert model.generate_many(long, 30, temperature=0.0) == [alone(model, p, 30, temperature=0.0) for p in long]
    with pytest.raises(ConfigError, match="a prompt of 0 tokens"):
        model.generate_many([[1], []], 3)


def test_a_prompt_suite_batches_and_every_completion_equals_its_prompt_alone():
    from slmlab.data.tokenizers import ByteTokenizer
    from slmlab.evals.prompts import Prompt, run_suite

    torch.manual_seed(0)
    model = build_model(ModelConfig(**{**SHAPE, "vocab_size": 256, "block_size": 64})).double().eval()
    tokenizer = ByteTokenizer()
    suite = [
        Prompt("a", "The loop", max_tokens=9, temperature=0.8, seed=1),
        Prompt("b", "A longer prompt here", max_tokens=9, temperature=0.8, seed=2),
        Prompt("c", "x", max_tokens=9, temperature=0.8, seed=3, top_k=5),
        Prompt("d", "Greedy, please", max_tokens=5, temperature=0.0, seed=4),
        Prompt("e", "Same settings as a", max_tokens=9, temperature=0.8, seed=5),
    ]
    results = run_suite(model, tokenizer, suite, torch.device("cpu"), 64)
    for p, r in zip(suite, results):
        ids = tokenizer.encode(p.prompt)
        generator = torch.Generator().manual_seed(p.seed)
        out = model.generate(
            torch.tensor([ids]), p.max_tokens, temperature=p.temperature, top_k=p.top_k, top_p=p.top_p, generator=generator
        )
        assert r["id"] == p.id and r["completion"] == tokenizer.decode(out[0, len(ids) :].tolist())


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_inference_mode_gives_the_same_logits_and_continuations(name):
    """Under torch.inference_mode (tensors without version counters) every architecture runs and
    agrees with no_grad: forward, cached generation past the context, and a left-padded batch."""
    model = model_for(name)
    idx = torch.tensor([PROMPTS[1] * 3])
    with torch.no_grad():
        logits = model(idx)[0]
    prompt = torch.tensor([PROMPTS[1]])
    greedy = model.generate(prompt, 50, temperature=0.0)
    batch = model.generate_many(PROMPTS, 6, temperature=0.0)
    with torch.inference_mode():
        torch.testing.assert_close(model(idx)[0], logits, rtol=0, atol=0)
        assert torch.equal(model.generate(prompt, 50, temperature=0.0), greedy)
        assert model.generate_many(PROMPTS, 6, temperature=0.0) == batch


def test_ids_past_the_tokenizers_vocabulary_are_never_sampled():
    """An embedding padded past the tokenizer (model.vocab_size 50, a 7-token tokenizer): the
    padding's untrained rows are never sampled, at any temperature, batched or not."""
    model = model_for("learned")
    hot = {"temperature": 5.0, "generator": torch.Generator().manual_seed(0)}
    assert max(alone(model, [1, 2], 30, **hot)) >= 7  # the padding is reachable without the limit
    assert max(alone(model, [1, 2], 30, vocab_size=7, **{**hot, "generator": torch.Generator().manual_seed(0)})) < 7
    rows = model.generate_many(PROMPTS, 20, temperature=5.0, top_p=0.99, vocab_size=7)
    assert max(max(row) for row in rows) < 7 and all(len(row) == 20 for row in rows)


def test_a_run_with_a_padded_vocabulary_samples_and_generates(micro_toml, tmp_path, capsys):
    from slmlab.cli import main

    argv = ["train", str(micro_toml), "--no-progress", "--name", "pad", "--model.vocab_size", "64"]
    assert main([*argv, "--train.sample_tokens", "60"]) == 0
    run = tmp_path / "runs" / "pad"
    capsys.readouterr()
    assert (
        main(["generate", str(run), "--prompt", "T", "--max-new-tokens", "80", "--temperature", "5", "--num-samples", "3"]) == 0
    )
    assert capsys.readouterr().out.strip()


def test_prompts_of_the_wrong_kind_are_refused_in_one_line():
    """generate([1, 2]) raised AttributeError ('list' object has no attribute 'dim'), and
    generate_many([1, 2]) TypeError ("object of type 'int' has no len()"); a (B, T) tensor of ids
    is a batch of prompts to generate_many."""
    model = model_for("learned")
    for prompt in ([1, 2, 3], "abc", None):
        with pytest.raises(ConfigError, match="the prompt must be a \\(batch, tokens\\) tensor of token ids, got a "):
            model.generate(prompt, 2)
    for prompts in ([1, 2, 3], "abc", [[1.5]], torch.tensor([1, 2])):
        with pytest.raises(ConfigError, match="prompts must be a list of prompts, each a list of token ids"):
            model.generate_many(prompts, 2)
    batch = torch.tensor([[1, 2, 3], [4, 5, 6]])
    assert model.generate_many(batch, 4, temperature=0.0) == model.generate_many(batch.tolist(), 4, temperature=0.0)


@pytest.mark.parametrize("rows_apart", [True, False], ids=["rows apart (CPU)", "one mask (GPU, compiled)"])
@pytest.mark.parametrize("Tq, before", [(9, 0), (1, 8), (3, 6), (1, 0)])
def test_full_attention_attends_a_left_padded_batch_as_each_row_alone(Tq, before, rows_apart, monkeypatch):
    """Full causal attention on a left-padded batch: a whole prefill (each row's tokens on their
    own, or under one padding mask: either route) and steps after kept keys (one padding mask)
    equal the naive per-row reference, block-local's with a block longer than any sequence;
    padding queries stay finite."""
    from slmlab.model import attention
    from slmlab.model.attention import FullCausal
    from tests.test_block_local import naive_padded_block_local

    monkeypatch.setattr(attention, "attends_rows_apart", lambda q: rows_apart)

    torch.manual_seed(Tq + before)
    q = torch.randn(4, 2, Tq, 8, dtype=torch.float64)
    k, v = torch.randn(2, 4, 2, Tq + before, 8, dtype=torch.float64)
    end = before + Tq
    padding = torch.tensor([0, min(2, end - 1), min(5, end - 1), end - 1])  # the last row: one real token
    fast = FullCausal(ModelConfig(), 0)(q, k, v, 1 / 8**0.5, before, padding=padding)
    naive = naive_padded_block_local(q, k, v, 10**6, before, padding)
    assert torch.isfinite(fast).all()
    for r, p in enumerate(padding.tolist()):
        real = slice(max(p - before, 0), None)
        torch.testing.assert_close(fast[r, :, real], naive[r, :, real], rtol=1e-10, atol=1e-12)


def test_a_streamed_sample_stopped_by_ctrl_c_ends_its_line(micro_toml, tmp_path, capsys, monkeypatch):
    """`slmlab: interrupted` used to start on the streamed line, after its last character."""
    from slmlab.cli import main
    from slmlab.evals import score

    assert main(["train", str(micro_toml), "--no-progress", "--name", "s"]) == 0
    real = score.generate_texts

    def interrupted(*args, write=None, **kwargs):
        def once(text):
            write(text)
            raise KeyboardInterrupt

        return real(*args, write=once, **kwargs)

    monkeypatch.setattr(score, "generate_texts", interrupted)
    capsys.readouterr()
    assert main(["generate", str(tmp_path / "runs" / "s"), "--prompt", "T", "--max-new-tokens", "50"]) == 130
    out, err = capsys.readouterr()
    assert out.startswith("T") and out.endswith("\n") and out.count("\n") == 1 and err == "slmlab: interrupted\n"
    monkeypatch.setattr(score, "generate_texts", real)
    assert main(["generate", str(tmp_path / "runs" / "s"), "--prompt", "T", "--max-new-tokens", "5", "--num-samples", "2"]) == 0
    assert capsys.readouterr().out.count("-" * 40) == 2
