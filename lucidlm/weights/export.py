"""Export any loaded model to a Hugging Face folder that transformers loads and runs with the
same logits: the family is chosen from the Config's mechanisms (hf_config.hf_family), the tensors
are renamed and split by the same name table that loads them."""

from __future__ import annotations

import json
import os
from pathlib import Path

from safetensors.torch import save_file

from .checkpoint import atomic_folder, model_state
from .hf_config import HF_FAMILIES, hf_config_from, hf_family
from .translate import to_source


def export_hf(model, tokenizer, directory: str | os.PathLike) -> Path:
    config = model.config
    family = hf_family(config)
    tensors = to_source(HF_FAMILIES[family].table, config, {k: v.cpu() for k, v in model_state(model).items()})
    extra = {"dtype": str(model.dtype).removeprefix("torch.")}
    if tokenizer is not None:
        if tokenizer.bos_token_id is not None:
            extra["bos_token_id"] = tokenizer.bos_token_id
        if tokenizer.eos_token_id is not None:
            extra["eos_token_id"] = tokenizer.eos_token_id
        if tokenizer.pad_token_id is not None:
            extra["pad_token_id"] = tokenizer.pad_token_id
    with atomic_folder(directory) as tmp:
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(hf_config_from(config, family, extra), indent=2))
        eos = sorted(tokenizer.eos_token_ids) if tokenizer is not None else []
        generation = {"eos_token_id": eos if len(eos) != 1 else eos[0]} if eos else {}
        (tmp / "generation_config.json").write_text(json.dumps(generation, indent=2))
        if tokenizer is not None:
            if getattr(tokenizer, "kind", "") == "bpe":
                tokenizer.save_hf(tmp / "tokenizer.json")
            tokenizer.save(tmp)  # ours too: a character tokenizer has no tokenizer.json equivalent
    return Path(directory)
