"""Probes: the recorded attention weights are the plain path's, they reproduce the fused kernel's
output, they work one token at a time under the KV cache, and only the chosen layers pay."""

import pytest
import torch

import lucidlm
from lucidlm import KVCache
from lucidlm.errors import LucidError
from lucidlm.model import attention

from test_model import VARIANTS, tiny

pytestmark = pytest.mark.usefixtures("inference_only")


@pytest.fixture(params=sorted(VARIANTS))
def model(request):
    return tiny(**VARIANTS[request.param])


def padded_ids():
    torch.manual_seed(3)
    ids = torch.randint(0, 50, (2, 9))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    return ids, mask


def plain_path_weights(model, ids, mask, monkeypatch) -> list[torch.Tensor]:
    """Each layer's weights as the plain softmax path computes them for its own output."""
    seen = []
    real = attention.plain_attention
    monkeypatch.setattr(attention, "plain_attention", lambda *a, **k: seen.append(real(*a, **k)[1]) or real(*a, **k))
    model.set_fused_attention(False)
    try:
        model(ids, attention_mask=mask)
    finally:
        model.set_fused_attention(True)
        monkeypatch.setattr(attention, "plain_attention", real)
    return seen


def test_probed_weights_equal_the_plain_paths(model, monkeypatch):
    ids, mask = padded_ids()
    with lucidlm.probe(model, attention="all") as p:
        model(ids, attention_mask=mask)
    expected = plain_path_weights(model, ids, mask, monkeypatch)
    assert len(expected) == model.config.n_layers
    real = mask.bool()
    for layer, weights in enumerate(expected):
        got = p.attention[layer]
        assert got.shape == (2, model.config.n_heads, 9, 9)
        # rows of padding queries are garbage nobody reads; compare the real queries
        torch.testing.assert_close(got.transpose(1, 2)[real], weights.transpose(1, 2)[real], atol=1e-6, rtol=1e-5)


def test_probed_weights_times_values_reproduce_the_fused_output(model):
    ids, mask = padded_ids()
    config = model.config
    fused_inputs = {}  # layer -> what the fused kernel handed the output projection, (B, T, H * D)
    hooks = [block.attn.out.register_forward_pre_hook(lambda m, args, i=i: fused_inputs.__setitem__(i, args[0]))
             for i, block in enumerate(model.blocks)]
    try:
        with lucidlm.probe(model, attention="all", qkv="all") as p:
            model(ids, attention_mask=mask)
    finally:
        for hook in hooks:
            hook.remove()
    groups = config.n_heads // config.n_kv_heads
    real = mask.bool()
    for layer in range(config.n_layers):
        v = p.v[layer].repeat_interleave(groups, dim=1)  # (B, H, S, D)
        y = (p.attention[layer] @ v).transpose(1, 2).reshape(2, 9, -1)  # (B, T, H * D)
        torch.testing.assert_close(y[real], fused_inputs[layer][real], atol=1e-5, rtol=1e-5)


def test_masked_cells_are_exactly_zero():
    model = tiny(sliding_window=3)
    ids, mask = padded_ids()
    with lucidlm.probe(model, attention=[0]) as p:
        model(ids, attention_mask=mask)
    weights = p.attention[0]
    distance = torch.arange(9)[:, None] - torch.arange(9)[None, :]
    assert torch.all(weights[0][:, (distance < 0) | (distance >= 3)] == 0)  # the future and beyond the window
    assert torch.all(weights[1, :, 3:, :3] == 0)  # padding keys, for every real query of the padded row
    torch.testing.assert_close(weights[0].sum(-1), torch.ones(model.config.n_heads, 9))


def test_one_token_at_a_time_under_the_kv_cache_records_the_rows_of_the_full_forward():
    model = tiny()
    ids = torch.randint(0, 50, (1, 10))
    with lucidlm.probe(model, attention=[1]) as full:
        model(ids)
    cache = KVCache(model.config, capacity=4)
    with lucidlm.probe(model, attention=[1], hidden=True) as steps:
        model(ids[:, :6], cache=cache)
        for t in range(6, 10):
            model(ids[:, t:t + 1], cache=cache)
    assert len(steps.records) == 5
    for n, t in enumerate(range(6, 10), start=1):
        weights = steps.records[n].attention[1]
        assert weights.shape == (1, model.config.n_heads, 1, t + 1)
        torch.testing.assert_close(weights[0, :, 0], full.attention[1][0, :, t, :t + 1], atol=1e-6, rtol=1e-5)
        assert steps.records[n].hidden[0].shape == (1, 1, model.config.d_model)


def test_only_the_chosen_layers_record_and_the_model_is_left_as_it_was(monkeypatch):
    model = tiny(n_layers=3)
    calls = []
    monkeypatch.setattr(attention, "plain_attention", lambda *a, **k: calls.append(1))
    before = model(torch.tensor([[1, 2, 3]]))
    with lucidlm.probe(model, attention=[1]) as p:
        during = model(torch.tensor([[1, 2, 3]]))
    assert set(p.attention) == {1} and p.hidden == [] and p.q == {}
    assert calls == []  # every layer kept the fused kernel for its output
    torch.testing.assert_close(during, before)
    assert all(block.attn.recorders == [] for block in model.blocks)
    model(torch.tensor([[1, 2, 3]]))
    assert len(p.records) == 1  # nothing records after the block


@pytest.mark.parametrize("kwargs", [dict(attention=[2]), dict(attention=[-1]), dict(qkv=["0"])])
def test_a_layer_out_of_range_is_a_clear_error(kwargs):
    model = tiny()
    with pytest.raises(LucidError, match="out of range"):
        with lucidlm.probe(model, **kwargs):
            pass
    assert all(block.attn.recorders == [] for block in model.blocks)


def test_a_probe_that_saw_no_forward_says_so():
    with lucidlm.probe(tiny(), attention=[0]) as p:
        pass
    with pytest.raises(LucidError, match="recorded nothing"):
        p.attention


def test_probes_may_overlap_and_return_attentions_works_inside_one():
    model = tiny()
    ids = torch.randint(0, 50, (1, 6))
    calls = []
    hook = model.register_forward_hook(lambda *args: calls.append(1))
    with lucidlm.probe(model, attention=[0], hidden=True) as outer:
        with lucidlm.probe(model, attention=[0, 1]) as inner:
            _, attentions = model(ids, return_attentions=True)
    hook.remove()
    assert calls == [1]  # the wrapper does not run the model twice
    torch.testing.assert_close(outer.attention[0], inner.attention[0])
    torch.testing.assert_close(attentions[1], inner.attention[1])
    assert len(outer.hidden) == 3 and set(outer.attention) == {0}
    assert all(block.attn.recorders == [] for block in model.blocks)


def test_last_query_records_only_the_last_row():
    model = tiny(sliding_window=3)
    ids, mask = padded_ids()
    with lucidlm.probe(model, attention="all") as full:
        model(ids, attention_mask=mask)
    with lucidlm.probe(model, attention="all", last_query=True) as last:
        model(ids, attention_mask=mask)
    for layer, weights in full.attention.items():
        assert last.attention[layer].shape == (2, model.config.n_heads, 1, 9)
        torch.testing.assert_close(last.attention[layer], weights[:, :, -1:])
