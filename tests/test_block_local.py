"""Block-local attention equals attention under an explicit T x T block mask; its cache is a 2B window."""

from __future__ import annotations

import math

import pytest
import torch

from slmlab.config import ConfigError, ModelConfig, config_from_dict
from slmlab.model import block_local, build_model
from slmlab.model.block_local import BlockLocal, trains_as_full_warning


def naive_block_local(q, k, v, block):
    """softmax over an explicit (T, T) mask: key j visible to query i iff j <= i and j >= (i // B - 1) B."""
    T = q.shape[2]
    i = torch.arange(T, device=q.device)[:, None]
    j = torch.arange(T, device=q.device)[None, :]
    allowed = (j <= i) & (j >= (i // block - 1) * block)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    return scores.masked_fill(~allowed, float("-inf")).softmax(-1) @ v


@pytest.mark.parametrize("T, block", [(32, 8), (29, 8), (12, 8), (5, 8), (8, 8), (17, 4)])
def test_equals_naive_masked_attention_forward_and_backward(T, block, device):
    torch.manual_seed(T)
    pattern = BlockLocal(ModelConfig(local_block=block), layer=0)
    q, k, v = (torch.randn(2, 3, T, 8, dtype=torch.float64).to(device).requires_grad_() for _ in range(3))
    fast = pattern(q, k, v, 1 / math.sqrt(8), 0)
    naive = naive_block_local(q, k, v, block)
    torch.testing.assert_close(fast, naive, rtol=1e-10, atol=1e-12)
    w = torch.randn_like(fast)
    for a, b in zip(torch.autograd.grad((fast * w).sum(), (q, k, v)), torch.autograd.grad((naive * w).sum(), (q, k, v))):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def naive_padded_block_local(q, k, v, block, q_start, padding):
    """Row by row, query by query: the query at cache position i of a row with p padding entries
    sees the key at position j (the keys are the last Tk positions up to the last query) iff j >= p
    and, counted from the row's first token, j - p <= i - p and j - p >= ((i - p) // B - 1) B."""
    Bsz, H, Tq, D = q.shape
    Tk = k.shape[2]
    out = torch.zeros(Bsz, H, Tq, v.shape[-1], dtype=q.dtype, device=q.device)
    for r in range(Bsz):
        p = int(padding[r])
        for t in range(Tq):
            i = q_start + t
            if i < p:
                continue  # a padding query: unread
            first = q_start + Tq - Tk  # the first key's position
            keys = [j - first for j in range(first, first + Tk) if j >= p and ((i - p) // block - 1) * block <= j - p <= i - p]
            scores = (q[r, :, t : t + 1] @ k[r, :, keys].transpose(-1, -2)) / math.sqrt(D)
            out[r, :, t] = (scores.softmax(-1) @ v[r, :, keys])[:, 0]
    return out


@pytest.mark.parametrize(
    "Tq, before, q_start, block",
    [
        (1, 8, 9, 4),
        (4, 4, 4, 4),
        (3, 0, 0, 4),
        (5, 0, 0, 4),
        (23, 0, 0, 3),
        (30, 0, 0, 4),
        (30, 8, 14, 4),
        (17, 3, 3, 4),
        (40, 16, 40, 8),
        (6, 1, 9, 4),
    ],
)
@pytest.mark.parametrize("rows_apart", [True, False], ids=["rows apart (CPU)", "rotated batch (GPU, compiled)"])
def test_a_left_padded_batch_attends_each_row_from_its_first_token(Tq, before, q_start, block, rows_apart, monkeypatch, device):
    """Whole padded prefills (each row attended on its own, or the batch rotated: either route),
    decoding steps (Tq <= B after kept keys: one mask) and long chunks after kept keys (Tq > B:
    3B-key windows; even with fewer kept keys than a query could see) equal the naive per-row
    reference; padding queries stay finite."""
    monkeypatch.setattr(block_local, "attends_rows_apart", lambda q: rows_apart)
    torch.manual_seed(Tq + before)
    pattern = BlockLocal(ModelConfig(local_block=block), layer=0)
    q = torch.randn(4, 2, Tq, 8, dtype=torch.float64).to(device)
    k, v = torch.randn(2, 4, 2, Tq + before, 8, dtype=torch.float64).to(device)
    end = q_start + Tq
    padding = torch.tensor([0, min(2, end - 1), min(block + 1, end - 1), end - 1], device=device)  # the last row: one real token
    fast = pattern(q, k, v, 1 / math.sqrt(8), q_start, padding=padding)
    naive = naive_padded_block_local(q, k, v, block, q_start, padding)
    assert fast.shape == naive.shape and torch.isfinite(fast).all()
    for r, p in enumerate(padding.tolist()):
        real = slice(max(p - q_start, 0), None)
        torch.testing.assert_close(fast[r, :, real], naive[r, :, real], rtol=1e-10, atol=1e-12)


def test_a_single_block_is_full_causal_attention():
    q, k, v = torch.randn(3, 1, 2, 6, 8, dtype=torch.float64)
    full = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(BlockLocal(ModelConfig(local_block=8), 0)(q, k, v, 1 / math.sqrt(8), 0), full)


@pytest.mark.parametrize("T", [8, 7, 5, 1])
def test_within_two_blocks_it_is_full_attention_which_training_is_warned_of(T):
    """Windows of at most 2B tokens see every earlier token: such a block-local model trains as
    full attention (the warning's claim), and one token more makes it local."""
    q, k, v = torch.randn(3, 1, 2, T + 1, 8, dtype=torch.float64)
    pattern = BlockLocal(ModelConfig(local_block=4), 0)
    full = torch.nn.functional.scaled_dot_product_attention(q[..., :T, :], k[..., :T, :], v[..., :T, :], is_causal=True)
    torch.testing.assert_close(pattern(q[..., :T, :], k[..., :T, :], v[..., :T, :], 1 / math.sqrt(8), 0), full)
    if T == 8:  # the 9th token is in block 2 and no longer sees block 0
        longer = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        assert not torch.allclose(pattern(q, k, v, 1 / math.sqrt(8), 0)[..., -1, :], longer[..., -1, :])

    def warning(seq_len, **fields):
        return trains_as_full_warning(ModelConfig(n_layer=2, block_size=64, local_block=4, **fields), seq_len)

    assert "trains exactly as full attention" in warning(8, attention="block_local")
    assert warning(9, attention="block_local") is None
    assert warning(8) is None  # full attention: nothing to say
    assert warning(8, attention="block_local", global_every=1) is None  # every layer full
    assert "data.seq_len = 8 tokens spans at most two blocks" in warning(8, attention_layers=["full", "block_local"])


def model(**fields):
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=30, n_layer=3, n_head=2, d_model=16, block_size=64, pos="rope", local_block=4, **fields)
    return build_model(cfg).double().eval()


def test_cached_generation_keeps_a_2b_window_and_matches_recomputation(device):
    m = model(attention="block_local", global_every=3).to(device)
    assert [type(b.attn.pattern).__name__ for b in m.blocks] == ["BlockLocal", "BlockLocal", "FullCausal"]
    idx = torch.randint(0, 30, (2, 40)).to(device)
    full, _ = m(idx)
    caches = m.make_caches()
    parts = [m(idx[:, :7], caches=caches)[0]]
    buffer = caches[0].k.data_ptr()
    for t in range(7, 33):
        parts.append(m(idx[:, t : t + 1], caches=caches)[0])
        assert caches[0].kept <= 8  # only the last 2B positions are kept
        assert caches[0].k.data_ptr() == buffer  # in the one preallocated buffer
    parts.append(m(idx[:, 33:], caches=caches)[0])
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=1e-10, atol=1e-10)
    assert caches[0].length == 40 and caches[2].k.shape[2] == 64


def test_block_local_model_is_causal_and_local(device):
    m = model(attention_layers=["block_local"] * 3).to(device)
    idx = torch.randint(0, 30, (1, 40)).to(device)
    base, _ = m(idx)
    changed = idx.clone()
    changed[:, 2] = (changed[:, 2] + 1) % 30
    out, _ = m(changed)
    assert torch.equal(out[:, :2], base[:, :2])
    # 3 layers, each reaching back at most 2B - 1 = 7 positions: token 2 cannot influence positions >= 2 + 3 * 8
    assert torch.equal(out[:, 26:], base[:, 26:]) and not torch.allclose(out[:, 2:8], base[:, 2:8])


def test_bad_pattern_configs():
    with pytest.raises(ConfigError, match="model.attention_layers has 1 entry for model.n_layer = 4"):
        config_from_dict({"model": {"attention_layers": ["full"]}})
    with pytest.raises(ConfigError, match="model.attention_layers\\[1\\] = 'sparse' is not one of full, block_local"):
        config_from_dict({"model": {"n_layer": 2, "attention_layers": ["full", "sparse"]}})


@pytest.mark.slow
def test_compiled_block_local_gradients_equal_eager():
    """torch.compile must not change the gradients of the unfold-window kernel (6 full blocks and a
    partial one): Inductor got them wrong when the windows were cut from a padded copy."""
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=50, n_layer=2, n_head=2, d_model=32, block_size=128, pos="rope", attention="block_local", local_block=16
    )
    m = build_model(cfg)
    idx = torch.randint(0, 50, (2, 100))

    def loss_and_grads(forward):
        m.zero_grad()
        _, loss = forward(idx, idx)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in m.parameters()]

    eager_loss, eager_grads = loss_and_grads(m)
    compiled_loss, compiled_grads = loss_and_grads(torch.compile(m))
    torch.testing.assert_close(compiled_loss, eager_loss, rtol=1e-5, atol=1e-5)
    for compiled, eager in zip(compiled_grads, eager_grads):
        torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)


