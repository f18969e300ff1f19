"""The one-token fast path (lucidlm/model/decode_step.py + .c) computes what the modules compute:
the same keys and values in the cache, the same cache bookkeeping, logits within the int8 rounding
of the activations, and it steps aside (the plain path runs, bit for bit) wherever it does not apply."""

import gguf
import pytest
import torch

import lucidlm
from lucidlm.model import KVCache, code_tiles, decode_step
from lucidlm.model.probe import probe

from conftest import make_tiny_hf_model
from gguf_helpers import write_llama_gguf

Q = gguf.GGMLQuantizationType
pytestmark = pytest.mark.usefixtures("inference_only")


@pytest.fixture(autouse=True)
def c_kernels():
    if decode_step.library() is None or code_tiles.library() is None:
        pytest.skip(f"lucidlm's C kernels do not run here: {code_tiles.why_not()}")


def tiny_quantized(tmp_path, qtype, **overrides):
    hf = make_tiny_hf_model("llama", hidden_size=64, intermediate_size=96, tie_word_embeddings=False, **overrides)
    path = tmp_path / f"tiny-{qtype.name}.gguf"
    write_llama_gguf(path, hf, qtype)
    return lucidlm.load(path)[0]


def stepwise(model, ids: list[int], fast: bool, prefill: int = 3):
    """Logits of each token after the prefill, one forward per token, and the cache."""
    model.fast_step = fast
    cache = KVCache(model.config, capacity=4)  # small: the cache grows during the steps
    model(torch.tensor([ids[:prefill]]), cache=cache)
    logits = [model(torch.tensor([[t]]), cache=cache, logits_for="last")[0, -1] for t in ids[prefill:]]
    model.fast_step = True
    return torch.stack(logits), cache


@pytest.mark.parametrize("qtype", [Q.Q8_0, Q.Q4_0, Q.Q4_1])
@pytest.mark.parametrize("overrides", [{}, {"num_key_value_heads": 4}, {"num_key_value_heads": 1}])
def test_the_fast_step_computes_what_the_modules_compute(tmp_path, qtype, overrides):
    """The two paths differ only in float rounding (C's sums vs PyTorch's), which the int8 rounding
    of the activations can amplify a little (a value on a rounding boundary goes either way): logits
    and cache entries within 1% of their largest, the first layer's keys within 1e-5 (nothing before
    it rounds differently), and the cache's bookkeeping equal."""
    model = tiny_quantized(tmp_path, qtype, **overrides)
    ids = torch.randint(0, 96, (12,), generator=torch.Generator().manual_seed(0)).tolist()
    assert decode_step.refusal(model, torch.tensor([[1]]), KVCache(model.config, capacity=4)) is None
    fast, fast_cache = stepwise(model, ids, True)
    plain, plain_cache = stepwise(model, ids, False)
    torch.testing.assert_close(fast, plain, rtol=0, atol=0.01 * plain.abs().max().item())
    assert fast_cache.length == plain_cache.length == len(ids) and fast_cache.capacity == plain_cache.capacity
    assert torch.equal(fast_cache.next_position, plain_cache.next_position)
    assert torch.equal(fast_cache.positions[:, :len(ids)], plain_cache.positions[:, :len(ids)])
    for mine, theirs in zip(fast_cache.keys + fast_cache.values, plain_cache.keys + plain_cache.values):
        theirs = theirs[:, :, :len(ids)]
        torch.testing.assert_close(mine[:, :, :len(ids)], theirs, rtol=0, atol=0.01 * theirs.abs().max().item())
    first = plain_cache.keys[0][:, :, :len(ids)]
    torch.testing.assert_close(fast_cache.keys[0][:, :, :len(ids)], first, rtol=0, atol=1e-5 * first.abs().max().item())


def test_a_long_context_splits_the_heads_between_threads_with_the_same_numbers(tmp_path):
    model = tiny_quantized(tmp_path, Q.Q8_0)
    model.config = model.config.replace(context_length=2048)
    ids = torch.randint(0, 96, (1030,), generator=torch.Generator().manual_seed(1)).tolist()
    fast, _ = stepwise(model, ids, True, prefill=1024)
    plain, _ = stepwise(model, ids, False, prefill=1024)
    torch.testing.assert_close(fast, plain, rtol=0, atol=0.01 * plain.abs().max().item())


def test_the_default_model_steps_as_its_modules_do(smollm_quantized):
    """SmolLM2 has outlier channels in the hundreds, where the int8 rounding of activations near a
    rounding boundary can go either way: the same next token, logits within 5% of the largest."""
    model, tokenizer = smollm_quantized
    ids = tokenizer.encode("The capital of France is Paris. The United States has a population of")
    fast, _ = stepwise(model, ids, True)
    plain, _ = stepwise(model, ids, False)
    assert torch.equal(fast.argmax(dim=1), plain.argmax(dim=1))
    torch.testing.assert_close(fast, plain, rtol=0, atol=0.05 * plain.abs().max().item())


