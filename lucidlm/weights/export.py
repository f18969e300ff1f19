"""Export any loaded model to a Hugging Face folder that transformers loads and runs with the
same logits: the family is chosen from the Config's mechanisms (hf_config.hf_family), the tensors
are renamed and split by the same name table that loads them."""

from __future__ import annotations

import json
import os
from pathlib import Path

from safetensors.torch import save_file

from ..errors import FormatError
from .checkpoint import atomic_folder, model_state
from .hf_config import HF_FAMILIES, hf_config_from, hf_family
from .translate import to_source


def export_hf(model, tokenizer, directory: str | os.PathLike) -> Path:
    config = model.config
    family = hf_family(config)
    if config.head == "classify":
        _check_classifier(config, family)
    tensors = to_source(HF_FAMILIES[family].table, config, {k: v.cpu() for k, v in model_state(model).items()})
    if family == "bert" and config.head in ("mlm", "classify"):  # a BERT with a head keeps its encoder under "bert."
        tensors = {(name if name.startswith(("cls.", "classifier.")) else f"bert.{name}"): t
                   for name, t in tensors.items()}
    extra = {"dtype": str(model.dtype).removeprefix("torch.")}
    if config.is_encoder_decoder:
        # transformers' defaults (1, or 58100 for Marian) may not be in a small vocabulary, and an
        # ordinary token as pad would be masked out of a source; the end token (which ends every
        # source) is one transformers never masks.
        extra["pad_token_id"] = tokenizer.eos_token_id if tokenizer is not None and \
            tokenizer.eos_token_id is not None else 0
    if tokenizer is not None:
        if tokenizer.bos_token_id is not None:
            extra["bos_token_id"] = tokenizer.bos_token_id
        if tokenizer.eos_token_id is not None:
            extra["eos_token_id"] = tokenizer.eos_token_id
        if tokenizer.pad_token_id is not None:
            extra["pad_token_id"] = tokenizer.pad_token_id
    if config.head == "classify":
        extra.update(_label_fields(config, getattr(model, "labels", None)))
        if "pad_token_id" not in extra and config.causal:
            # transformers' decoder classifiers find each text's end from pad_token_id, and refuse a
            # batch without one; a token that ends no text the model reads is the safe choice
            extra["pad_token_id"] = tokenizer.eos_token_id if tokenizer is not None and \
                tokenizer.eos_token_id is not None else 0
    data = hf_config_from(config, family, extra)
    if config.head == "classify" and config.causal:  # GPT2LMHeadModel -> GPT2ForSequenceClassification
        causal_lm = data["architectures"][0]
        data["architectures"] = [causal_lm.removesuffix("LMHeadModel").removesuffix("ForCausalLM")
                                 + "ForSequenceClassification"]
    with atomic_folder(directory) as tmp:
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(data, indent=2))
        eos = sorted(tokenizer.eos_token_ids) if tokenizer is not None else []
        generation = {"eos_token_id": eos if len(eos) != 1 else eos[0]} if eos else {}
        if config.is_encoder_decoder:
            generation.update(decoder_start_token_id=config.decoder_start_token_id, pad_token_id=extra["pad_token_id"])
        (tmp / "generation_config.json").write_text(json.dumps(generation, indent=2))
        if tokenizer is not None:
            if getattr(tokenizer, "kind", "") == "bpe":
                tokenizer.save_hf(tmp / "tokenizer.json")
                if config.is_encoder_decoder:
                    _source_recipe(tmp, tokenizer, config)
            tokenizer.save(tmp)  # ours too: a character tokenizer has no tokenizer.json equivalent
    return Path(directory)


def _check_classifier(config, family: str) -> None:
    """transformers' classifiers: BERT's reads the (pooled) first token with a bias, the decoders'
    `score` the last real token without one."""
    wanted = ("first", True) if family == "bert" else ("last", False)
    if (config.classify_token, config.classifier_bias) != wanted:
        raise FormatError(f"cannot export to a Hugging Face model: {family}'s classifier reads the {wanted[0]} token "
                          f"{'with' if wanted[1] else 'without'} a bias (this one: the {config.classify_token} token, "
                          f"{'with' if config.classifier_bias else 'without'} a bias)")


def _label_fields(config, labels: dict[int, str] | None) -> dict:
    """id2label and label2id, from the model's label names (LABEL_i where it has none)."""
    names = [str((labels or {}).get(i, f"LABEL_{i}")) for i in range(config.n_labels)]
    return {"id2label": {str(i): name for i, name in enumerate(names)},
            "label2id": {name: i for i, name in enumerate(names)}}


def _source_recipe(folder: Path, tokenizer, config) -> None:
    """An encoder-decoder reads `source </s>` (as --objective seq2seq trained it): the exported
    tokenizer.json appends the end token, pads with it, and knows the context, so
    AutoTokenizer(text) gives the ids lucidlm translate feeds."""
    if tokenizer.eos_token is None:
        return
    end = {"SpecialToken": {"id": tokenizer.eos_token, "type_id": 0}}
    data = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    data["post_processor"] = {
        "type": "TemplateProcessing", "single": [{"Sequence": {"id": "A", "type_id": 0}}, end],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, end, {"Sequence": {"id": "B", "type_id": 0}}, end],
        "special_tokens": {tokenizer.eos_token: {"id": tokenizer.eos_token, "ids": [tokenizer.eos_token_id],
                                                 "tokens": [tokenizer.eos_token]}}}
    (folder / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    settings = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    settings.update(model_max_length=config.context_length, pad_token=tokenizer.eos_token)
    (folder / "tokenizer_config.json").write_text(json.dumps(settings, ensure_ascii=False, indent=2),
                                                  encoding="utf-8")
