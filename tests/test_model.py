"""Behaviour of the model a user would notice: causality, padding, caching, the two attention
paths, sliding windows, every position kind."""

import pytest
import torch

from lucidlm import Config, KVCache, SlidingKVCache, Transformer
from lucidlm.errors import LucidError
from lucidlm.model import attention_mask, plain_attention
from lucidlm.model.probe import probe
from lucidlm.model.shared_prefix import prefix_to_share, shared_prefix_length



pytestmark = pytest.mark.usefixtures("inference_only")

VARIANTS = {
    "llama-gqa": dict(),
    "mqa": dict(n_kv_heads=1),
    "gpt2-like": dict(norm="layernorm", norm_bias=True, activation="gelu_tanh", gated_mlp=False, qkv_bias=True,
                      bias=True, position="learned", tie_embeddings=True),
    "sinusoidal": dict(position="sinusoidal", norm="layernorm", gated_mlp=False, activation="gelu"),
    "relative": dict(position="relative", relative_max_distance=4),
    "post-norm": dict(norm_placement="post", norm="layernorm", final_norm=False),
    "sliding": dict(sliding_window=3),
    "mixed-sliding": dict(sliding_window=3, sliding_window_layers=(1,)),
    "rope-linear": dict(rope_scaling="linear", rope_scaling_factor=2.0),
    "rope-llama3": dict(rope_scaling="llama3", rope_scaling_factor=8.0, rope_original_context_length=16),
}


def tiny(**overrides) -> Transformer:
    torch.manual_seed(0)
    config = Config(**{**dict(vocab_size=50, context_length=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                              d_ff=48), **overrides})
    model = Transformer(config).eval()
    with torch.no_grad():
        for p in model.parameters():  # larger than the training init, so differences show
            p.normal_(0, 0.3)
    return model


@pytest.fixture(params=sorted(VARIANTS))
def model(request):
    return tiny(**VARIANTS[request.param])


def test_logits_shape(model):
    logits = model(torch.randint(0, 50, (3, 7)))
    assert logits.shape == (3, 7, 50) and logits.dtype == torch.float32


def test_changing_a_future_token_never_changes_earlier_logits(model):
    ids = torch.randint(0, 50, (1, 10))
    changed = ids.clone()
    changed[0, 6] = (changed[0, 6] + 1) % 50
    a, b = model(ids), model(changed)
    torch.testing.assert_close(a[:, :6], b[:, :6])
    assert not torch.allclose(a[:, 6:], b[:, 6:])


@pytest.mark.parametrize("side", ["left", "right"])
def test_a_padded_row_gives_the_same_logits_as_the_unpadded_one(model, side):
    ids = torch.randint(0, 50, (1, 6))
    pad = torch.zeros(1, 3, dtype=torch.long)
    padded = torch.cat([pad, ids], 1) if side == "left" else torch.cat([ids, pad], 1)
    mask = torch.ones_like(padded)
    if side == "left":
        mask[:, :3] = 0
    else:
        mask[:, 6:] = 0
    alone = model(ids)
    batched = model(padded, attention_mask=mask)
    real = batched[mask.bool()].view(1, 6, -1)
    torch.testing.assert_close(real, alone, atol=1e-5, rtol=1e-5)


def test_cached_decoding_equals_the_full_forward_token_by_token(model):
    ids = torch.randint(0, 50, (2, 12))
    full = model(ids)
    cache = KVCache(model.config, batch_size=2, capacity=4)  # small: it must grow on the way
    steps = [model(ids[:, :5], cache=cache)]
    for t in range(5, 12):
        steps.append(model(ids[:, t:t + 1], cache=cache))
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)
    assert cache.n_tokens == 12


def test_plain_and_fused_attention_paths_agree(model):
    ids = torch.randint(0, 50, (2, 9))
    mask = torch.ones_like(ids)
    mask[1, :2] = 0
    model.set_fused_attention(True)
    fused = model(ids, attention_mask=mask)
    model.set_fused_attention(False)
    plain = model(ids, attention_mask=mask)
    model.set_fused_attention(True)
    torch.testing.assert_close(fused[mask.bool()], plain[mask.bool()], atol=1e-5, rtol=1e-5)