def test_where_the_fast_step_steps_aside_the_plain_path_runs(tmp_path):
    model = tiny_quantized(tmp_path, Q.Q4_1)
    ids = [5, 7, 9, 11, 13]
    plain, _ = stepwise(model, ids, False)

    def refused_then(check) -> None:
        logits, _ = stepwise(model, ids, True)
        assert torch.equal(logits, plain)  # bit for bit: the modules ran
        check()

    cache = KVCache(model.config, capacity=4)
    with probe(model, attention="all"):
        assert "probe" in decode_step.refusal(model, torch.tensor([[1]]), cache)
        refused_then(lambda: None)
    handle = model.blocks[1].register_forward_hook(lambda *args: None)
    assert "hook" in decode_step.refusal(model, torch.tensor([[1]]), cache)
    refused_then(handle.remove)
    with torch.enable_grad():
        assert "gradients" in decode_step.refusal(model, torch.tensor([[1]]), cache)
    assert "one token" in decode_step.refusal(model, torch.tensor([[1, 2]]), cache)
    assert "one token" in decode_step.refusal(model, torch.tensor([[1], [2]]), KVCache(model.config, 2, 4))
    padded = KVCache(model.config, capacity=4)
    model(torch.tensor([[1, 2]]), attention_mask=torch.tensor([[0, 1]]), cache=padded)
    assert "plain KV cache" in decode_step.refusal(model, torch.tensor([[1]]), padded)
    assert decode_step.refusal(model, torch.tensor([[1]]), cache) is None  # the hook and probe are gone


def test_a_float_model_and_a_bfloat16_one_take_the_plain_path(tmp_path):
    path = tmp_path / "tiny.gguf"
    write_llama_gguf(path, make_tiny_hf_model("llama", hidden_size=64, intermediate_size=96), Q.Q4_1)
    dense = lucidlm.load(path, dtype="float32")[0]
    assert "code tiles" in decode_step.refusal(dense, torch.tensor([[1]]), KVCache(dense.config, capacity=4))
    quantized = lucidlm.load(path)[0]
    quantized.to(torch.bfloat16)  # the norms become bfloat16; the code tiles keep their bytes
    cache = KVCache(quantized.config, capacity=4, dtype=torch.bfloat16)
    assert "float32 CPU cache" in decode_step.refusal(quantized, torch.tensor([[1]]), cache)
    cache = KVCache(quantized.config, capacity=4)  # a float32 cache: the model's own dtype refuses
    assert "float32 model" in decode_step.refusal(quantized, torch.tensor([[1]]), cache)


def test_a_token_outside_the_vocabulary_is_an_index_error_not_a_read_past_the_table(tmp_path):
    model = tiny_quantized(tmp_path, Q.Q4_1)
    cache = KVCache(model.config, capacity=8)
    model(torch.tensor([[1, 2]]), cache=cache)
    with pytest.raises(IndexError, match="outside the embedding's 96 rows"):
        model(torch.tensor([[96]]), cache=cache)  # the fast step's path: one token, one row


def test_a_model_changed_after_its_first_step_is_seen_afresh(tmp_path):
    """The fast step remembers a model's modules (finding them costs a sixth of a step); swapping
    one is noticed at the next step."""
    model = tiny_quantized(tmp_path, Q.Q4_1)
    cache = KVCache(model.config, capacity=8)
    model(torch.tensor([[1, 2]]), cache=cache)
    model(torch.tensor([[3]]), cache=cache)
    assert decode_step.refusal(model, torch.tensor([[1]]), cache) is None
    model.blocks[0].attn.out = lucidlm.model.Linear(64, 64, bias=False)
    assert "code tiles" in decode_step.refusal(model, torch.tensor([[1]]), cache)


def test_weights_changed_in_place_or_replaced_reach_the_fast_step(tmp_path):
    """The step keeps a table of the weights' addresses: a norm given new storage (`.data =`), or a
    new Parameter (load_state_dict(assign=True)), must be read afresh, not from the old address."""
    model = tiny_quantized(tmp_path, Q.Q4_1)
    ids = [5, 7, 9, 11, 13]
    stepwise(model, ids, True)  # builds the table
    norm = model.blocks[1].mlp_norm
    norm.weight.data = norm.weight.data * 3  # new storage, the same Parameter
    model.load_state_dict({"blocks.0.attn_norm.weight": model.blocks[0].attn_norm.weight.detach() * 0.5},
                          strict=False, assign=True)
    fast, _ = stepwise(model, ids, True)
    plain, _ = stepwise(model, ids, False)
    torch.testing.assert_close(fast, plain, rtol=0, atol=0.01 * plain.abs().max().item())


def test_heads_narrower_than_a_vector_take_the_plain_path(tmp_path):
    model = tiny_quantized(tmp_path, Q.Q8_0, num_attention_heads=8, num_key_value_heads=4)  # head_dim 8
    assert "multiple of 16" in decode_step.refusal(model, torch.tensor([[1]]), KVCache(model.config, capacity=4))
    fast, _ = stepwise(model, [5, 7, 9, 11], True)
    plain, _ = stepwise(model, [5, 7, 9, 11], False)
    assert torch.equal(fast, plain)
