"""Decoding through torch.compile (`generate(..., compile=True)`, or any backend): every
architecture's compiled continuations equal its eager ones, and its graphs are made a bounded
number of times, never once per token (the cache length turns symbolic after the first step)."""

from __future__ import annotations

import pytest
import torch

import slmlab.model.generation as generation
from slmlab.analysis.decoding_checks import CountingBackend
from slmlab.config import ConfigError
from tests.test_batched_generation import ARCHITECTURES, PROMPTS, model_for

pytestmark = pytest.mark.slow  # every test here compiles


@pytest.fixture
def counting():
    torch._dynamo.reset()
    yield CountingBackend()
    torch._dynamo.reset()


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_compiled_decoding_equals_eager_and_compiles_per_generation_not_per_token(name, counting):
    model = model_for(name)
    prompt = torch.tensor([PROMPTS[1]])
    # 60 new tokens pass the context (40): the cache is rebuilt from a window, a second prefill shape
    assert torch.equal(model.generate(prompt, 60, temperature=0.0, compile=counting), model.generate(prompt, 60, temperature=0.0))
    graphs = counting.graphs
    longer = model.generate(prompt, 100, temperature=0.0, compile=counting)
    assert counting.graphs == graphs, "a longer generation compiled again"
    assert torch.equal(longer, model.generate(prompt, 100, temperature=0.0))
    # a prompt runs eagerly, so prompts of other lengths take the same graphs: compiled, each
    # length made its own, and each branch on it (block-local's blocks; Tape's recurrence unrolled)
    for length in range(1, 9):
        other = torch.arange(1, length + 1)[None]
        assert torch.equal(model.generate(other, 3, temperature=0.0, compile=counting), model.generate(other, 3, temperature=0.0))
    assert counting.graphs == graphs, "a prompt of another length compiled again"
    generators = [torch.Generator().manual_seed(i) for i in range(len(PROMPTS))]
    sampled = model.generate_many(PROMPTS, 8, top_k=20, generators=generators, compile=counting)
    generators = [torch.Generator().manual_seed(i) for i in range(len(PROMPTS))]
    assert sampled == model.generate_many(PROMPTS, 8, top_k=20, generators=generators)


def test_a_process_decoding_many_kinds_of_batch_keeps_compiling(counting):
    """Each kind of batch takes graphs of its own (one row, two, more; left-padded or not), three
    each for block-local (the first step, the later ones, the window move): at torch.compile's
    default limit of 8 graphs, a process decoding many batches (a prompt suite) went on eagerly,
    after a warning. generate makes room for DECODING_GRAPHS."""
    model = model_for("block local")
    for batch in (1, 2, 8):
        model.generate(torch.tensor([PROMPTS[1]] * batch), 30, temperature=0.0, compile=counting)
    model.generate_many(PROMPTS, 12, temperature=0.0, compile=counting)
    graphs = counting.graphs
    assert graphs >= 8
    three = model.generate_many(PROMPTS[:3], 12, temperature=0.0, compile=counting)
    assert counting.graphs > graphs, "a new kind of batch decoded eagerly: torch.compile's graph limit was reached"
    assert three == model.generate_many(PROMPTS[:3], 12, temperature=0.0)


def test_inductor_decoding_equals_eager():
    """The real backend (inductor's generated kernels), on the baseline: the same greedy tokens and
    logits equal to rounding."""
    torch._dynamo.reset()
    model = model_for("learned")
    prompt = torch.tensor([PROMPTS[1]])
    assert torch.equal(model.generate(prompt, 12, temperature=0.0, compile=True), model.generate(prompt, 12, temperature=0.0))
    caches, fast = model.make_caches(), generation.compiled(model)
    with torch.no_grad():
        fast(prompt, caches=caches)
        step = fast(torch.tensor([[7]]), caches=caches)[0]
        torch.testing.assert_close(step[0, -1], model(torch.tensor([PROMPTS[1] + [7]]))[0][0, -1], rtol=0, atol=1e-10)
    torch._dynamo.reset()


def test_inductor_decodes_block_local_batches_as_eager():
    """Inductor (torch 2.13) failed to lower SDPA with block-local attention's mask once the
    windowed cache had moved, for a left-padded batch and for two or more rows of one prompt
    (one row passed); the compiled steps now write the scores out."""
    torch._dynamo.reset()
    model = model_for("block local")
    assert model.generate_many(PROMPTS, 12, temperature=0.0, compile=True) == model.generate_many(PROMPTS, 12, temperature=0.0)
    rows = torch.tensor([PROMPTS[1]] * 2)
    assert torch.equal(model.generate(rows, 16, temperature=0.0, compile=True), model.generate(rows, 16, temperature=0.0))
    torch._dynamo.reset()


def test_a_compiler_that_cannot_run_is_a_one_line_error():
    torch._dynamo.reset()

    def failing(gm, inputs):
        raise RuntimeError("no C++ compiler found\nand a long story after it")

    model = model_for("learned")
    with pytest.raises(
        ConfigError,
        match=r"^torch.compile cannot compile the decoder here \(no C\+\+ compiler found\); decode without --compile$",
    ):
        model.generate(torch.tensor([PROMPTS[0]]), 4, compile=failing)
    torch._dynamo.reset()


def test_a_hook_on_the_model_is_honoured_by_compiled_decoding(counting, caplog):
    """Dynamo does not guard on module hooks: compiled decoding went on with the graph made before
    a hook was registered (the hook did nothing), or would keep a removed hook.
    With a hook on the model, decoding runs eagerly and says so; without, it compiles again."""
    model = model_for("learned")
    prompt = torch.tensor([PROMPTS[1]])
    plain = model.generate(prompt, 12, temperature=0.0, compile=counting)
    handle = model.blocks[-1].hook_resid_post.register_forward_hook(lambda module, args, out: -out)
    try:
        hooked = model.generate(prompt, 12, temperature=0.0)
        assert not torch.equal(hooked, plain)  # the hook changes what is decoded
        assert torch.equal(model.generate(prompt, 12, temperature=0.0, compile=counting), hooked)
        assert "hooks are registered on the model: decoding eagerly" in caplog.text
        rows = model.generate_many([PROMPTS[1], PROMPTS[2]], 12, temperature=0.0, compile=counting)
        assert torch.equal(torch.tensor(rows[0]), hooked[0, len(PROMPTS[1]) :])
    finally:
        handle.remove()
    caplog.clear()
    graphs = counting.graphs
    assert torch.equal(model.generate(prompt, 12, temperature=0.0, compile=counting), plain)  # not the hooked graph
    assert counting.graphs == graphs and not caplog.text
