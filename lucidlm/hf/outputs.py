"""What Hugging Face-style calls return: BatchEncoding (a tokenizer's output) and ModelOutput (a
model's), dicts whose keys are also attributes, so notebook code such as `inputs.input_ids`,
`model(**inputs).logits` and `outputs[0]` works unchanged."""

from __future__ import annotations

from typing import Any

import torch


class AttributeDict(dict):
    """A dict whose keys read as attributes too; an integer index reads the values in order."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no {name!r}") from None

    # `model.generation_config.max_new_tokens = 3` must change what generate() reads: the dict itself
    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self[name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no {name!r}") from None

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, (int, slice)):
            return list(self.values())[key]
        return super().__getitem__(key)

    def to_tuple(self) -> tuple:
        return tuple(self.values())


class BatchEncoding(AttributeDict):
    """input_ids, attention_mask (and token_type_ids) from a tokenizer call."""

    def to(self, device: torch.device | str) -> "BatchEncoding":
        """Move every tensor to `device` (a no-op for lists), as `inputs.to(model.device)` expects."""
        for key, value in self.items():
            if isinstance(value, torch.Tensor):
                self[key] = value.to(device)
        return self


# The fields transformers' model outputs may have; one not computed reads as None.
OUTPUT_FIELDS = frozenset({"loss", "logits", "hidden_states", "attentions", "last_hidden_state", "pooler_output",
                           "past_key_values", "decoder_hidden_states", "decoder_attentions", "cross_attentions",
                           "encoder_last_hidden_state", "encoder_hidden_states", "encoder_attentions"})


class ModelOutput(AttributeDict):
    """logits / last_hidden_state, loss, hidden_states, attentions: only the ones computed, in
    transformers' order, so `outputs[0]` is the loss when labels were given and the logits otherwise."""

    def __init__(self, **fields: Any) -> None:
        super().__init__((k, v) for k, v in fields.items() if v is not None)

    def __getattr__(self, name: str) -> Any:
        if name in self or name not in OUTPUT_FIELDS:  # a typo (outputs.logit) is an error, as in transformers
            return super().__getattr__(name)
        return None
