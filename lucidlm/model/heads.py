"""Heads on the backbone's hidden states (B, T, C): the masked-LM head, BERT's pooler, the
sequence-classification head (and the swap that gives a pretrained model one), and the pooling that
makes one vector per text (sentence embeddings).

The LM head itself lives with the embedding it may share (model/linear.py). The masked-LM head
follows BERT (Devlin et al. 2019; transformers' BertLMPredictionHead): dense -> activation ->
norm -> the tied decoder with a bias of its own. Pooling follows sentence-transformers: the first
token, or the mean or max over real tokens, then optionally L2-normalised.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import Config
from .linear import Linear, LMHead, TokenEmbedding
from .mlp import ACTIVATION_FUNCTIONS
from .norm import make_norm


class MLMHead(nn.Module):
    """Hidden states (B, T, C) -> logits (B, T, V) for masked tokens."""

    def __init__(self, config: Config, embedding: TokenEmbedding) -> None:
        super().__init__()
        self.transform = Linear(config.d_model, config.d_model, bias=True)
        self.act = ACTIVATION_FUNCTIONS[config.activation]
        self.norm = make_norm(config)
        self.decoder = LMHead(config.d_model, config.vocab_size, bias=True,
                              tied_to=embedding if config.tie_embeddings else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.norm(self.act(self.transform(x))))

    def resize(self, n: int) -> None:
        self.decoder.resize(n)


def last_real_token(attention_mask: torch.Tensor | None, T: int, B: int, device: torch.device) -> torch.Tensor:
    """The index (B,) of each row's last real token (mask 1), with padding on either side; the last
    position without a mask. transformers picks the rightmost non-pad token the same way."""
    if attention_mask is None:
        return torch.full((B,), T - 1, dtype=torch.long, device=device)
    positions = torch.arange(T, device=attention_mask.device)  # (T,)
    return (positions * attention_mask.bool()).argmax(dim=-1).to(device)  # (B,): the largest real position


class ClassifierHead(nn.Module):
    """Hidden states (B, T, C) -> one label's logits per text (B, n_labels), from the token
    Config.classify_token names: the first ([CLS]), through the model's pooler where it has one
    (transformers' BertForSequenceClassification), or the last real one (GPT2- and
    LlamaForSequenceClassification's `score`; "Build a Large Language Model (from Scratch)", ch. 6)."""

    def __init__(self, config: Config, pooler: "Pooler | None") -> None:
        super().__init__()
        self.__dict__["pooler"] = pooler  # the model's own, saved under pooler.*: one owner
        self.last = config.classify_token == "last"
        self.drop = nn.Dropout(config.dropout)
        self.classifier = Linear(config.d_model, config.n_labels, bias=config.classifier_bias)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.last:
            B, T, _ = x.shape
            pooled = x[torch.arange(B, device=x.device), last_real_token(attention_mask, T, B, x.device)]  # (B, C)
        else:
            pooled = self.pooler(x) if self.pooler is not None else x[:, 0]  # (B, C)
        return self.classifier(self.drop(pooled))

    def resize(self, n: int) -> None:
        pass  # labels, not tokens: a new token changes nothing here


class Pooler(nn.Module):
    """BERT's pooler: the first token's hidden state through dense + tanh, (B, T, C) -> (B, C)."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.dense = Linear(config.d_model, config.d_model, bias=True)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None, mode: str, normalize: bool) -> torch.Tensor:
    """One vector per row (B, C) from hidden states (B, T, C); padding (mask 0) takes no part."""
    mask = torch.ones(hidden.shape[:2], device=hidden.device) if attention_mask is None else attention_mask
    mask = mask.to(hidden.dtype)[..., None]  # (B, T, 1)
    if mode == "cls":
        vectors = hidden[:, 0]
    elif mode == "mean":
        vectors = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    elif mode == "max":
        vectors = hidden.masked_fill(mask == 0, float("-inf")).amax(dim=1)
    else:
        raise ValueError(f"unknown pooling {mode!r}")
    return nn.functional.normalize(vectors, p=2, dim=-1) if normalize else vectors


def with_classifier_head(model, n_labels: int, labels: dict[int, str] | None = None, seed: int = 0):
    """The model with its head replaced, in place, by a fresh n_labels-class head: on the last real
    token without a bias (transformers' `score`, so the model exports) for a decoder, on the pooled
    first token with a bias (BERT's classifier) for an encoder. labels: class id -> name."""
    config = model.config
    decoder = config.causal
    model.config = config.replace(head="classify", n_labels=n_labels, classify_token="last" if decoder else "first",
                                  classifier_bias=not decoder)
    head = ClassifierHead(model.config, model.pooler)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # GPT-2's N(0, 0.02), as Transformer.init_weights starts every matrix
        head.classifier.weight.copy_(torch.randn(head.classifier.weight.shape, generator=generator) * 0.02)
        if head.classifier.bias is not None:
            head.classifier.bias.zero_()
    model.lm_head = head.to(device=model.device, dtype=model.dtype)
    model.labels = labels
    return model
