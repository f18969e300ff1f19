"""pipeline(task, model=..., tokenizer=...): transformers' pipelines on lucidlm models, returning
transformers' output structures.

    generator = pipeline("text-generation", model=PATH, max_new_tokens=50, do_sample=False)
    generator([{"role": "user", "content": "Hi"}])   # [{'generated_text': [..., {'role': 'assistant', ...}]}]
    pipeline("fill-mask", model=BERT)("Paris is the [MASK] of France.")
    pipeline("feature-extraction", model=MINILM)("A sentence.")           # [[[...C floats] x T]]
    pipeline("text-classification", model=CLASSIFIER)("Great film")       # [{'label': ..., 'score': ...}]
    pipeline("translation", model=TRANSLATOR)("Hello")                    # [{'translation_text': ...}]

Each input runs alone (no padding between inputs), as transformers' pipelines do by default.
transformers 5 has no translation or text2text pipeline any more; these follow transformers 4's
output structures and lucidlm's translate (each source ends with the end token).
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import torch

from ..errors import LucidError
from ..model import Transformer
from ..weights import default_model_path
from .auto import (AutoModel, AutoModelBase, AutoModelForCausalLM, AutoModelForMaskedLM, AutoModelForSeq2SeqLM,
                   AutoModelForSequenceClassification)
from .model import HFModel
from .generate import KNOWN as GENERATE_ARGUMENTS, token_ids
from .tokenizer import AutoTokenizer, HFTokenizer, as_hf_tokenizer

# transformers 5's text-generation pipeline defaults, under the model's own generation_config.json
TEXT_GENERATION_DEFAULTS = dict(max_new_tokens=256, do_sample=True, temperature=0.7)
LOADING = ("torch_dtype", "dtype", "device_map", "attn_implementation", "trust_remote_code", "gguf_file",
           "revision", "token")


class Pipeline:
    """A model and its tokenizer, called on one input or a list of inputs."""

    auto: type[AutoModelBase] = AutoModel
    task = ""

    options: tuple[str, ...] = ()  # the keyword arguments one() takes

    def __init__(self, model: HFModel, tokenizer: HFTokenizer, **defaults: Any) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.defaults = self.checked(defaults)

    def checked(self, options: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise LucidError(f"unsupported {self.task} pipeline argument(s): {', '.join(unknown)}")
        return options

    def __call__(self, inputs: Any, **kwargs: Any):
        options = {**self.defaults, **self.checked(kwargs)}
        if isinstance(inputs, (list, tuple)) and not self.is_one(inputs):
            return [self.one(x, **options) for x in inputs]
        return self.one(inputs, **options)

    def is_one(self, inputs: Sequence[Any]) -> bool:
        return False

    def one(self, text: Any, **options: Any):
        raise NotImplementedError

    def encode(self, text: str, **tokenizer_options: Any) -> dict[str, torch.Tensor]:
        if not isinstance(text, str):
            raise LucidError(f"the {self.task} pipeline takes text, got {type(text).__name__}")
        return self.tokenizer(text, return_tensors="pt", **tokenizer_options).to(self.model.device)


class TextGenerationPipeline(Pipeline):
    auto, task = AutoModelForCausalLM, "text-generation"
    options = ("return_full_text", "skip_special_tokens", "add_special_tokens", *GENERATE_ARGUMENTS)

    def is_one(self, inputs) -> bool:  # a chat is a list of messages
        return bool(inputs) and all(isinstance(m, dict) for m in inputs)

    def one(self, prompt: str | list[dict[str, Any]], return_full_text: bool = True, skip_special_tokens: bool = True,
            add_special_tokens: bool | None = None, **generate_options: Any) -> list[dict[str, Any]]:
        chat, prefill = not isinstance(prompt, str), False
        if chat:
            if not self.is_one(prompt) or any("role" not in m or "content" not in m for m in prompt):
                raise LucidError("a chat is a list of {'role': ..., 'content': ...} messages")
            # as transformers: a chat that ends with the assistant's words is continued (a prefill)
            prefill = prompt[-1]["role"] == "assistant"
            inputs = self.tokenizer.apply_chat_template(list(prompt), add_generation_prompt=not prefill,
                                                        continue_final_message=prefill, return_tensors="pt")
        else:
            inputs = self.encode(prompt, **({} if add_special_tokens is None else
                                            {"add_special_tokens": add_special_tokens}))
        inputs = inputs.to(self.model.device)
        options = {k: v for k, v in TEXT_GENERATION_DEFAULTS.items() if k not in self.model.generation_explicit}
        if "max_length" in generate_options:  # the caller's limit, not the pipeline's default
            options.pop("max_new_tokens", None)
        options.update(generate_options)
        out = self.model.generate(inputs["input_ids"], inputs["attention_mask"], **options)
        start = inputs["input_ids"].shape[1]
        records = []
        for row in out:
            text = self.tokenizer.decode(self._real(row[start:]), skip_special_tokens=skip_special_tokens)
            if return_full_text and chat and prefill:
                last = dict(prompt[-1], content=prompt[-1]["content"] + text)
                text = list(prompt[:-1]) + [last]
            elif return_full_text:
                text = list(prompt) + [{"role": "assistant", "content": text}] if chat else prompt + text
            records.append({"generated_text": text})
        return records

    def _real(self, new: torch.Tensor) -> list[int]:
        """The generated tokens up to the first end token (what follows is padding)."""
        out, eos = [], set(token_ids(self.model.generation_config.eos_token_id))
        for token in new.tolist():
            out.append(token)
            if token in eos:
                break
        return out


class FillMaskPipeline(Pipeline):
    auto, task = AutoModelForMaskedLM, "fill-mask"
    options = ("top_k", "targets")

    def one(self, text: str, top_k: int = 5, targets: Sequence[str] | None = None):
        if targets is not None:
            raise LucidError("fill-mask targets are not supported: read the top_k guesses instead")
        inputs = self.encode(text, truncation=True)
        ids = inputs["input_ids"][0]
        mask_id = self.tokenizer.mask_token_id
        where = (ids == mask_id).nonzero().flatten()
        if mask_id is None or len(where) == 0:
            raise LucidError(f"the text has no {self.tokenizer.mask_token}: write it where a word should be guessed")
        with torch.no_grad():
            logits = self.model(**inputs).logits[0, where]  # (M, V)
        values, tokens = logits.float().softmax(dim=-1).topk(top_k)
        single = len(where) == 1
        pad = self.tokenizer.pad_token_id
        result = []
        for i, (scores, guesses) in enumerate(zip(values.tolist(), tokens.tolist())):
            row = []
            for score, token in zip(scores, guesses):
                filled = ids.clone()
                filled[where[i]] = token
                kept = [t for t in filled.tolist() if t != pad]
                # one mask: the sentence without special tokens; several: the other masks stay visible
                row.append({"score": score, "token": token, "token_str": self.tokenizer.decode([token]),
                            "sequence": self.tokenizer.decode(kept, skip_special_tokens=single)})
            result.append(row)
        return result[0] if single else result


class FeatureExtractionPipeline(Pipeline):
    auto, task = AutoModel, "feature-extraction"
    options = ("return_tensors", "truncation")

    def one(self, text: str, return_tensors: bool = False, truncation: bool = True):
        inputs = self.encode(text, truncation=truncation)
        with torch.no_grad():
            hidden = self.model(**inputs)[0]  # (1, T, C); a model with a head: its logits, as in transformers
        return hidden if return_tensors else hidden.tolist()


class TextClassificationPipeline(Pipeline):
    auto, task = AutoModelForSequenceClassification, "text-classification"
    options = ("top_k", "function_to_apply")

    def __call__(self, inputs: Any, **kwargs: Any):
        out = super().__call__(inputs, **kwargs)
        # transformers: one text gives [best] (a list of one), a list of texts one best per text
        top_k = {**self.defaults, **kwargs}.get("top_k", 1)
        if isinstance(inputs, str):
            return out if top_k != 1 else [out]
        return out

    def one(self, text: str, top_k: int | None = 1, function_to_apply: str | None = None):
        inputs = self.encode(text, truncation=True)
        with torch.no_grad():
            logits = self.model(**inputs).logits[0].float()  # (n_labels,)
        how = function_to_apply or ("sigmoid" if logits.numel() == 1 else "softmax")
        scores = {"softmax": lambda x: x.softmax(-1), "sigmoid": torch.sigmoid, "none": lambda x: x}.get(how)
        if scores is None:
            raise LucidError(f"function_to_apply={how!r}: choose softmax, sigmoid or none")
        names = self.model.config.get("id2label") or {}
        ranked = sorted(((names.get(i, f"LABEL_{i}"), s) for i, s in enumerate(scores(logits).tolist())),
                        key=lambda pair: -pair[1])
        ranked = [{"label": label, "score": score} for label, score in ranked]
        return ranked[0] if top_k == 1 else ranked[:top_k] if top_k else ranked


class Text2TextPipeline(Pipeline):
    auto, task = AutoModelForSeq2SeqLM, "text2text-generation"
    key = "generated_text"
    options = ("skip_special_tokens", *GENERATE_ARGUMENTS)

    def one(self, text: str, skip_special_tokens: bool = True, **generate_options: Any) -> list[dict[str, str]]:
        if not isinstance(text, str):
            raise LucidError(f"the {self.task} pipeline takes text, got {type(text).__name__}")
        core = self.tokenizer.tokenizer
        eos = self.tokenizer.eos_token_id
        if eos is None:
            raise LucidError("this tokenizer has no end token, which ends every source")
        ids = torch.tensor([core.encode_ordinary(text) + [eos]], device=self.model.device)
        out = self.model.generate(ids, **generate_options)
        return [{self.key: self.tokenizer.decode(row[1:].tolist(), skip_special_tokens=skip_special_tokens).strip()}
                for row in out]


class TranslationPipeline(Text2TextPipeline):
    task, key = "translation", "translation_text"


PIPELINES: dict[str, type[Pipeline]] = {
    "text-generation": TextGenerationPipeline, "fill-mask": FillMaskPipeline,
    "feature-extraction": FeatureExtractionPipeline, "text-classification": TextClassificationPipeline,
    "sentiment-analysis": TextClassificationPipeline, "translation": TranslationPipeline,
    "text2text-generation": Text2TextPipeline,
}


def pipeline(task: str, model: Any = None, tokenizer: Any = None, device: Any = None, **kwargs: Any) -> Pipeline:
    """transformers' pipeline(): `model` is a path, a hub id, an HFModel from an Auto class or a
    model from lucidlm.load(); `tokenizer` likewise (default: the model's own). The other keyword
    arguments are loading arguments (dtype, device_map, ...) or defaults for every call
    (max_new_tokens, do_sample, return_full_text, top_k, ...). text-generation with no model runs
    lucidlm's default model."""
    kind = PIPELINES.get("translation" if str(task).startswith("translation_") else task)
    if kind is None:
        raise LucidError(f"unknown pipeline task {task!r} (lucidlm has: {', '.join(PIPELINES)})")
    loading = {k: kwargs.pop(k) for k in LOADING if k in kwargs}
    loading.update(kwargs.pop("model_kwargs", None) or {})  # transformers' from_pretrained arguments
    kwargs.pop("batch_size", None)  # each input runs alone: transformers' batch_size=1 results
    if model is None:
        if kind is not TextGenerationPipeline:
            raise LucidError(f"the {task} pipeline needs a model (a path or a hub id)")
        model = str(default_model_path())
    if isinstance(model, (str, os.PathLike)):
        where = model
        model = kind.auto.from_pretrained(model, **loading)
        if tokenizer is None:
            where_in = {k: loading[k] for k in ("gguf_file", "subfolder", "revision") if k in loading}
            tokenizer = AutoTokenizer.from_pretrained(where, **where_in)
    elif isinstance(model, Transformer):  # from lucidlm.load()
        core = getattr(model, "tokenizer", None)
        model = HFModel(model, kind.auto.task, core)
        tokenizer = tokenizer if tokenizer is not None else core
    elif not isinstance(model, HFModel):
        raise LucidError(f"pipeline's model is a path, a hub id or a loaded model, got {type(model).__name__}")
    elif loading:
        raise LucidError(f"{', '.join(loading)}: loading arguments apply when the model is a path")
    if isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = AutoTokenizer.from_pretrained(tokenizer)
    if tokenizer is None:
        raise LucidError("the pipeline needs the model's tokenizer: pass tokenizer=")
    if device is not None:
        model.to(_device(device))
    return kind(model, as_hf_tokenizer(tokenizer), **kwargs)


def _device(device: Any) -> torch.device:
    if isinstance(device, int):
        return torch.device("cpu" if device < 0 else f"cuda:{device}")
    return torch.device(device)
