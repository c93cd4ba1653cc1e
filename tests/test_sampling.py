"""Next-token sampling (sample_next): the filters, tiny temperatures and top_p, the distribution
against the naive softmax, each draw against torch.multinomial's for the same generator, and which
logit rows are unusable."""

from __future__ import annotations

import pytest
import torch

from slmlab.model.sampling import sample_next, unusable_rows


def test_sampling_filters():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    assert sample_next(logits, temperature=0).item() == 3
    draws = {sample_next(logits, top_k=2, generator=torch.Generator().manual_seed(s)).item() for s in range(50)}
    assert draws == {2, 3}
    probs = logits.softmax(-1)[0]  # 0.032, 0.087, 0.237, 0.644: top_p 0.7 keeps {3, 2}
    assert probs[3] < 0.7
    draws = {sample_next(logits, top_p=0.7, generator=torch.Generator().manual_seed(s)).item() for s in range(50)}
    assert draws == {2, 3}
    draws = {sample_next(logits, top_p=0.5, generator=torch.Generator().manual_seed(s)).item() for s in range(20)}
    assert draws == {3}


@pytest.mark.parametrize("temperature", [1e-45, 1e-30, 5e-324])
@pytest.mark.parametrize("top_k, top_p", [(0, 1.0), (2, 1.0), (0, 0.5)])
def test_a_tiny_temperature_samples_the_most_likely_token_rather_than_overflowing(temperature, top_k, top_p):
    """z / T overflows float32 for T below ~1e-38 (and float64 for T = 5e-324): the row turned NaN."""
    logits = torch.tensor([[0.0, 1.0, 2.5, 3.0], [4.0, -1.0, 0.5, 2.0]])
    draws = sample_next(logits, temperature, top_k, top_p, torch.Generator().manual_seed(0))
    assert draws.flatten().tolist() == [3, 0]


@pytest.mark.parametrize("top_p", [1e-300, 1e-45, 1e-9])
def test_a_tiny_top_p_keeps_the_most_likely_token(top_p):
    """top_p = 1e-300 rounds to 0 in float32, and the filter dropped every token (a NaN row)."""
    logits = torch.tensor([[0.0, 1.0, 2.5, 3.0], [4.0, -1.0, 0.5, 2.0]])
    assert sample_next(logits, 1.0, 0, top_p, torch.Generator().manual_seed(0)).flatten().tolist() == [3, 0]


def test_temperature_sampling_matches_the_naive_softmax_distribution():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    generator = torch.Generator().manual_seed(0)
    counts = torch.bincount(
        torch.cat([sample_next(logits.expand(1000, 4), 0.7, generator=generator) for _ in range(20)]).flatten(), minlength=4
    )
    expected = torch.exp(logits[0] / 0.7) / torch.exp(logits[0] / 0.7).sum()
    assert torch.allclose(counts / counts.sum(), expected, atol=0.015)


def test_a_token_ruled_out_by_an_infinite_logit_is_no_damage():
    logits = torch.tensor([[0.0, float("-inf"), 1.0], [float("nan"), 0.0, 0.0], [float("-inf")] * 3, [0.0, float("inf"), 0]])
    assert unusable_rows(logits).tolist() == [False, True, True, True]


def _naive_distribution(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """(B, V) probabilities in float64, written out: softmax(z / T); top_k keeps the k largest
    logits (all of them when there are fewer); top_p keeps the most likely tokens in order up to the first whose running sum reaches
    top_p; the rest renormalised."""
    probs = torch.softmax(logits.double() / temperature, dim=-1)
    for row, z in zip(probs, logits):
        if top_k:
            row[z < torch.sort(z, descending=True).values[min(top_k, len(z)) - 1]] = 0.0
        if top_p < 1.0:
            total = 0.0
            for token in torch.argsort(row, descending=True).tolist():
                if total >= top_p * float(row.sum()):
                    row[token] = 0.0
                total += float(row[token])
    return probs / probs.sum(dim=-1, keepdim=True)


@pytest.mark.parametrize("vocab", [2, 61, 50257])
@pytest.mark.parametrize("top_k, top_p", [(0, 1.0), (5, 1.0), (0, 0.8)])
def test_each_draw_is_torch_multinomials_from_the_same_generator(vocab, top_k, top_p):
    """sample_next draws as torch.multinomial(p, 1) does, without its checks of the row (host
    syncs on CUDA): the same ids from the same seed, on the naive distribution."""
    logits = 3 * torch.randn(3, vocab, generator=torch.Generator().manual_seed(vocab))
    probs = _naive_distribution(logits, 0.8, top_k, top_p).float()
    for seed in range(20):
        ours = sample_next(logits, 0.8, top_k, top_p, torch.Generator().manual_seed(seed))
        assert torch.equal(ours, torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(seed)))


def test_a_filter_of_none_is_off_as_nanogpt_and_hugging_face_spell_it():
    """nanoGPT's generate(idx, n, top_k=None) and Hugging Face's top_p=None mean no filter; they
    were refused ('top_k must be a whole number >= 0, got None')."""
    from slmlab.config import ModelConfig
    from slmlab.model import build_model

    model = build_model(ModelConfig(n_layer=1, n_head=2, d_model=16, vocab_size=11, block_size=16)).eval()
    ids = torch.tensor([[1, 2, 3]])
    drawn = [
        model.generate(ids, 6, generator=torch.Generator().manual_seed(4), **off) for off in ({}, {"top_k": None, "top_p": None})
    ]
    assert torch.equal(drawn[0], drawn[1])
    rows = model.generate_many([[1, 2], [3]], 4, top_k=None, top_p=None, generators=[torch.Generator().manual_seed(0)] * 2)
    assert [len(row) for row in rows] == [4, 4]
    logits = torch.randn(3, 11)
    for seed in range(5):
        plain = sample_next(logits, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(sample_next(logits, top_k=None, top_p=None, generator=torch.Generator().manual_seed(seed)), plain)
