"""Parity with transformers for Phi-3 (a Hugging Face folder and a GGUF file), Gemma 2 and Gemma 3:
each family's tiny random reference model gives the same logits on a left-padded batch, the same
20 greedy tokens and the same attention weights through lucidlm."""

import numpy as np
import pytest
import torch

import lucidlm
from lucidlm.errors import FormatError
from lucidlm.generation import generate_tokens
from lucidlm.weights.hf_config import config_from_hf
from gguf_helpers import sized_writer

pytestmark = pytest.mark.usefixtures("inference_only")

VOCAB = 96
COMMON = dict(vocab_size=VOCAB, hidden_size=48, intermediate_size=80, num_attention_heads=4, num_key_value_heads=2,
              max_position_embeddings=64, pad_token_id=0, bos_token_id=None, eos_token_id=None)


def phi3(**overrides):
    import transformers

    return transformers.Phi3ForCausalLM(transformers.Phi3Config(**{**COMMON, "num_hidden_layers": 2, **overrides}))


def gemma2():
    import transformers

    # Windows of 4 tokens on layers 0 and 2, caps small enough to bend the logits, a head_dim of
    # its own (16, not 48 / 4) and an attention scale from query_pre_attn_scalar.
    return transformers.Gemma2ForCausalLM(transformers.Gemma2Config(
        **COMMON, num_hidden_layers=3, head_dim=16, sliding_window=4, query_pre_attn_scalar=24,
        attn_logit_softcapping=5.0, final_logit_softcapping=5.0))