def test_attention_weights_are_returned_per_layer_and_head(model):
    logits, attentions = model(torch.randint(0, 50, (2, 5)), return_attentions=True)
    assert len(attentions) == model.config.n_layers
    for weights in attentions:
        assert weights.shape == (2, model.config.n_heads, 5, 5)
        torch.testing.assert_close(weights.sum(-1), torch.ones(2, model.config.n_heads, 5))
        if model.config.causal:
            assert torch.all(weights.triu(1) == 0)


def test_sliding_window_layers_ignore_tokens_beyond_the_window():
    model = tiny(sliding_window=3)
    ids = torch.randint(0, 50, (1, 10))
    changed = ids.clone()
    changed[0, 0] = (changed[0, 0] + 1) % 50
    a, b = model(ids), model(changed)
    # Two layers of window 3 reach back at most 2 * (3 - 1) = 4 positions; position 9 cannot see 0.
    torch.testing.assert_close(a[:, 5:], b[:, 5:])
    assert not torch.allclose(a[:, :3], b[:, :3])
    _, attentions = model(ids, return_attentions=True)
    distance = torch.arange(10)[:, None] - torch.arange(10)[None, :]
    assert torch.all(attentions[0][0, :, distance >= 3] == 0)


def test_sliding_cache_forgets_old_tokens_and_still_matches_the_full_forward():
    model = tiny(sliding_window=4, context_length=64)
    ids = torch.randint(0, 50, (1, 40))
    full = model(ids)
    cache = SlidingKVCache(model.config, capacity=6)
    steps = [model(ids[:, :3], cache=cache)] + [model(ids[:, t:t + 1], cache=cache) for t in range(3, 40)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)
    assert cache.capacity <= 8 and cache.evicted > 0


def test_cache_truncate_rolls_back_a_turn():
    model = tiny()
    ids = torch.randint(0, 50, (1, 10))
    cache = KVCache(model.config)
    model(ids[:, :6], cache=cache)
    model(ids[:, 6:], cache=cache)
    cache.truncate(6)
    other = torch.randint(0, 50, (1, 4))
    rolled = model(other, cache=cache)
    fresh = model(torch.cat([ids[:, :6], other], 1))[:, 6:]
    torch.testing.assert_close(rolled, fresh, atol=1e-5, rtol=1e-5)


def test_cache_refuses_to_grow_past_the_context():
    model = tiny(context_length=8)
    cache = KVCache(model.config)
    model(torch.randint(0, 50, (1, 8)), cache=cache)
    with pytest.raises(Exception, match="context"):
        model(torch.randint(0, 50, (1, 1)), cache=cache)


def test_masks_combine_causal_padding_and_window_and_broadcast_over_heads():
    positions = torch.arange(4)[None].expand(2, 4)
    valid = torch.tensor([[True] * 4, [False, True, True, True]])
    mask = attention_mask(positions, positions, valid, causal=True, window=2)
    assert mask.shape == (2, 1, 4, 4)
    expected_row0 = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]], dtype=torch.bool)
    assert torch.equal(mask[0, 0], expected_row0)
    assert not mask[1, 0, 1, 0]  # padding key hidden
    bidirectional = attention_mask(positions, positions, None, causal=False, window=None)
    assert bidirectional.all()


def test_plain_attention_handles_grouped_heads():
    q = torch.randn(1, 4, 3, 8)
    k, v = torch.randn(1, 2, 3, 8), torch.randn(1, 2, 3, 8)
    y, weights = plain_attention(q, k, v, None, None, 8 ** -0.5)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1))
    torch.testing.assert_close(y, ref, atol=1e-6, rtol=1e-5)
    assert weights.shape == (1, 4, 3, 3)


def test_bidirectional_model_sees_the_future():
    model = tiny(causal=False)
    ids = torch.randint(0, 50, (1, 6))
    changed = ids.clone()
    changed[0, 5] = (changed[0, 5] + 1) % 50
    assert not torch.allclose(model(ids)[:, 0], model(changed)[:, 0])


def test_dropout_only_in_training():
    model = tiny(dropout=0.5, attention_dropout=0.5)
    ids = torch.randint(0, 50, (1, 6))
    torch.testing.assert_close(model(ids), model(ids))
    model.train()
    assert not torch.allclose(model(ids), model(ids))


