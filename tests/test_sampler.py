"""Samplers and logits processors on five-element distributions, with exact expected outputs."""

import math

import pytest
import torch

from lucidlm import make_logits_processors, make_sampler
from lucidlm.errors import LucidError
from lucidlm.generation.sampler import apply_temperature, min_p_filter, top_k_filter, top_p_filter

PROBS = torch.tensor([0.4, 0.3, 0.15, 0.1, 0.05], dtype=torch.float64)
LOGITS = PROBS.log()[None]  # (1, 5)


def kept(logits):
    return torch.isfinite(logits[0]).tolist()


def test_greedy_is_the_argmax_without_randomness():
    sampler = make_sampler(temp=0)
    assert sampler(LOGITS).tolist() == [0]
    assert sampler(torch.tensor([[0.0, 5.0, 1.0]])).tolist() == [1]


def test_temperature_sharpens_and_flattens():
    hot = apply_temperature(LOGITS, 2.0).softmax(-1)[0]
    expected = PROBS.sqrt() / PROBS.sqrt().sum()
    torch.testing.assert_close(hot, expected)
    cold = apply_temperature(LOGITS, 0.5).softmax(-1)[0]
    torch.testing.assert_close(cold, PROBS ** 2 / (PROBS ** 2).sum())


def test_top_k():
    assert kept(top_k_filter(LOGITS, 2)) == [True, True, False, False, False]
    torch.testing.assert_close(top_k_filter(LOGITS, 2).softmax(-1)[0],
                               torch.tensor([4 / 7, 3 / 7, 0, 0, 0], dtype=torch.float64))
    assert kept(top_k_filter(LOGITS, 0)) == [True] * 5


def test_top_p():
    assert kept(top_p_filter(LOGITS, 0.5)) == [True, True, False, False, False]  # 0.4 < 0.5, 0.7 >= 0.5
    assert kept(top_p_filter(LOGITS, 0.75)) == [True, True, True, False, False]
    assert kept(top_p_filter(LOGITS, 0.1)) == [True, False, False, False, False]  # the top token always stays
    assert kept(top_p_filter(LOGITS, 1.0)) == [True] * 5
    shuffled = LOGITS[:, [3, 0, 4, 2, 1]]  # order must not matter
    assert kept(top_p_filter(shuffled, 0.75)) == [False, True, False, True, True]


def test_min_p():
    assert kept(min_p_filter(LOGITS, 0.3)) == [True, True, True, False, False]  # threshold 0.12
    torch.testing.assert_close(min_p_filter(LOGITS, 0.3).softmax(-1)[0],
                               torch.tensor([0.4, 0.3, 0.15, 0, 0], dtype=torch.float64) / 0.85)
    assert kept(min_p_filter(LOGITS, 0.0)) == [True] * 5


def test_the_chain_samples_only_from_what_survives():
    sampler = make_sampler(temp=1.0, top_k=3, top_p=0.5)
    generator = torch.Generator().manual_seed(0)
    draws = {int(sampler(LOGITS, generator)) for _ in range(200)}
    assert draws == {0, 1}


def test_sampling_frequencies_follow_the_distribution():
    sampler = make_sampler(temp=1.0)
    generator = torch.Generator().manual_seed(1)
    counts = torch.bincount(torch.cat([sampler(LOGITS.expand(1000, 5), generator) for _ in range(10)]), minlength=5)
    assert torch.allclose(counts / counts.sum(), PROBS.float(), atol=0.02)


def test_a_seed_reproduces_exactly():
    sampler = make_sampler(temp=0.8, top_p=0.9)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert [int(sampler(LOGITS, g1)) for _ in range(50)] == [int(sampler(LOGITS, g2)) for _ in range(50)]


@pytest.mark.parametrize("kwargs, message", [
    (dict(temp=-0.1), "temperature"), (dict(top_p=0.0), "top-p"), (dict(top_p=1.5), "top-p"),
    (dict(min_p=2.0), "min-p"), (dict(top_k=-1), "top-k"),
])
def test_bad_settings_are_clear_errors(kwargs, message):
    with pytest.raises(LucidError, match=message):
        make_sampler(**kwargs)


def test_repetition_penalty():
    (process,) = make_logits_processors(repetition_penalty=2.0)
    logits = torch.tensor([2.0, -1.0, 0.5, 3.0, -2.0])
    assert process([0, 1, 0], logits).tolist() == [1.0, -2.0, 0.5, 3.0, -2.0]


def test_presence_and_frequency_penalties():
    (process,) = make_logits_processors(presence_penalty=0.5, frequency_penalty=0.25)
    logits = torch.zeros(5)
    assert process([0, 0, 2], logits).tolist() == [-1.0, 0.0, -0.75, 0.0, 0.0]


def test_penalties_only_look_at_the_window():
    (process,) = make_logits_processors(repetition_penalty=2.0, window=2)
    assert process([0, 1, 2], torch.full((5,), 4.0)).tolist() == [4.0, 2.0, 2.0, 4.0, 4.0]


def test_logit_bias_and_order():
    processors = make_logits_processors(logit_bias={4: 10.0, 0: -math.inf}, repetition_penalty=1.0)
    assert len(processors) == 1  # a penalty of 1 is off
    out = processors[0]([], torch.zeros(5))
    assert out.tolist() == [-math.inf, 0.0, 0.0, 0.0, 10.0]