def gemma3():
    import transformers

    # Sliding layers 0 and 1 rotate with base 10000; the global layer 2 with base 1e6, scaled linearly.
    return transformers.Gemma3ForCausalLM(transformers.Gemma3TextConfig(
        **COMMON, num_hidden_layers=3, head_dim=16, sliding_window=4, query_pre_attn_scalar=24,
        final_logit_softcapping=5.0,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"],
        rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
                         "full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1_000_000.0}}))


# Phi-3 with longrope (factors switch beyond 16 positions, which both tests pass), partial rotation
# (6 of 12 channels) and a sliding window.
LONGROPE = dict(original_max_position_embeddings=16, sliding_window=7, rope_parameters={
    "rope_type": "longrope", "rope_theta": 10_000.0, "partial_rotary_factor": 0.5,
    "short_factor": [1.0, 1.5, 2.0], "long_factor": [2.0, 4.0, 9.0], "original_max_position_embeddings": 16})

BUILDERS = {"phi3": phi3, "phi3-longrope": lambda: phi3(**LONGROPE), "gemma2": gemma2, "gemma3": gemma3}


def randomized(model, seed: int = 0):
    """Weights large enough that next-token choices are clear-cut; norms near 1 (Gemma's near 2)."""
    import transformers

    transformers.logging.set_verbosity_error()
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            else:
                p.normal_(0.0, 0.25)
    return model.eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """family -> (transformers model (eager attention), saved folder)."""
    import transformers

    out = {}
    for family, build in BUILDERS.items():
        folder = tmp_path_factory.mktemp(family)
        randomized(build()).save_pretrained(folder)
        reference = transformers.AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
        out[family] = (reference, folder)
    return out


def left_padded_batch():
    """Two rows of 24 and 17 real tokens, the second padded on the left: past every window and
    past longrope's 16 positions."""
    torch.manual_seed(1)
    ids = torch.randint(1, VOCAB, (2, 24))
    mask = torch.ones_like(ids)
    mask[1, :7] = 0
    return ids, mask


def assert_same_logits(model, reference):
    ids, mask = left_padded_batch()
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    expected = reference(ids, attention_mask=mask, position_ids=positions).logits
    got = model(ids, attention_mask=mask)
    real = mask.bool()
    torch.testing.assert_close(got[real], expected[real], atol=1e-5, rtol=1e-5)
    return (got[real] - expected[real]).abs().max().item()


def assert_same_greedy_tokens(model, reference):
    prompt = [5, 17, 42, 8, 3, 77]
    expected = reference.generate(torch.tensor([prompt]), max_new_tokens=20, do_sample=False,
                                  pad_token_id=0, eos_token_id=None)[0, len(prompt):].tolist()
    assert len(expected) == 20
    stream = generate_tokens(model, prompt)
    assert [next(stream)[0] for _ in range(20)] == expected


@pytest.mark.parametrize("family", BUILDERS)
def test_logits_on_a_left_padded_batch_match_transformers(saved, family):
    reference, folder = saved[family]
    model, _ = lucidlm.load(folder)
    assert_same_logits(model, reference)


@pytest.mark.parametrize("family", BUILDERS)
def test_twenty_greedy_tokens_match_transformers(saved, family):
    reference, folder = saved[family]
    model, _ = lucidlm.load(folder)
    assert_same_greedy_tokens(model, reference)


@pytest.mark.parametrize("family", BUILDERS)
def test_probed_attention_matches_transformers_eager_attentions(saved, family):
    """The probe recomputes weights with the plain path's formula: soft caps, scales and windows included."""
    reference, folder = saved[family]
    model, _ = lucidlm.load(folder)
    ids = torch.randint(1, VOCAB, (2, 20))
    expected = reference(ids, output_attentions=True).attentions
    _, got = model(ids, return_attentions=True)
    for layer in range(model.config.n_layers):
        torch.testing.assert_close(got[layer], expected[layer], atol=1e-5, rtol=1e-5)


def test_the_configs_carry_the_mechanisms(saved):
    configs = {family: lucidlm.load(folder)[0].config for family, (_, folder) in saved.items()}
    longrope = configs["phi3-longrope"]
    assert longrope.rope_scaling == "longrope" and longrope.rotary_dim == 6 and longrope.rope_attention_factor > 1
    gemma2, gemma3 = configs["gemma2"], configs["gemma3"]
    assert gemma2.sliding_window_layers == (0, 2) and gemma2.attn_logit_softcap == 5.0 and gemma2.sandwich_norm
    assert gemma2.head_dim == 16 and gemma2.attention_scale == 24 ** -0.5 and gemma2.embedding_scale == 48 ** 0.5
    assert gemma3.qk_norm and gemma3.rope_local_base == 10_000.0 and gemma3.rope_base == 1e6
    assert gemma3.rope_scaling == "linear" and gemma3.attn_logit_softcap is None


def test_the_new_mechanisms_survive_a_json_round_trip(saved):
    import json

    from lucidlm.config import Config

    for family, (_, folder) in saved.items():
        config = lucidlm.load(folder)[0].config
        assert Config.from_dict(json.loads(config.to_json())) == config, family


# --- Phi-3 from GGUF ----------------------------------------------------------------------------

def write_phi3_gguf(path, hf_model) -> None:
    """hf_model as llama.cpp's Phi3MiniModel converter writes it: q|k|v and gate|up stay fused
    (attn_qkv, ffn_up), rows in Hugging Face order (phi3 rotates halves, as we do), float32."""
    c = hf_model.config
    writer = sized_writer(path, "phi3", c)
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    for i in range(c.num_hidden_layers):
        p = f"model.layers.{i}."
        names.update({p + "input_layernorm.weight": f"blk.{i}.attn_norm.weight",
                      p + "self_attn.qkv_proj.weight": f"blk.{i}.attn_qkv.weight",
                      p + "self_attn.o_proj.weight": f"blk.{i}.attn_output.weight",
                      p + "post_attention_layernorm.weight": f"blk.{i}.ffn_norm.weight",
                      p + "mlp.gate_up_proj.weight": f"blk.{i}.ffn_up.weight",
                      p + "mlp.down_proj.weight": f"blk.{i}.ffn_down.weight"})
    for name, tensor in hf_model.state_dict().items():
        writer.add_tensor(names[name], np.ascontiguousarray(tensor.float().numpy()))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture(scope="module")
def phi3_gguf(saved, tmp_path_factory):
    reference, _ = saved["phi3"]
    path = tmp_path_factory.mktemp("phi3-gguf") / "phi3.gguf"
    write_phi3_gguf(path, reference)
    return reference, path


def test_phi3_gguf_logits_on_a_left_padded_batch_match_transformers(phi3_gguf):
    reference, path = phi3_gguf
    model, _ = lucidlm.load(path)
    assert model.config.rope_dim is None and not model.config.tie_embeddings
    assert_same_logits(model, reference)


def test_phi3_gguf_twenty_greedy_tokens_match_transformers(phi3_gguf):
    reference, path = phi3_gguf
    model, _ = lucidlm.load(path)
    assert_same_greedy_tokens(model, reference)


# --- export and refusals ------------------------------------------------------------------------

def test_plain_phi3_exports_as_the_llama_it_computes(saved, tmp_path):
    import transformers

    _, folder = saved["phi3"]
    model, _ = lucidlm.load(folder)
    lucidlm.export_hf(model, None, tmp_path / "exported")
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "exported").eval()
    ids = torch.randint(1, VOCAB, (2, 9))
    torch.testing.assert_close(again(ids).logits, model(ids), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family, why", [("phi3-longrope", "partial rotary"), ("gemma2", "attention scale"),
                                         ("gemma3", "sliding layers")])
