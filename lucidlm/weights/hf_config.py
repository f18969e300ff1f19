"""Hugging Face `config.json` <-> Config, for the families lucidlm reads and writes.

The file's `model_type` picks a reader; each reader maps the family's keys to our mechanism fields.
Keys that would change the computation in a way we do not implement are refused, never ignored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from ..config import FAMILIES, Config
from ..errors import FormatError
from .name_tables import (HF_BART, HF_BERT, HF_GEMMA, HF_GEMMA3_MULTIMODAL, HF_GPT2, HF_LLAMA, HF_MARIAN, HF_MBART,
                          HF_PHI3, NameTable)

ACTIVATION_NAMES = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
                    "silu": "silu", "swish": "silu", "relu": "relu"}


def _activation(name: str, origin: str) -> str:
    if name not in ACTIVATION_NAMES:
        raise FormatError(f"{origin}: unsupported activation {name!r} "
                          f"(supported: {', '.join(ACTIVATION_NAMES)})")
    return ACTIVATION_NAMES[name]


def _rope(data: dict[str, Any], origin: str) -> dict[str, Any]:
    """Rotary settings from `rope_parameters` (transformers 5) or `rope_theta` + `rope_scaling`."""
    params = dict(data.get("rope_parameters") or {})
    if not params:
        params = dict(data.get("rope_scaling") or {})
        params.setdefault("rope_theta", data.get("rope_theta", 10000.0))
    kind = params.get("rope_type", params.get("type", "default"))
    out: dict[str, Any] = {"rope_base": float(params.get("rope_theta", 10000.0))}
    if kind == "default":
        return out
    if kind == "linear":
        return {**out, "rope_scaling": "linear", "rope_scaling_factor": float(params["factor"])}
    if kind == "llama3":
        return {**out, "rope_scaling": "llama3", "rope_scaling_factor": float(params["factor"]),
                "rope_low_freq_factor": float(params["low_freq_factor"]),
                "rope_high_freq_factor": float(params["high_freq_factor"]),
                "rope_original_context_length": int(params["original_max_position_embeddings"])}
    if kind == "longrope":
        return {**out, **_longrope(params, data)}
    raise FormatError(f"{origin}: unsupported rope scaling {kind!r} (supported: default, linear, llama3, longrope)")


def _longrope(params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """LongRoPE (Phi-3): a factor per channel pair for contexts within the pretraining length and
    one beyond it, and cos/sin grown by sqrt(1 + ln(s) / ln(original)) for a context stretched s
    times (transformers' _compute_longrope_parameters, unless the file gives attention_factor)."""
    original = int(params.get("original_max_position_embeddings") or data["original_max_position_embeddings"])
    factor = params.get("factor")
    if factor is None:
        factor = data["max_position_embeddings"] / original
    attention = params.get("attention_factor")
    if attention is None:
        attention = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(original))
    return {"rope_scaling": "longrope", "rope_original_context_length": original,
            "rope_short_factors": tuple(float(f) for f in params["short_factor"]),
            "rope_long_factors": tuple(float(f) for f in params["long_factor"]),
            "rope_attention_factor": float(attention)}