def test_info_counts_the_flops_of_block_local_attention(micro_toml, capsys):
    """torch.utils.flop_counter's dispatch mode cannot wrap SDPA's lower-right causal bias: the
    written-out mask stands in (info ended in a RuntimeError for every block-local config)."""
    from slmlab.cli import main

    argv = ["info", str(micro_toml), "--model.pos", "rope", "--model.attention", "block_local", "--model.local_block", "8"]
    assert main(argv) == 0
    counted = [line for line in capsys.readouterr().out.splitlines() if "counted by torch.utils.flop_counter" in line]
    assert len(counted) == 1
    # the flex kernel cannot run on the meta device ("FlexAttention is only supported on CUDA, CPU, ..."
    # ended info in a traceback); its model is counted through the windows kernel
    assert main([*argv, "--model.local_kernel", "flex"]) == 0
    assert counted[0] in capsys.readouterr().out


def test_info_describes_each_phase_of_a_curriculum(capsys):
    """The long-context curriculum's phase B trains twice the context with block-local attention
    and RoPE scaled by 2: info showed only the base config, and its architecture line named
    neither the pattern nor the positions."""
    from pathlib import Path

    from slmlab.cli import main

    config = Path(__file__).parents[1] / "configs" / "longctx_curriculum.toml"
    assert main(["info", str(config), "--data.tokenizer", "byte"]) == 0  # byte: no tokenizer to train
    out = capsys.readouterr().out
    phases = out.split("phase ")[1:]
    assert [p.split(" ")[0] for p in phases] == ["A", "B", "C"] and "(400 steps)" in phases[0]
    assert "rope positions, full attention" in phases[0] and "(batch 16 x 256)" in phases[0]
    assert "rope positions (scale 2), block_local attention (block 128)" in phases[1] and "(batch 8 x 512)" in phases[1]