def test_export_refuses_what_no_export_family_computes(saved, tmp_path, family, why):
    _, folder = saved[family]
    model, _ = lucidlm.load(folder)
    with pytest.raises(FormatError, match=why):
        lucidlm.export_hf(model, None, tmp_path / "exported")
    assert not (tmp_path / "exported").exists()


def test_a_multimodal_gemma3_config_reads_its_sparse_text_config():
    # As the Hub's gemma-3-4b files have it: text_config lists only what differs from the defaults.
    data = {"model_type": "gemma3", "text_config": {
        "model_type": "gemma3_text", "hidden_size": 2560, "intermediate_size": 10240, "num_hidden_layers": 34,
        "rope_scaling": {"factor": 8.0, "rope_type": "linear"}, "sliding_window": 1024}}
    config, family = config_from_hf(data, "config.json")
    assert family == "gemma3" and config.qk_norm and config.n_heads == 8 and config.head_dim == 256
    assert config.rope_scaling == "linear" and config.rope_scaling_factor == 8.0 and config.rope_base == 1e6
    assert config.rope_local_base == 10_000.0 and config.sliding_window == 1024
    assert config.sliding_window_layers == tuple(i for i in range(34) if (i + 1) % 6)


def test_the_text_model_of_a_multimodal_gemma3_file_matches_transformers(tmp_path):
    """Gemma3ForConditionalGeneration's files: the vision tower's tensors are skipped, the text
    model's (under language_model.model.) load, and text-only logits agree."""
    import transformers

    text = gemma3().config.to_dict()
    text["final_logit_softcapping"] = None  # the multimodal model never applies it
    vision = transformers.SiglipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                             num_attention_heads=2, image_size=16, patch_size=4)
    config = transformers.Gemma3Config(text_config=text, vision_config=vision.to_dict(), mm_tokens_per_image=4,
                                       image_token_index=95, boi_token_index=93, eoi_token_index=94)
    randomized(transformers.Gemma3ForConditionalGeneration(config)).save_pretrained(tmp_path)
    reference = transformers.Gemma3ForConditionalGeneration.from_pretrained(tmp_path, attn_implementation="eager")
    model, _ = lucidlm.load(tmp_path)
    ids = torch.randint(1, 90, (2, 20))
    torch.testing.assert_close(model(ids), reference.eval()(input_ids=ids).logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("data, message", [
    ({"attn_logit_softcapping": 30.0}, "attn_logit_softcapping"),
    ({"use_bidirectional_attention": True}, "use_bidirectional_attention"),
    ({"rope_parameters": {"sliding_attention": {"rope_type": "linear", "factor": 2.0}}}, "sliding layers"),
])
def test_gemma3_options_we_do_not_compute_are_refused(data, message):
    base = {"model_type": "gemma3_text", "vocab_size": VOCAB, "hidden_size": 48, "intermediate_size": 80,
            "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 64}
    with pytest.raises(FormatError, match=message):
        config_from_hf({**base, **data}, "config.json")


def test_longrope_factors_must_fit_the_rotated_channels():
    data = {"model_type": "phi3", "vocab_size": VOCAB, "hidden_size": 48, "intermediate_size": 80,
            "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 64,
            "rope_parameters": {"rope_type": "longrope", "short_factor": [1.0], "long_factor": [1.0],
                                "original_max_position_embeddings": 16}}
    with pytest.raises(FormatError, match="rope_short_factors"):
        config_from_hf(data, "config.json")