def config_from_hf(data: dict[str, Any], origin: str) -> tuple[Config, str]:
    """Config and family name ("gpt2", "llama", "mistral", "qwen2") from a parsed config.json."""
    model_type = data.get("model_type")
    if model_type not in HF_FAMILIES:
        raise FormatError(f"{origin}: unsupported architecture {model_type!r} "
                          f"(supported: {', '.join(HF_FAMILIES)})")
    try:
        config = HF_FAMILIES[model_type].read(data, origin)
        task = _sequence_classifier(data, config, origin)
        return (config.replace(**task) if task else config), model_type
    except KeyError as exc:
        raise FormatError(f"{origin}: config.json lacks {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        if isinstance(exc, FormatError):
            raise
        raise FormatError(f"{origin}: bad value in config.json: {exc}") from None


def _sequence_classifier(data: dict[str, Any], config: Config, origin: str) -> dict[str, Any]:
    """A decoder saved as transformers' *ForSequenceClassification (GPT2-, LlamaForSequenceClassification):
    a k-class head, `score` without a bias, on the last real token. An encoder's heads show in its
    tensors (_bert_heads); {} for any other file."""
    if not any(str(a).endswith("ForSequenceClassification") for a in data.get("architectures") or []):
        return {}
    if config.is_encoder_decoder:
        raise FormatError(f"{origin}: sequence classification with an encoder-decoder is not supported")
    if not config.causal:
        return {}
    return dict(head="classify", n_labels=len(label_names(data) or []) or int(data.get("num_labels") or 2),
                classify_token="last", classifier_bias=False)


def label_names(data: dict[str, Any]) -> dict[int, str] | None:
    """config.json's id2label, class id -> name, or None when it has none or a gap."""
    id2label = data.get("id2label")
    if not isinstance(id2label, dict) or not id2label:
        return None
    try:
        names = {int(k): str(v) for k, v in id2label.items()}
    except (TypeError, ValueError):
        return None
    return dict(sorted(names.items())) if set(names) == set(range(len(names))) else None


def _gpt2(data: dict[str, Any], origin: str) -> Config:
    for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn", "add_cross_attention"):
        if data.get(flag):
            raise FormatError(f"{origin}: GPT-2 option {flag} is not supported")
    if data.get("scale_attn_weights") is False:
        raise FormatError(f"{origin}: GPT-2 option scale_attn_weights=false is not supported")
    d_model = data["n_embd"]
    return _config(FAMILIES["gpt2"], vocab_size=data["vocab_size"], context_length=data["n_positions"],
                  d_model=d_model, n_layers=data["n_layer"], n_heads=data["n_head"],
                  d_ff=data.get("n_inner") or 4 * d_model, norm_eps=data.get("layer_norm_epsilon", 1e-5),
                  activation=_activation(data.get("activation_function", "gelu_new"), origin),
                  tie_embeddings=data.get("tie_word_embeddings", True),
                  dropout=data.get("resid_pdrop", 0.0), attention_dropout=data.get("attn_pdrop", 0.0))


def _llama_like(data: dict[str, Any], origin: str) -> Config:
    family = data["model_type"]
    switches = dict(FAMILIES[family])
    if family == "llama":  # Llama's biases are switchable; the others fix them by family
        switches["qkv_bias"] = switches["bias"] = bool(data.get("attention_bias", False))
        if data.get("mlp_bias") and not switches["bias"]:
            raise FormatError(f"{origin}: mlp_bias without attention_bias is not supported")
        if data.get("attention_bias") and not data.get("mlp_bias"):
            raise FormatError(f"{origin}: attention_bias without mlp_bias is not supported")
    if data.get("pretraining_tp", 1) != 1:
        raise FormatError(f"{origin}: pretraining_tp != 1 is not supported")
    n_heads = data["num_attention_heads"]
    window = data.get("sliding_window")
    layers = None
    if family == "qwen2":
        # Qwen2 slides only when asked, and only on the layers `layer_types` (or the legacy
        # max_window_layers) names.
        if not data.get("use_sliding_window", False):
            window = None
        elif data.get("layer_types"):
            layers = tuple(i for i, kind in enumerate(data["layer_types"]) if kind == "sliding_attention")
        else:
            layers = tuple(range(data.get("max_window_layers", 0), data["num_hidden_layers"]))
    return _config(switches, vocab_size=data["vocab_size"], context_length=data["max_position_embeddings"],
                  d_model=data["hidden_size"], n_layers=data["num_hidden_layers"], n_heads=n_heads,
                  n_kv_heads=data.get("num_key_value_heads") or n_heads,
                  head_dim=data.get("head_dim") or data["hidden_size"] // n_heads,
                  d_ff=data["intermediate_size"], norm_eps=data.get("rms_norm_eps", 1e-6),
                  activation=_activation(data.get("hidden_act", "silu"), origin),
                  tie_embeddings=data.get("tie_word_embeddings", False),
                  sliding_window=window, sliding_window_layers=layers,
                  attention_dropout=data.get("attention_dropout", 0.0), **_rope(data, origin))


def _config(switches: dict[str, Any], **fields: Any) -> Config:
    """The family's switches, overridden by what the file says."""
    return Config(**{**switches, **fields})


def _bert(data: dict[str, Any], origin: str) -> Config:
    if data.get("position_embedding_type", "absolute") != "absolute":
        raise FormatError(f"{origin}: BERT position_embedding_type {data['position_embedding_type']!r} is not supported")
    for flag in ("is_decoder", "add_cross_attention"):
        if data.get(flag):
            raise FormatError(f"{origin}: BERT option {flag} is not supported")
    return _config(FAMILIES["bert"], vocab_size=data["vocab_size"], context_length=data["max_position_embeddings"],
                   d_model=data["hidden_size"], n_layers=data["num_hidden_layers"],
                   n_heads=data["num_attention_heads"], d_ff=data["intermediate_size"],
                   norm_eps=data.get("layer_norm_eps", 1e-12), activation=_activation(data.get("hidden_act", "gelu"), origin),
                   token_types=data.get("type_vocab_size", 2), dropout=data.get("hidden_dropout_prob", 0.0),
                   n_labels=len(data.get("id2label") or {}) or 2,
                   attention_dropout=data.get("attention_probs_dropout_prob", 0.0))


def _bert_heads(names: list[str]) -> dict[str, Any]:
    """BertModel, BertForMaskedLM and BertForPreTraining share config.json: the tensors say which
    heads there are."""
    head = "mlm" if any(n.startswith("cls.predictions.") for n in names) else \
        "classify" if "classifier.weight" in names else "none"
    return {"head": head, "pooler": any(n.endswith("pooler.dense.weight") for n in names)}


def _seq2seq(data: dict[str, Any], origin: str) -> Config:
    """BART, mBART and Marian: an encoder and a decoder of the same widths, shared embeddings."""
    family = data["model_type"]
    for encoder_key, decoder_key in (("encoder_attention_heads", "decoder_attention_heads"),
                                     ("encoder_ffn_dim", "decoder_ffn_dim")):
        if data[encoder_key] != data[decoder_key]:
            raise FormatError(f"{origin}: {encoder_key} != {decoder_key} is not supported (one width for both stacks)")
    # normalize_before, add_final_layer_norm and normalize_embedding, which older files carry
    # (every opus-mt config has normalize_embedding: false), are fairseq's: transformers reads the
    # layout from model_type alone, and so do we.
    if family == "marian" and (not data.get("share_encoder_decoder_embeddings", True)
                               or data.get("decoder_vocab_size", data["vocab_size"]) != data["vocab_size"]):
        raise FormatError(f"{origin}: Marian with separate source and target vocabularies is not supported")
    if data.get("tie_word_embeddings") is False:
        raise FormatError(f"{origin}: {family} with an LM head of its own (tie_word_embeddings=false) is not supported")
    d_model = data["d_model"]
    return _config(FAMILIES[family], vocab_size=data["vocab_size"], context_length=data["max_position_embeddings"],
                   d_model=d_model, n_layers=data["decoder_layers"], encoder_layers=data["encoder_layers"],
                   n_heads=data["decoder_attention_heads"], d_ff=data["decoder_ffn_dim"],
                   activation=_activation(data.get("activation_function", "gelu"), origin),
                   embedding_scale=math.sqrt(d_model) if data.get("scale_embedding") else 1.0,
                   decoder_start_token_id=data.get("decoder_start_token_id"),
                   dropout=data.get("dropout", 0.0), attention_dropout=data.get("attention_dropout", 0.0))


def _phi3(data: dict[str, Any], origin: str) -> Config:
    """Phi-3: Llama's computation, with longrope and partial rotation where config.json asks."""
    n_heads, d_model = data["num_attention_heads"], data["hidden_size"]
    head_dim = data.get("head_dim") or d_model // n_heads
    params = data.get("rope_parameters") or data.get("rope_scaling") or {}
    rope_dim = int(head_dim * float(params.get("partial_rotary_factor", data.get("partial_rotary_factor", 1.0))))
    return _config(FAMILIES["phi3"], vocab_size=data["vocab_size"], context_length=data["max_position_embeddings"],
                   d_model=d_model, n_layers=data["num_hidden_layers"], n_heads=n_heads,
                   n_kv_heads=data.get("num_key_value_heads") or n_heads, head_dim=head_dim,
                   d_ff=data["intermediate_size"], norm_eps=data.get("rms_norm_eps", 1e-5),
                   activation=_activation(data.get("hidden_act", "silu"), origin),
                   tie_embeddings=data.get("tie_word_embeddings", False), sliding_window=data.get("sliding_window"),
                   rope_dim=rope_dim if rope_dim != head_dim else None, dropout=data.get("resid_pdrop", 0.0),
                   attention_dropout=data.get("attention_dropout", 0.0), **_rope(data, origin))


def _gemma(data: dict[str, Any], origin: str, family: str, pattern: int, **fields: Any) -> Config:
    """What Gemma 2 and 3 share: sizes, the sliding/global layer pattern (config.json's layer_types,
    else every `pattern`-th layer global), the attention scale, the final soft cap."""
    for flag in ("use_bidirectional_attention", "attention_bias"):
        if data.get(flag):
            raise FormatError(f"{origin}: Gemma option {flag} is not supported")
    n_heads, d_model, n_layers = data["num_attention_heads"], data["hidden_size"], data["num_hidden_layers"]
    kinds = data.get("layer_types") or ["sliding_attention" if (i + 1) % pattern else "full_attention"
                                        for i in range(n_layers)]
    if len(kinds) != n_layers or not set(kinds) <= {"sliding_attention", "full_attention"}:
        raise FormatError(f"{origin}: layer_types must name sliding_attention or full_attention for each layer")
    window = data.get("sliding_window")
    sliding = tuple(i for i, kind in enumerate(kinds) if kind == "sliding_attention") if window else ()
    return _config(FAMILIES[family], vocab_size=data["vocab_size"], context_length=data["max_position_embeddings"],
                   d_model=d_model, n_layers=n_layers, n_heads=n_heads,
                   n_kv_heads=data.get("num_key_value_heads") or n_heads,
                   head_dim=data.get("head_dim") or d_model // n_heads, d_ff=data["intermediate_size"],
                   norm_eps=data.get("rms_norm_eps", 1e-6),
                   activation=_activation(data.get("hidden_activation") or data.get("hidden_act")
                                          or "gelu_pytorch_tanh", origin),
                   tie_embeddings=data.get("tie_word_embeddings", True),
                   sliding_window=window if sliding else None,
                   sliding_window_layers=sliding if 0 < len(sliding) < n_layers else None,
                   # the same expressions as transformers, so the numbers agree to the last bit
                   embedding_scale=d_model ** 0.5, attention_scale=data.get("query_pre_attn_scalar", 256) ** -0.5,
                   attention_dropout=data.get("attention_dropout", 0.0), **fields)


def _gemma2(data: dict[str, Any], origin: str) -> Config:
    return _gemma(data, origin, "gemma2", 2, attn_logit_softcap=data.get("attn_logit_softcapping", 50.0),
                  final_logit_softcap=data.get("final_logit_softcapping", 30.0), **_rope(data, origin))


def _gemma3_text(data: dict[str, Any], origin: str) -> Config:
    """Gemma 3: global layers rotate with rope_parameters.full_attention (scaled), sliding ones with
    sliding_attention's base (older files: rope_theta and rope_scaling, rope_local_base_freq)."""
    if data.get("attn_logit_softcapping") is not None:  # transformers' Gemma 3 never applies it
        raise FormatError(f"{origin}: Gemma 3 with attn_logit_softcapping is not supported")
    params = data.get("rope_parameters") or {}
    if "full_attention" in params or "sliding_attention" in params:
        full = {"rope_theta": 1_000_000.0, **(params.get("full_attention") or {})}
        local = {"rope_theta": 10_000.0, **(params.get("sliding_attention") or {})}
    else:
        full = {**(data.get("rope_scaling") or {}), "rope_theta": data.get("rope_theta", 1_000_000.0)}
        local = {"rope_theta": data.get("rope_local_base_freq", 10_000.0)}
    if local.get("rope_type", local.get("type", "default")) != "default":
        raise FormatError(f"{origin}: scaled rotary positions on Gemma 3's sliding layers are not supported")
    config = _gemma(data, origin, "gemma3", data.get("sliding_window_pattern", 6),
                    final_logit_softcap=data.get("final_logit_softcapping"), **_rope({"rope_parameters": full}, origin))
    # Only sliding layers read the local base: without any, leave it unset (no second table).
    return config.replace(rope_local_base=float(local["rope_theta"])) if config.sliding_window else config


# transformers writes a sub-config as its difference from Gemma3TextConfig's defaults, which are these.
_GEMMA3_TEXT_DEFAULTS = dict(vocab_size=262_208, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
                             num_attention_heads=8, num_key_value_heads=4, head_dim=256,
                             max_position_embeddings=131_072, rms_norm_eps=1e-6, query_pre_attn_scalar=256,
                             sliding_window=4096, tie_word_embeddings=True)


def _gemma3_multimodal(data: dict[str, Any], origin: str) -> Config:
    """Gemma 3 with a vision tower: its text model (the vision tower's tensors are skipped)."""
    text = data.get("text_config")
    if not isinstance(text, dict):
        raise FormatError(f"{origin}: a gemma3 config.json without a text_config is not supported")
    if text.get("final_logit_softcapping") is not None:  # transformers' Gemma3ForConditionalGeneration never applies it
        raise FormatError(f"{origin}: Gemma 3 with a vision tower and final_logit_softcapping is not supported")
    return _gemma3_text({**_GEMMA3_TEXT_DEFAULTS, "tie_word_embeddings": data.get("tie_word_embeddings", True),
                         **text}, origin)


@dataclass(frozen=True)
class HFFamily:
    """A Hugging Face model_type: how its config.json becomes a Config, how its tensors are named,
    and (for families whose files differ in heads) which heads the tensors show."""

    read: Callable[[dict[str, Any], str], Config]
    table: NameTable
    heads: Callable[[list[str]], dict[str, Any]] | None = None


# model_type -> family; a new family is one entry here (and its name table).
HF_FAMILIES: dict[str, HFFamily] = {
    "gpt2": HFFamily(_gpt2, HF_GPT2),
    "llama": HFFamily(_llama_like, HF_LLAMA),
    "mistral": HFFamily(_llama_like, HF_LLAMA),
    "qwen2": HFFamily(_llama_like, HF_LLAMA),
    "bert": HFFamily(_bert, HF_BERT, _bert_heads),
    "bart": HFFamily(_seq2seq, HF_BART),
    "mbart": HFFamily(_seq2seq, HF_MBART),
    "marian": HFFamily(_seq2seq, HF_MARIAN),
    "phi3": HFFamily(_phi3, HF_PHI3),
    "gemma2": HFFamily(_gemma2, HF_GEMMA),
    "gemma3_text": HFFamily(_gemma3_text, HF_GEMMA),
    "gemma3": HFFamily(_gemma3_multimodal, HF_GEMMA3_MULTIMODAL),
}


# --- export -------------------------------------------------------------------------------------

def hf_family(config: Config) -> str:
    """The Hugging Face family that computes exactly what this config computes, or an error that
    names the mechanism none of them has."""
    def refuse(why: str) -> None:
        raise FormatError(f"cannot export to a Hugging Face model: {why}")

    unexportable = _unexportable(config)
    if unexportable:
        refuse(f"{unexportable} (exporting it is not implemented)")
    if config.is_encoder_decoder or not config.causal:
        return _family_by_switches(config, ("bart", "mbart", "marian") if config.is_encoder_decoder else ("bert",),
                                   refuse)
    if not config.causal:
        refuse("bidirectional attention (no causal LM family here)")
    if config.norm_placement != "pre" or not config.final_norm:
        refuse("post-norm blocks")
    if config.position == "learned":
        if config.norm != "layernorm" or config.gated_mlp:
            refuse("learned positions with RMSNorm or a gated MLP")
        if config.n_kv_heads != config.n_heads or config.head_dim * config.n_heads != config.d_model:
            refuse("GPT-2 layouts need n_kv_heads == n_heads and head_dim * n_heads == d_model")
        if config.sliding_window is not None:
            refuse("a sliding window on a GPT-2 layout")
        return "gpt2"
    if config.position != "rope":
        refuse(f"{config.position} positions")
    if config.norm != "rmsnorm" or not config.gated_mlp or config.activation != "silu":
        refuse("rotary models need RMSNorm and a SiLU-gated MLP (the Llama layout)")
    if config.bias:
        refuse("biases on the output and MLP projections of a rotary model")
    if config.sliding_window is not None:
        return "mistral" if config.sliding_window_layers is None and not config.qkv_bias else "qwen2"
    return "qwen2" if config.qkv_bias else "llama"


def _unexportable(config: Config) -> str | None:
    """The first mechanism no export family here writes (Phi-3's and Gemma's), or None."""
    checks = (
        (config.rope_dim is not None and config.rope_dim != config.head_dim, "partial rotary embeddings"),
        (config.rope_scaling == "longrope", "longrope rotary scaling"),
        (config.rope_local_base is not None, "a rotary base of their own on sliding layers"),
        (config.attention_scale is not None, "an attention scale other than 1/sqrt(head_dim)"),
        (config.attn_logit_softcap is not None or config.final_logit_softcap is not None, "logit soft-capping"),
        (config.sandwich_norm, "sandwich norms"),
        (config.qk_norm, "QK-norm"),
        (config.embedding_scale != 1.0 and config.causal and not config.is_encoder_decoder,
         "scaled embeddings in a decoder"),
    )
    return next((why for failed, why in checks if failed), None)


# Switches a family leaves to its config.json, beside its sizes.
_FREE = {"activation", "dropout", "attention_dropout", "head", "pooler", "pooling", "normalize_pooled", "n_labels",
         "embedding_scale", "decoder_start_token_id", "token_types", "norm_eps"}


def _family_by_switches(config: Config, candidates: tuple[str, ...], refuse) -> str:
    """The family whose fixed switches this config has (BERT, BART, mBART, Marian)."""
    for family in candidates:
        switches = {k: v for k, v in FAMILIES[family].items() if k not in _FREE}
        if all(getattr(config, k) == v for k, v in switches.items()):
            break
    else:
        refuse(f"no Hugging Face family has this {'encoder-decoder' if config.is_encoder_decoder else 'encoder'}'s "
               f"mechanisms (compare with {', '.join(candidates)})")
    if config.n_kv_heads != config.n_heads or config.head_dim * config.n_heads != config.d_model:
        refuse(f"{family} needs n_kv_heads == n_heads and head_dim * n_heads == d_model")
    if config.sliding_window is not None or config.position not in ("learned", "sinusoidal"):
        refuse(f"{family} has no sliding window or {config.position} positions")
    if config.embedding_scale not in (1.0, math.sqrt(config.d_model)):
        refuse(f"{family} scales embeddings by 1 or sqrt(d_model), not {config.embedding_scale}")
    if family != "bert" and config.norm_eps != 1e-5:
        refuse(f"{family}'s norms use eps 1e-5 (this model: {config.norm_eps})")
    return family


_HF_ACTIVATIONS = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu", "silu": "silu"}


def _encoder_config(config: Config, family: str) -> dict[str, Any]:
    """config.json for BERT, BART, mBART and Marian."""
    act = _HF_ACTIVATIONS[config.activation]
    if family == "bert":
        architecture = {"mlm": "BertForMaskedLM", "classify": "BertForSequenceClassification"}.get(config.head,
                                                                                                 "BertModel")
        labels = {"id2label": {str(i): f"LABEL_{i}" for i in range(config.n_labels)},
                  "label2id": {f"LABEL_{i}": i for i in range(config.n_labels)}} if config.head == "classify" else {}
        return {"model_type": "bert", "architectures": [architecture], **labels,
                "vocab_size": config.vocab_size, "hidden_size": config.d_model, "num_hidden_layers": config.n_layers,
                "num_attention_heads": config.n_heads, "intermediate_size": config.d_ff, "hidden_act": act,
                "max_position_embeddings": config.context_length, "type_vocab_size": config.token_types,
                "layer_norm_eps": config.norm_eps, "hidden_dropout_prob": config.dropout,
                "attention_probs_dropout_prob": config.attention_dropout, "tie_word_embeddings": True}
    architecture = {"bart": "BartForConditionalGeneration", "mbart": "MBartForConditionalGeneration",
                    "marian": "MarianMTModel"}[family]
    data = {"model_type": family, "architectures": [architecture], "is_encoder_decoder": True,
            "vocab_size": config.vocab_size, "d_model": config.d_model, "max_position_embeddings": config.context_length,
            "encoder_layers": config.encoder_layers, "decoder_layers": config.n_layers,
            "encoder_attention_heads": config.n_heads, "decoder_attention_heads": config.n_heads,
            "encoder_ffn_dim": config.d_ff, "decoder_ffn_dim": config.d_ff, "activation_function": act,
            "scale_embedding": config.embedding_scale != 1.0, "dropout": config.dropout,
            "attention_dropout": config.attention_dropout, "activation_dropout": 0.0,
            "decoder_start_token_id": config.decoder_start_token_id, "forced_eos_token_id": None,
            "tie_word_embeddings": True}
    if family == "marian":
        data.update(share_encoder_decoder_embeddings=True, decoder_vocab_size=config.vocab_size)
    return data


def hf_config_from(config: Config, family: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """config.json contents for `family` that transformers reads back as this config."""
    extra = extra or {}
    if family in ("bert", "bart", "mbart", "marian"):
        data = _encoder_config(config, family)
    elif family == "gpt2":
        data = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": config.vocab_size,
                "n_positions": config.context_length, "n_embd": config.d_model, "n_layer": config.n_layers,
                "n_head": config.n_heads, "n_inner": config.d_ff, "layer_norm_epsilon": config.norm_eps,
                "activation_function": {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu",
                                        "silu": "silu"}[config.activation],
                "resid_pdrop": config.dropout, "embd_pdrop": config.dropout, "attn_pdrop": config.attention_dropout,
                "tie_word_embeddings": config.tie_embeddings}
    else:
        architecture = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
                        "qwen2": "Qwen2ForCausalLM"}[family]
        rope: dict[str, Any] = {"rope_type": "default", "rope_theta": config.rope_base}
        if config.rope_scaling == "linear":
            rope.update(rope_type="linear", factor=config.rope_scaling_factor)
        elif config.rope_scaling == "llama3":
            rope.update(rope_type="llama3", factor=config.rope_scaling_factor,
                        low_freq_factor=config.rope_low_freq_factor, high_freq_factor=config.rope_high_freq_factor,
                        original_max_position_embeddings=config.rope_original_context_length)
        data = {"model_type": family, "architectures": [architecture], "vocab_size": config.vocab_size,
                "max_position_embeddings": config.context_length, "hidden_size": config.d_model,
                "num_hidden_layers": config.n_layers, "num_attention_heads": config.n_heads,
                "num_key_value_heads": config.n_kv_heads, "head_dim": config.head_dim,
                "intermediate_size": config.d_ff, "rms_norm_eps": config.norm_eps, "hidden_act": "silu",
                "tie_word_embeddings": config.tie_embeddings, "attention_dropout": config.attention_dropout,
                "rope_parameters": rope, "rope_theta": config.rope_base}
        if family == "llama":
            data.update(attention_bias=False, mlp_bias=False)
        if family == "mistral":
            data["sliding_window"] = config.sliding_window
        if family == "qwen2" and config.sliding_window is not None:
            sliding = set(range(config.n_layers) if config.sliding_window_layers is None
                          else config.sliding_window_layers)
            data.update(use_sliding_window=True, sliding_window=config.sliding_window,
                        layer_types=["sliding_attention" if i in sliding else "full_attention"
                                     for i in range(config.n_layers)])
        elif family == "qwen2":
            data.update(use_sliding_window=False, sliding_window=None)
    return {**data, **extra}
