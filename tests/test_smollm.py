"""The real SmolLM2-135M-Instruct GGUF: our logits and greedy tokens equal transformers'."""

import pytest
import torch

from lucidlm.generation import generate_tokens



pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("inference_only")]

PROMPTS = [
    "The capital of France is",
    "<|im_start|>user\nWrite a story about Einstein<|im_end|>\n<|im_start|>assistant\n",
    "def fibonacci(n):\n    ",
    "Once upon a time, in a land far away, 12345 dragons",
]


@pytest.fixture(scope="module")
def reference(smollm_path):
    import transformers

    transformers.logging.set_verbosity_error()
    model = transformers.AutoModelForCausalLM.from_pretrained(smollm_path.parent, gguf_file=smollm_path.name,
                                                              dtype=torch.float32)
    return model.eval()


@pytest.mark.parametrize("prompt", PROMPTS)
def test_last_position_logits_match_transformers(smollm, reference, prompt):
    model, tokenizer = smollm
    ids = torch.tensor([tokenizer.encode(prompt, allowed_special="all")])
    ours = model(ids)[0, -1]
    theirs = reference(ids).logits[0, -1]
    relative = (ours - theirs).abs().max() / theirs.abs().max()
    assert relative < 1e-4, float(relative)


def test_greedy_generation_matches_transformers_token_for_token(smollm, reference):
    model, tokenizer = smollm
    for prompt in PROMPTS[:3]:
        ids = tokenizer.encode(prompt, allowed_special="all")
        # (no min_new_tokens: transformers would then forbid EOS, which greedy decoding may pick)
        expected = reference.generate(torch.tensor([ids]), max_new_tokens=30, do_sample=False,
                                      pad_token_id=tokenizer.pad_token_id)[0, len(ids):].tolist()
        stream = generate_tokens(model, ids)
        assert [next(stream)[0] for _ in range(len(expected))] == expected, prompt
        assert len(expected) >= 10


def test_config_comes_from_the_file(smollm):
    model, tokenizer = smollm
    c = model.config
    assert (c.n_layers, c.d_model, c.n_heads, c.n_kv_heads, c.d_ff, c.vocab_size) == (30, 576, 9, 3, 1536, 49152)
    assert c.rope_base == 100000.0 and c.tie_embeddings and c.context_length == 8192
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.chat_template


def test_chat_template_matches_transformers(smollm, smollm_path):
    import transformers

    _, tokenizer = smollm
    theirs = transformers.AutoTokenizer.from_pretrained(smollm_path.parent, gguf_file=smollm_path.name)
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": "Tell me a joke."}]
    for add in (True, False):
        assert tokenizer.apply_chat_template(messages, add_generation_prompt=add, tokenize=False) == \
            theirs.apply_chat_template(messages, add_generation_prompt=add, tokenize=False)


def test_sampled_generation_with_a_seed_reproduces(smollm):
    from lucidlm import generate, make_sampler

    model, tokenizer = smollm
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Name a color."}], add_generation_prompt=True)
    sampler = make_sampler(temp=0.9, top_p=0.95)
    a = generate(model, tokenizer, prompt, max_tokens=20, sampler=sampler, seed=11)
    b = generate(model, tokenizer, prompt, max_tokens=20, sampler=sampler, seed=11)
    assert a == b and a


def test_export_of_the_gguf_model_runs_in_transformers(smollm, tmp_path):
    import transformers

    import lucidlm

    model, tokenizer = smollm
    lucidlm.export_hf(model, tokenizer, tmp_path / "hf")
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    ids = torch.tensor([tokenizer.encode("Hello there, how are you")])
    torch.testing.assert_close(again(ids).logits, model(ids), atol=1e-4, rtol=1e-4)
    reloaded, tok2 = lucidlm.load(tmp_path / "hf")
    assert tok2.encode("Hello 123 world") == tokenizer.encode("Hello 123 world")
    assert tok2.eos_token_ids == tokenizer.eos_token_ids
