"""Encoder-decoders: tiny random BART, mBART and Marian models from transformers, loaded by lucidlm,
give the same logits (padding on the source and the target), the same greedy tokens and the same
beam search output as transformers' generate(num_beams=...); the cache of cross-attention keys and
values equals recomputing them; exported folders load in transformers with the same numbers."""

import pytest
import torch

import lucidlm
from lucidlm.errors import FormatError, LucidError
from lucidlm.generation.beam import beam_search
from lucidlm.generation.seq2seq import generate_seq2seq
from lucidlm.model import KVCache

pytestmark = pytest.mark.usefixtures("inference_only")

KINDS = ("bart", "mbart", "marian")
SIZES = dict(vocab_size=99, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
             decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
             dropout=0.0, attention_dropout=0.0)


def tiny(kind: str, seed: int, folder):
    """A tiny random model of this family, its weights scaled up so its distributions are peaked
    (ends and near-ties happen), saved to `folder`."""
    import transformers

    torch.manual_seed(seed)
    # The fairseq keys real files carry (opus-mt: normalize_embedding false; mbart-large-cc25:
    # normalize_before, add_final_layer_norm), which transformers ignores.
    if kind == "bart":
        model = transformers.BartForConditionalGeneration(transformers.BartConfig(**SIZES))
    elif kind == "mbart":
        model = transformers.MBartForConditionalGeneration(transformers.MBartConfig(
            **SIZES, decoder_start_token_id=2, normalize_before=True, add_final_layer_norm=True))
    else:
        model = transformers.MarianMTModel(transformers.MarianConfig(
            **SIZES, pad_token_id=0, decoder_start_token_id=0, eos_token_id=1, activation_function="swish",
            scale_embedding=True, normalize_embedding=False, normalize_before=False))
    with torch.no_grad():
        model.final_logits_bias.normal_()
        if kind == "marian":
            model.final_logits_bias[0, 1] += 6.0  # its end token: so that some searches end before the limit
        for name, p in model.named_parameters():
            if "embed_positions" not in name or kind != "marian":  # Marian's sinusoids are not saved: leave them
                p.mul_(3)
    model.save_pretrained(folder)
    return model.eval()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(kind, seed) -> (transformers model, lucidlm model)."""
    out = {}
    for kind in KINDS:
        for seed in range(3):
            folder = tmp_path_factory.mktemp(f"{kind}{seed}")
            out[kind, seed] = tiny(kind, seed, folder), lucidlm.load(folder)[0]
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_logits_match_transformers_with_padding_in_source_and_target(models, kind):
    reference, model = models[kind, 0]
    torch.manual_seed(1)
    source, target = torch.randint(3, 99, (3, 9)), torch.randint(3, 99, (3, 7))
    source_mask, target_mask = torch.ones_like(source), torch.ones_like(target)
    source_mask[1, 6:] = 0
    source_mask[2, 3:] = 0
    target_mask[0, 5:] = 0
    expected = reference(input_ids=source, attention_mask=source_mask, decoder_input_ids=target,
                         decoder_attention_mask=target_mask).logits
    got = model(target, attention_mask=target_mask, encoder_output=model.encode_source(source, source_mask))
    real = target_mask.bool()
    torch.testing.assert_close(got[real], expected[real], atol=1e-5, rtol=1e-5)
    assert model.config.encoder_layers == 2 and model.config.n_layers == 2


@pytest.mark.parametrize("kind", KINDS)
def test_cached_decoding_equals_one_forward(models, kind):
    _, model = models[kind, 0]
    source, target = torch.randint(3, 99, (2, 8)), torch.randint(3, 99, (2, 6))
    encoded = model.encode_source(source)
    whole = model(target, encoder_output=encoded)
    cache = KVCache(model.config, batch_size=2)
    cache.set_source(encoded)
    computed = []
    for block in model.blocks:  # count how often each layer projects the source
        block.cross_attn.keys_values = lambda states, f=block.cross_attn.keys_values: computed.append(1) or f(states)
    try:
        steps = [model(target[:, :3], cache=cache)] + [model(target[:, t:t + 1], cache=cache) for t in range(3, 6)]
        torch.testing.assert_close(torch.cat(steps, dim=1), whole, atol=1e-5, rtol=1e-5)
        assert len(computed) == 2  # once per layer, not once per step
        # Another source through the same cache: its own keys and values, not the old ones'.
        other = model.encode_source(torch.randint(3, 99, (2, 5)))
        cache.reset()
        torch.testing.assert_close(model(target, cache=cache, encoder_output=other),
                                   model(target, encoder_output=other), atol=1e-5, rtol=1e-5)
    finally:
        for block in model.blocks:
            del block.cross_attn.keys_values


SEARCHES = [(1, 1.0, False), (4, 1.0, False), (4, 2.0, True), (3, 0.5, "never")]


@pytest.mark.parametrize("kind", KINDS)
def test_greedy_and_beam_search_equal_transformers_generate(models, kind):
    ended = 0
    for seed in range(3):
        reference, model = models[kind, seed]
        config = reference.generation_config
        torch.manual_seed(seed)
        sources = [torch.randint(3, 99, (n,)).tolist() for n in (9, 5, 12)]
        for num_beams, length_penalty, early_stopping in SEARCHES:
            for source in sources:
                expected = reference.generate(torch.tensor([source]), num_beams=num_beams, max_new_tokens=20,
                                              do_sample=False, length_penalty=length_penalty,
                                              early_stopping=early_stopping)[0, 1:].tolist()
                got = generate_seq2seq(model, [source], max_tokens=20, eos_token_ids=[config.eos_token_id],
                                       num_beams=num_beams, length_penalty=length_penalty,
                                       early_stopping=early_stopping, forced_eos_token_id=config.forced_eos_token_id,
                                       pad_id=config.pad_token_id)[0]
                assert got == expected, (kind, seed, num_beams, length_penalty, early_stopping, source)
                ended += len(expected) < 20
    assert ended > 0  # some searches stop at an end token before the limit, not only at it


def test_a_batch_of_sources_decodes_as_each_alone(models):
    _, model = models["marian", 1]
    sources = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15]]
    together = generate_seq2seq(model, sources, max_tokens=12, eos_token_ids=[1])
    assert together == [generate_seq2seq(model, [s], max_tokens=12, eos_token_ids=[1])[0] for s in sources]


def test_beam_search_serves_decoders_too(hf_models):
    reference, folder = hf_models["llama"]
    model, _ = lucidlm.load(folder)
    prompt = [5, 17, 42, 8]
    expected = reference.generate(torch.tensor([prompt]), num_beams=4, max_new_tokens=12, do_sample=False,
                                  pad_token_id=0, eos_token_id=7, length_penalty=1.0)[0, len(prompt):].tolist()
    best = beam_search(model, prompt, num_beams=4, max_tokens=12, eos_token_ids=[7])
    assert best[0].tokens == expected and len(best) == 4
    assert [h.score for h in best] == sorted((h.score for h in best), reverse=True)


def test_what_an_encoder_decoder_needs_is_a_clear_error(models, hf_models):
    _, model = models["bart", 0]
    with pytest.raises(LucidError, match="reads a source"):
        model(torch.tensor([[2, 5]]))
    with pytest.raises(LucidError, match="at least one token"):
        generate_seq2seq(model, [[]])
    with pytest.raises(LucidError, match="no sampler"):
        generate_seq2seq(model, [[5]], num_beams=2, sampler=lambda logits, generator: logits.argmax(-1))
    decoder, _ = lucidlm.load(hf_models["llama"][1])
    with pytest.raises(LucidError, match="no encoder"):
        generate_seq2seq(decoder, [[5]])
    with pytest.raises(LucidError, match="early_stopping"):
        beam_search(decoder, [5], early_stopping="sometimes")


def test_unsupported_encoder_decoder_layouts_are_refused(tmp_path):
    import transformers

    config = transformers.BartConfig(**{**SIZES, "encoder_ffn_dim": 32})
    transformers.BartForConditionalGeneration(config).save_pretrained(tmp_path)
    with pytest.raises(FormatError, match="encoder_ffn_dim != decoder_ffn_dim"):
        lucidlm.load(tmp_path)


@pytest.mark.parametrize("kind", KINDS)
def test_export_to_hugging_face_gives_transformers_the_same_logits_and_beams(models, kind, tmp_path):
    import transformers

    reference, model = models[kind, 1]
    lucidlm.export_hf(model, None, tmp_path / "out")
    again = transformers.AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "out").eval()
    assert type(again) is type(reference)
    source, target = torch.randint(3, 99, (2, 9)), torch.randint(3, 99, (2, 6))
    torch.testing.assert_close(again(input_ids=source, decoder_input_ids=target).logits,
                               model(target, source_ids=source), atol=1e-5, rtol=1e-5)
    expected = again.generate(source[:1], num_beams=4, max_new_tokens=15, eos_token_id=reference.config.eos_token_id)
    got = generate_seq2seq(model, [source[0].tolist()], 15, [reference.config.eos_token_id], num_beams=4)
    assert got[0] == expected[0, 1:].tolist()


@pytest.mark.parametrize("kind", KINDS)
def test_probed_encoder_and_cross_attention_equal_transformers_attentions(models, kind, tmp_path):
    import transformers

    reference, model = models[kind, 2]
    reference.save_pretrained(tmp_path)
    eager = transformers.AutoModelForSeq2SeqLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    source, target = torch.randint(3, 99, (2, 8)), torch.randint(3, 99, (2, 5))
    source_mask = torch.ones_like(source)
    source_mask[1, 5:] = 0
    expected = eager(input_ids=source, attention_mask=source_mask, decoder_input_ids=target, output_attentions=True)
    with lucidlm.probe(model, cross="all", attention="all") as decoder, \
            lucidlm.probe(model.encoder, attention="all") as encoder:
        model(target, source_ids=source, source_mask=source_mask)
    real = source_mask.bool()
    for layer in range(2):
        torch.testing.assert_close(decoder.cross[layer], expected.cross_attentions[layer], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(decoder.attention[layer], expected.decoder_attentions[layer], atol=1e-5, rtol=1e-5)
        for row in range(2):  # the real queries' rows (a padding query's row is garbage nobody reads)
            got, want = encoder.attention[layer][row][:, real[row]], expected.encoder_attentions[layer][row][:, real[row]]
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    with pytest.raises(LucidError, match="no cross-attention"):
        lucidlm.probe(model.encoder, cross=[0]).__enter__()


def test_sampling_is_reproducible_by_seed(models):
    from lucidlm.generation import make_sampler

    _, model = models["bart", 2]
    sources = [[5, 6, 7, 8], [9, 10, 11]]
    sample = lambda seed: generate_seq2seq(model, sources, max_tokens=15, eos_token_ids=[2], seed=seed,
                                           sampler=make_sampler(temp=1.0))
    assert sample(1) == sample(1)
    assert len({str(sample(seed)) for seed in range(5)}) > 1


def test_generate_num_beams_prints_what_beam_search_finds(capsys):
    from lucidlm.cli import main
    from lucidlm.default_model import default_model_path

    model, tok = lucidlm.load()  # SmolLM2-135M
    ids = tok.encode("The capital of France is")
    eos = sorted(tok.eos_token_ids)
    best = beam_search(model, ids, num_beams=3, max_tokens=8, eos_token_ids=eos)[0]
    assert main(["generate", "--model", str(default_model_path()), "--prompt", "The capital of France is",
                 "--num-beams", "3", "--max-tokens", "8"]) == 0
    assert capsys.readouterr().out.rstrip("\n") == tok.decode([t for t in best.tokens if t not in eos])
    assert main(["generate", "--prompt", "x", "--num-beams", "3", "--show-probs"]) == 2
    assert "do not mix" in capsys.readouterr().err
