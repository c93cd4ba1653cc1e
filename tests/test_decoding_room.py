"""A generation whose KV caches would outgrow the machine's memory is refused in one line once the
prompt is read, before any token is sampled (Linux lends a cache's memory page by page as tokens
fill it, and the out-of-memory killer ended such a run minutes in, with no message); one that fits
generates as before."""

from __future__ import annotations

import pytest
import torch

from slmlab.cli import main
from slmlab.config import ConfigError, ModelConfig
from slmlab.host_memory import host_memory_bytes
from slmlab.model import build_model, decoding_room

SHAPE = {"n_layer": 2, "n_head": 2, "d_model": 32, "block_size": 32, "vocab_size": 50}
ARCHITECTURES = {
    "decoder": {},
    "smat": {"smat": {"use_S": True, "use_G": True}},
    "block local": {"pos": "rope", "attention": "block_local", "local_block": 4},
    "tape": {"arch": "tape", "tape": {"n_critics": 2, "coda_layers": 1, "critic_layers": 1}},
}


@pytest.fixture
def machine(monkeypatch):
    """Set this machine's memory (RAM and swap) to a number of bytes."""

    def set_memory(size: int) -> None:
        monkeypatch.setattr(decoding_room, "host_memory_bytes", lambda: size)

    return set_memory


def model_for(fields: dict):
    torch.manual_seed(0)
    return build_model(ModelConfig(**SHAPE, **fields)).eval()


def test_the_count_is_the_filled_part_of_the_caches(machine):
    """Decoder: per sequence and position, each layer keeps a key and a value of d_model fp32
    values; 3 sequences of 4 + 12 tokens fill half of the 32-position caches."""
    model = model_for({})
    weights = sum(p.numel() * 4 for p in model.parameters()) + sum(b.numel() * b.element_size() for b in model.buffers())
    filled = 3 * 16 * SHAPE["n_layer"] * 2 * SHAPE["d_model"] * 4
    prompt = torch.randint(0, 50, (3, 4))
    machine(weights + filled - 1)
    with pytest.raises(ConfigError) as refused:
        model.generate(prompt, 12)
    message = str(refused.value)
    assert "\n" not in message and "decoding 3 sequences of up to 16 tokens" in message and "fewer sequences at once" in message
    machine(weights + filled)
    assert model.generate(prompt, 12).shape == (3, 16)


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_every_architecture_is_refused_before_a_token_is_sampled(arch, machine):
    model = model_for(ARCHITECTURES[arch])
    machine(1)
    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()
    with pytest.raises(ConfigError, match="caches"):
        model.generate(torch.randint(0, 50, (2, 5)), 8, generator=generator)
    assert torch.equal(generator.get_state(), state)
    with pytest.raises(ConfigError, match="caches"):
        model.generate_many([[1, 2], [3, 4, 5]], 4)
    assert model.generate(torch.randint(0, 50, (2, 5)), 3, use_cache=False).shape == (2, 8)  # no caches: nothing to count


def test_a_generation_that_fits_is_not_refused(machine):
    machine(host_memory_bytes())
    model = model_for({})
    assert model.generate(torch.randint(0, 50, (2, 5)), 40).shape == (2, 45)  # the cache rebuilt past the context


def test_the_cli_refuses_in_one_line(micro_toml, tmp_path, capsys, machine):
    assert main(["train", str(micro_toml), "--no-progress", "--name", "mine"]) == 0
    capsys.readouterr()
    machine(2**10)  # 1 KiB: less than the micro model's weights alone
    assert main(["generate", str(tmp_path / "runs" / "mine"), "--prompt", "to be", "--num-samples", "4"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "decoding 4 sequences" in err and "this machine has 1.0 KiB" in err
    assert err.endswith("(RAM and swap): generate fewer samples at once (--num-samples) or fewer tokens (--max-new-tokens)")
    suite = tmp_path / "suite.toml"  # the advice names the verb's own options: `prompts` has neither of those
    suite.write_text('[[prompt]]\nid = "a"\nprompt = "to be"\nmax_tokens = 4\n')
    assert main(["prompts", str(tmp_path / "runs" / "mine"), "--suite", str(suite)]) == 2
    assert capsys.readouterr().err.strip().endswith("(RAM and swap): give the suite's prompts a smaller max_tokens")


def test_a_batch_whose_first_forward_cannot_fit_is_refused_before_it(machine):
    """`generate --num-samples 1000000000`: the prompt's range was read by copying the expanded
    batch (24 GB), and its forward was ended by the out-of-memory killer before the caches could be
    counted. One prompt as 10**9 rows is refused in one line before any forward of the batch."""
    model = model_for({})
    machine(2**34)
    prompt = torch.tensor([[1, 2, 3]]).expand(10**9, -1)
    with pytest.raises(ConfigError) as refused:
        model.generate(prompt, 3)
    message = str(refused.value)
    assert "\n" not in message and message.startswith("decoding 1,000,000,000 sequences of 3 tokens needs at least")
    assert "their first forward" in message and "this machine has 16.0 GiB" in message


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_the_first_forwards_count_is_at_most_the_batchs(arch):
    """The bound extrapolated from one and two rows' forwards, f(2) + (rows - 2)(f(2) - f(1)), never
    passes what the batch's own forward holds: it refuses only what cannot fit."""
    model = model_for(ARCHITECTURES[arch])
    idx = torch.randint(0, 50, (8, 12))

    def peak(rows: int) -> int:
        with torch.no_grad():
            return decoding_room._peak_bytes(model, lambda: model._first_rows(idx, rows, None, 12))

    one, two, eight = peak(1), peak(2), peak(8)
    assert 0 < two + 6 * (two - one) <= eight