def test_resize_token_embeddings_keeps_old_tokens():
    for tie in (True, False):
        model = tiny(tie_embeddings=tie)
        ids = torch.randint(0, 50, (1, 5))
        before = model(ids)
        model.resize_token_embeddings(53)
        after = model(ids)
        assert after.shape[-1] == 53 and model.config.vocab_size == 53
        torch.testing.assert_close(after[..., :50], before)
        model(torch.tensor([[52]]))  # a new token can be fed


def test_learned_positions_refuse_positions_beyond_the_context():
    model = tiny(position="learned", context_length=8)
    with pytest.raises(Exception, match="beyond the model's learned context"):
        model(torch.randint(0, 50, (1, 9)))


def test_the_residual_stream_is_row_major():
    # A column-major embedding output would make every later activation column-major too, and
    # every norm and matmul would copy it first.
    model = tiny()
    x = model.tok_emb(torch.randint(0, 50, (3, 7)))
    assert x.shape == (3, 7, 32) and x.is_contiguous()


def test_training_under_cpu_bfloat16_autocast_takes_the_plain_path_with_the_same_gradients(model, monkeypatch):
    """Under CPU bfloat16 autocast with gradients, attention goes the plain way (faster there); its
    gradients must match a float32 backward up to bfloat16 rounding, padding and all."""
    from lucidlm.model import attention

    ids = torch.randint(0, 50, (2, 9))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0

    def gradients(autocast: bool) -> torch.Tensor:
        model.zero_grad(set_to_none=True)
        with torch.enable_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            logits = model(ids, attention_mask=mask)
            logits[mask.bool()].float().logsumexp(-1).sum().backward()
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    exact = gradients(autocast=False)
    calls = []
    real_plain = attention.plain_attention
    monkeypatch.setattr(attention, "plain_attention", lambda *a, **k: calls.append(1) or real_plain(*a, **k))
    rounded = gradients(autocast=True)
    assert len(calls) == model.config.n_layers
    assert torch.isfinite(rounded).all()
    cosine = torch.nn.functional.cosine_similarity(exact, rounded, dim=0)
    assert cosine > 0.99, cosine


def rows_with_a_common_beginning(prefix: int, rows: int = 3, length: int = 11) -> torch.Tensor:
    """(rows, length) ids whose first `prefix` tokens are the same in every row, and the next differ."""
    ids = torch.randint(0, 50, (rows, length))
    ids[:, :prefix] = ids[0, :prefix]
    if prefix < length:
        ids[:, prefix] = torch.arange(rows)  # the rows part here
    return ids


def assert_sharing_changes_nothing(model, ids: torch.Tensor, prefix: int) -> None:
    """Logits, and every parameter's gradient of a loss on some positions (the prefix's among
    them), with the prefix computed once equal those of the plain forward, in both attention paths."""
    learn = torch.rand(ids.shape) < 0.5
    learn[:, 0] = True  # prefix positions too: their outputs are the same in every row
    for fused in (True, False):
        model.set_fused_attention(fused)
        results = []
        for shared in (0, prefix):
            model.zero_grad(set_to_none=True)
            with torch.enable_grad():
                logits = model(ids, shared_prefix=shared)
                model(ids, logits_for=learn, shared_prefix=shared).logsumexp(-1).sum().backward()
            results.append((logits, [p.grad for p in model.parameters()]))
        (plain, plain_grads), (packed, packed_grads) = results
        torch.testing.assert_close(packed, plain, atol=1e-5, rtol=1e-5)
        assert all(g is not None for g in plain_grads + packed_grads)
        for p_grad, s_grad in zip(plain_grads, packed_grads, strict=True):
            torch.testing.assert_close(s_grad, p_grad, atol=1e-4, rtol=1e-4)
    model.set_fused_attention(True)


@pytest.mark.parametrize("prefix", [1, 6])
def test_a_shared_prefix_computed_once_gives_the_plain_forward_and_its_gradients(model, prefix):
    """The batch packed around its common beginning (model/shared_prefix.py), every position kind."""
    ids = rows_with_a_common_beginning(prefix)
    if model.config.position == "relative":
        with pytest.raises(LucidError, match="relative position bias"):
            model(ids, shared_prefix=prefix)
        assert prefix_to_share(model, ids) == 0  # so training takes the plain forward
        return
    assert shared_prefix_length(ids) == prefix
    assert_sharing_changes_nothing(model, ids, prefix)


