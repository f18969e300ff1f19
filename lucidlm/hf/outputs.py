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


class ModelOutput(AttributeDict):
    """logits / last_hidden_state, loss, hidden_states, attentions: only the ones computed, in
    transformers' order, so `outputs[0]` is the loss when labels were given and the logits otherwise."""

    def __init__(self, **fields: Any) -> None:
        super().__init__((k, v) for k, v in fields.items() if v is not None)

    def __getattr__(self, name: str) -> Any:
        return self.get(name)  # as in transformers, a field not computed reads as None
