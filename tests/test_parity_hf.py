"""Parity with transformers: each family's tiny random reference model, saved as a Hugging Face
folder, loaded by lucidlm, gives the same logits and the same greedy tokens."""

import pytest
import torch

import lucidlm
from lucidlm.generation import generate_tokens

from conftest import FAMILIES



pytestmark = pytest.mark.usefixtures("inference_only")


def padded_batch(vocab: int = 96):
    torch.manual_seed(1)
    ids = torch.randint(0, vocab, (3, 11))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # left padding
    mask[2, 8:] = 0  # right padding
    return ids, mask


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_match_transformers_on_a_padded_batch(hf_models, family):
    reference, folder = hf_models[family]
    model, _ = lucidlm.load(folder)
    ids, mask = padded_batch()
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    expected = reference(ids, attention_mask=mask, position_ids=positions).logits
    got = model(ids, attention_mask=mask)
    real = mask.bool()
    torch.testing.assert_close(got[real], expected[real], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_twenty_greedy_tokens_match_transformers(hf_models, family):
    reference, folder = hf_models[family]
    model, _ = lucidlm.load(folder)
    prompt = [5, 17, 42, 8, 3, 77]
    # tiny random models have no EOS in their config, so transformers generates all 20
    expected = reference.generate(torch.tensor([prompt]), max_new_tokens=20, do_sample=False,
                                  pad_token_id=0, eos_token_id=None)[0, len(prompt):].tolist()
    assert len(expected) == 20
    stream = generate_tokens(model, prompt)
    got = [next(stream)[0] for _ in range(20)]
    assert got == expected


@pytest.mark.parametrize("family", FAMILIES)
def test_export_to_hugging_face_round_trips_through_transformers(hf_models, family, tmp_path):
    import transformers

    _, folder = hf_models[family]
    model, _ = lucidlm.load(folder)
    lucidlm.export_hf(model, None, tmp_path / "exported")
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "exported").eval()
    ids = torch.randint(0, 96, (2, 9))
    torch.testing.assert_close(again(ids).logits, model(ids), atol=1e-5, rtol=1e-5)


def test_sharded_safetensors_with_an_index_load(hf_models, tmp_path):
    reference, _ = hf_models["llama"]
    reference.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    model, _ = lucidlm.load(tmp_path)
    ids = torch.randint(0, 96, (1, 7))
    torch.testing.assert_close(model(ids), reference(ids).logits, atol=1e-5, rtol=1e-5)


def test_llama_with_biases_and_rope_scaling(tmp_path):
    from conftest import make_tiny_hf_model

    reference = make_tiny_hf_model("llama", attention_bias=True, mlp_bias=True, tie_word_embeddings=True,
                                   rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                 "high_freq_factor": 4.0, "original_max_position_embeddings": 16})
    reference.save_pretrained(tmp_path)
    model, _ = lucidlm.load(tmp_path)
    assert model.config.bias and model.config.qkv_bias and model.config.rope_scaling == "llama3"
    ids = torch.randint(0, 96, (2, 30))
    torch.testing.assert_close(model(ids), reference(ids).logits, atol=1e-5, rtol=1e-5)


def test_bfloat16_loading(hf_models):
    _, folder = hf_models["llama"]
    model, _ = lucidlm.load(folder, dtype="bfloat16")
    assert model.tok_emb.weight.dtype == torch.bfloat16
    assert model(torch.randint(0, 96, (1, 5))).dtype == torch.bfloat16


@pytest.mark.parametrize("family", FAMILIES)
def test_hidden_states_match_transformers(hf_models, family):
    """The probe's residual stream is transformers' hidden_states: the embeddings, then each block's
    output; the last block's, after the final norm, is what model.hidden() returns."""
    reference, folder = hf_models[family]
    model, _ = lucidlm.load(folder)
    ids, mask = padded_batch()
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    expected = reference(ids, attention_mask=mask, position_ids=positions, output_hidden_states=True).hidden_states
    with lucidlm.probe(model, hidden=True) as p:
        final = model.hidden(ids, attention_mask=mask)
    real = mask.bool()
    assert len(p.hidden) == len(expected) == model.config.n_layers + 1
    for layer in range(model.config.n_layers):  # transformers' last entry is after the final norm
        torch.testing.assert_close(p.hidden[layer][real], expected[layer][real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(final[real], expected[-1][real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model.final_norm(p.hidden[-1])[real], expected[-1][real], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_probed_attention_matches_transformers_eager_attentions(hf_models, family):
    import transformers

    _, folder = hf_models[family]
    reference = transformers.AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    model, _ = lucidlm.load(folder)
    ids = torch.randint(0, 96, (2, 9))
    expected = reference(ids, output_attentions=True).attentions
    _, got = model(ids, return_attentions=True)
    for layer in range(model.config.n_layers):
        torch.testing.assert_close(got[layer], expected[layer], atol=1e-5, rtol=1e-5)