SHARING_VARIANTS = {
    # Gemma 2 and 3: capped attention (the plain path) and logits, sandwich norms, QK-norm, sliding
    # layers with their own rotary base
    "gemma": dict(attn_logit_softcap=5.0, final_logit_softcap=5.0, sandwich_norm=True, qk_norm=True,
                  sliding_window=3, sliding_window_layers=(0,), rope_local_base=100.0),
    # Phi-3: longrope (its long factors from position 8 on) on half of each head
    "phi3": dict(rope_scaling="longrope", rope_original_context_length=8, rope_dim=4,
                 rope_short_factors=(1.0, 2.0), rope_long_factors=(3.0, 5.0), rope_attention_factor=1.2),
}


@pytest.mark.parametrize("variant", sorted(SHARING_VARIANTS))
def test_a_shared_prefix_with_capping_qk_norm_local_rotary_and_longrope(variant):
    model = tiny(**SHARING_VARIANTS[variant])
    for prefix, ids in ((4, rows_with_a_common_beginning(4)),
                        (10, rows_with_a_common_beginning(10)),  # T - 1: each row keeps one token
                        (3, torch.tensor([[7, 8, 9, 1, 2, 3, 4, 0, 0, 0, 0],  # right padding, as SFT batches
                                          [7, 8, 9, 5, 6, 0, 0, 0, 0, 0, 0],
                                          [7, 8, 9, 2, 4, 6, 8, 1, 3, 5, 7]]))):
        assert shared_prefix_length(ids) == prefix
        assert_sharing_changes_nothing(model, ids, prefix)


def test_shared_prefix_length_what_is_worth_sharing_and_the_refusals():
    assert shared_prefix_length(rows_with_a_common_beginning(4)) == 4
    assert shared_prefix_length(torch.tensor([[1, 2, 3]])) == 0  # one row: nothing to share
    assert shared_prefix_length(torch.tensor([[1, 2, 3], [1, 2, 3]])) == 2  # each row keeps a token
    assert shared_prefix_length(torch.tensor([[1, 2], [2, 2]])) == 0
    model = tiny()
    # 1 token of 11 shared by 3 rows saves 2 of 33 (6%): not worth the masked attention
    assert prefix_to_share(model, rows_with_a_common_beginning(1)) == 0
    assert prefix_to_share(model, rows_with_a_common_beginning(4)) == 4
    ids = rows_with_a_common_beginning(4)
    with pytest.raises(LucidError, match="do not share their first 5"):
        model(ids, shared_prefix=5)
    for wrong in (11, -1, True, 2.0):
        with pytest.raises(LucidError, match="from 1 to 10"):
            model(ids, shared_prefix=wrong)
    with pytest.raises(LucidError, match="plain forward"):
        model(ids, attention_mask=torch.ones_like(ids).index_fill_(1, torch.tensor([0]), 0), shared_prefix=4)
    with pytest.raises(LucidError, match="plain forward"):
        model(ids, cache=KVCache(model.config, batch_size=3), shared_prefix=4)
    for watching in (dict(attention="all"), dict(hidden=True)):
        with probe(model, **watching):
            with pytest.raises(LucidError, match="probe"):
                model(ids, shared_prefix=4)
            assert prefix_to_share(model, ids) == 0
    assert prefix_to_share(model, ids) == 4  # the probe is gone


def test_an_lm_head_with_a_bias_tied_or_not():
    from lucidlm.model import LMHead, TokenEmbedding

    torch.manual_seed(0)
    embedding = TokenEmbedding(7, 4)
    torch.nn.init.normal_(embedding.weight_t)
    x = torch.randn(2, 3, 4)
    for tied in (True, False):
        head = LMHead(4, 7, bias=True, tied_to=embedding if tied else None)
        if not tied:
            torch.nn.init.normal_(head.weight_t)
        torch.nn.init.normal_(head.bias)
        torch.testing.assert_close(head(x), x @ head.weight.T + head.bias)
        assert sorted(head.state_dict()) == (["bias"] if tied else ["bias", "weight"])
        before = head(x)
        if tied:
            embedding.resize(9)
        head.resize(9)
        after = head(x)
        assert after.shape == (2, 3, 9)
        torch.testing.assert_close(after[..., :7], before)
        torch.testing.assert_close(head.bias[7:], head.bias[:7].mean().expand(2))
