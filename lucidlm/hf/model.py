"""HFModel: one lucidlm Transformer behind transformers' model interface.

    outputs = model(**tokenizer(texts, padding=True, return_tensors="pt"), labels=...)
    outputs.logits, outputs.loss, outputs.hidden_states, outputs.attentions
    model.generate(input_ids, max_new_tokens=20); model.resize_token_embeddings(len(tokenizer))

The model computes what lucidlm's Transformer computes; this class only renames. Hidden states and
attention weights come from a probe (lucidlm/model/probe.py), so they cost nothing when not asked
for. Positions follow transformers' forward: 0, 1, 2, ... along each row whatever the padding,
unless position_ids are given (generate counts real tokens only, as transformers' generate does).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import LucidError
from ..model import Transformer, probe
from ..train.loss import IGNORE  # transformers' label too: no loss at this position
from ..weights import export_hf
from .config import generation_defaults, hf_config
from .generate import generate
from .outputs import ModelOutput

# What each Auto class gives back from forward().
TASKS = ("base", "causal-lm", "masked-lm", "seq2seq-lm", "sequence-classification", "text-encoding")


class HFModel(nn.Module):
    """`transformer` is the lucidlm model; `config` its HFConfig; `task` what forward returns."""

    main_input_name = "input_ids"

    def __init__(self, transformer: Transformer, task: str, tokenizer=None, folder: Path | None = None,
                 name_or_path: str = "") -> None:
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}")
        self.transformer = transformer
        self.task = task
        self.name_or_path = name_or_path
        self.config = hf_config(transformer.config, folder, getattr(transformer, "labels", None))
        self.generation_config, self.generation_explicit = generation_defaults(folder, self.config, tokenizer)

    # --- facts ---------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.transformer.device

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.dtype

    def can_generate(self) -> bool:
        return self.task in ("causal-lm", "seq2seq-lm")

    def num_parameters(self, only_trainable: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not only_trainable)

    def get_input_embeddings(self) -> nn.Module:
        return self.transformer.tok_emb

    def get_output_embeddings(self) -> nn.Module | None:
        return self.transformer.lm_head

    # --- forward -------------------------------------------------------------------------------

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, decoder_input_ids: torch.Tensor | None = None,
                decoder_attention_mask: torch.Tensor | None = None, output_hidden_states: bool | None = None,
                output_attentions: bool | None = None, return_dict: bool | None = None,
                inputs_embeds: torch.Tensor | None = None, past_key_values: Any = None,
                use_cache: bool | None = None, **unused: Any) -> ModelOutput:
        if unused:
            raise LucidError(f"unsupported model argument(s): {', '.join(sorted(unused))}")
        if inputs_embeds is not None or past_key_values is not None:
            raise LucidError("inputs_embeds and past_key_values are not supported: pass input_ids "
                             "(lucidlm's generate keeps its own KV cache)")
        if input_ids is None:
            raise LucidError("the model needs input_ids")
        model = self.transformer
        input_ids = torch.as_tensor(input_ids, device=self.device)
        if input_ids.dim() == 1:
            input_ids = input_ids[None]
        if model.encoder is not None:
            return self._seq2seq(input_ids, attention_mask, labels, decoder_input_ids, decoder_attention_mask,
                                 bool(output_hidden_states), bool(output_attentions))
        pad = self.config.get("pad_token_id")
        if self.task == "sequence-classification" and attention_mask is None and pad is not None and model.config.causal:
            attention_mask = (input_ids != pad).long()  # transformers finds each text's end from the pad id
        if position_ids is None:  # transformers' forward: 0..T-1 along every row, padding or not
            position_ids = torch.arange(input_ids.shape[1], device=self.device).expand_as(input_ids)
        base = self.task in ("base", "text-encoding") or model.lm_head is None
        with probe(model, attention="all" if output_attentions else (), hidden=bool(output_hidden_states)) as p:
            arguments = dict(positions=position_ids, token_type_ids=token_type_ids)
            out = model.hidden(input_ids, attention_mask, **arguments) if base else \
                model(input_ids, attention_mask, **arguments)
        extras = dict(  # transformers' last hidden state is after the final norm
            hidden_states=tuple(p.hidden[:-1]) + (model.final_norm(p.hidden[-1]),) if output_hidden_states else None,
            attentions=tuple(p.attention[i] for i in range(len(model.blocks))) if output_attentions else None)
        if base:
            pooled = model.pooler(out) if model.pooler is not None else None
            return ModelOutput(last_hidden_state=out, pooler_output=pooled, **extras)
        return ModelOutput(loss=self._loss(out, labels), logits=out, **extras)

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor | None:
        """transformers' losses: next-token (labels shifted inside), masked-LM (unshifted) and
        classification (cross-entropy; mean squared error for a single output)."""
        if labels is None:
            return None
        labels = torch.as_tensor(labels, device=logits.device)
        if self.task == "causal-lm":
            logits, labels = logits[:, :-1], labels[:, 1:]
        if self.task == "sequence-classification" and logits.shape[-1] == 1:
            return nn.functional.mse_loss(logits.squeeze(-1).float(), labels.float())
        return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                                           ignore_index=IGNORE)

    def _seq2seq(self, input_ids, attention_mask, labels, decoder_input_ids, decoder_attention_mask,
                 output_hidden_states: bool, output_attentions: bool) -> ModelOutput:
        model = self.transformer
        encoded = model.encode_source(input_ids, attention_mask)
        if self.task == "text-encoding":
            return ModelOutput(last_hidden_state=encoded.states)
        if decoder_input_ids is None:
            if labels is None:
                raise LucidError("an encoder-decoder needs decoder_input_ids (or labels to make them from)")
            decoder_input_ids = self._shift_right(torch.as_tensor(labels, device=self.device))
        decoder_input_ids = torch.as_tensor(decoder_input_ids, device=self.device)
        positions = torch.arange(decoder_input_ids.shape[1], device=self.device).expand_as(decoder_input_ids)
        with probe(model, attention="all" if output_attentions else (), hidden=output_hidden_states,
                   cross="all" if output_attentions else ()) as p:
            hidden = model.hidden(decoder_input_ids, decoder_attention_mask, positions=positions, encoder_output=encoded)
        extras = dict(decoder_hidden_states=tuple(p.hidden[:-1]) + (hidden,) if output_hidden_states else None,
                      decoder_attentions=tuple(p.attention[i] for i in range(len(model.blocks))) if output_attentions
                      else None,
                      cross_attentions=tuple(p.cross[i] for i in range(len(model.blocks))) if output_attentions
                      else None,
                      encoder_last_hidden_state=encoded.states)
        if self.task == "base":
            return ModelOutput(last_hidden_state=hidden, **extras)
        logits = model.lm_head(hidden)
        return ModelOutput(loss=self._loss(logits, labels), logits=logits, **extras)

    def _shift_right(self, labels: torch.Tensor) -> torch.Tensor:
        """transformers' shift_tokens_right: the decoder reads the start token, then the labels
        (the -100 positions as padding)."""
        start = self.generation_config.decoder_start_token_id
        pad = self.config.get("pad_token_id") or 0
        shifted = labels.new_full(labels.shape, pad)
        shifted[:, 1:] = labels[:, :-1]
        shifted[:, 0] = start
        return shifted.masked_fill(shifted == IGNORE, pad)

    # --- generation, surgery, files ------------------------------------------------------------

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                 **kwargs: Any) -> torch.Tensor:
        """transformers' generate on lucidlm's engine: greedy, sampling (do_sample, temperature,
        top_k, top_p), beam search (num_beams), repetition_penalty, eos/pad ids, max_new_tokens or
        max_length; the prompt rows as given, then the new tokens, padded with pad_token_id."""
        if not self.can_generate():
            raise LucidError(f"this model ({self.task}) does not generate: load it with AutoModelForCausalLM "
                             f"or AutoModelForSeq2SeqLM")
        return generate(self.transformer, self.generation_config, self.generation_explicit, input_ids, attention_mask,
                        **kwargs)

    def resize_token_embeddings(self, new_num_tokens: int | None = None, pad_to_multiple_of: int | None = None,
                                **unused: Any) -> nn.Module:
        """Grow (or shrink) the vocabulary after tokenizer.add_special_tokens; the old tokens'
        rows are kept, so their logits do not change."""
        n = new_num_tokens if new_num_tokens is not None else self.transformer.config.vocab_size
        if pad_to_multiple_of:
            n = -(-n // pad_to_multiple_of) * pad_to_multiple_of
        self.transformer.resize_token_embeddings(n)
        self.config.update(vocab_size=n, _lucid=self.transformer.config)
        return self.get_input_embeddings()

    def tie_weights(self) -> None:
        pass  # a tied head reads the embedding itself: nothing to re-tie

    def save_pretrained(self, directory: str | os.PathLike, tokenizer=None, **unused: Any) -> None:
        """A Hugging Face folder (config.json, model.safetensors, generation_config.json) that
        transformers and lucidlm load with the same numbers."""
        core = getattr(tokenizer, "tokenizer", tokenizer)
        export_hf(self.transformer, core, directory)

    def __repr__(self) -> str:
        return f"HFModel(task={self.task!r}, name_or_path={self.name_or_path!r},\n  transformer={self.transformer!r})"
