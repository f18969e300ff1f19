"""Weight-name tables: how each source layout's tensors become ours. Data, not code.

A row maps one source tensor to one of our tensors, or to one part of a fused tensor of ours (our
attention has one qkv matrix and a gated MLP one [gate | up] matrix, parts stacked as output rows),
with transforms applied in order: "transpose" (our matrices have nn.Linear's (out, in) layout, as
most files do; GPT-2's Conv1D stores (in, out)), "unpermute_q"/"unpermute_k" (undo the row order
llama.cpp gives Llama's query/key weights for its interleaved rotary layout), "drop_2_rows" (BART
looks position p up at row p + 2), "flatten" (BART's logits bias is stored (1, V)) and "add_one"
(Gemma's norms scale by 1 + w; ours by w).
A source name holds {i} for a (decoder) layer index and {e} for an encoder layer index.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    source: str  # may contain {i}, the layer index
    target: str
    part: str | None = None  # "q", "k", "v" of attn.qkv; "gate", "up" of mlp.up
    transform: tuple[str, ...] = ()
    zero_if_absent: bool = False  # the source layout always has it; export zeros if we have none


@dataclass(frozen=True)
class NameTable:
    name: str
    rows: tuple[Row, ...]
    ignore: tuple[str, ...] = ()  # regexes of source tensors that carry no weights (mask buffers)
    optional_prefix: str = ""  # sources may be saved with or without it (GPT2Model vs GPT2LMHeadModel)

    def expand(self, n_layers: int, encoder_layers: int = 0) -> dict[str, Row]:
        """source name -> Row with {i} (or {e}, in an encoder) filled in, for every layer."""
        out = {}
        for row in self.rows:
            key, count = ("{i}", n_layers) if "{i}" in row.source else ("{e}", encoder_layers)
            layers = range(count) if key in row.source else [None]
            for i in layers:
                fill = (lambda s: s.replace(key, str(i))) if i is not None else (lambda s: s)
                out[fill(row.source)] = Row(fill(row.source), fill(row.target), row.part, row.transform,
                                            row.zero_if_absent)
        return out

    def spellings(self, source: str) -> tuple[str, ...]:
        """The ways a source name may appear in the rows: as it is, with the optional prefix added
        (the rows carry it, the file does not) or removed (the file carries it, the rows do not)."""
        prefix = self.optional_prefix
        if not prefix:
            return (source,)
        return (source, prefix + source, source.removeprefix(prefix))

    def ignored(self, source: str) -> bool:
        return any(re.fullmatch(p, source) for p in self.ignore)


CONV1D = ("transpose",)  # GPT-2's Conv1D keeps its matrices (in, out)


def _rows(*specs) -> tuple[Row, ...]:
    return tuple(Row(*spec) if isinstance(spec, tuple) else spec for spec in specs)


_GPT2_BIAS = dict(zero_if_absent=True)

HF_GPT2 = NameTable(
    "Hugging Face GPT-2",
    _rows(
        ("transformer.wte.weight", "tok_emb.weight"),
        ("transformer.wpe.weight", "pos_emb.weight"),
        ("transformer.h.{i}.ln_1.weight", "blocks.{i}.attn_norm.weight"),
        Row("transformer.h.{i}.ln_1.bias", "blocks.{i}.attn_norm.bias", **_GPT2_BIAS),
        ("transformer.h.{i}.attn.c_attn.weight", "blocks.{i}.attn.qkv.weight", None, CONV1D),
        Row("transformer.h.{i}.attn.c_attn.bias", "blocks.{i}.attn.qkv.bias", **_GPT2_BIAS),
        ("transformer.h.{i}.attn.c_proj.weight", "blocks.{i}.attn.out.weight", None, CONV1D),
        Row("transformer.h.{i}.attn.c_proj.bias", "blocks.{i}.attn.out.bias", **_GPT2_BIAS),
        ("transformer.h.{i}.ln_2.weight", "blocks.{i}.mlp_norm.weight"),
        Row("transformer.h.{i}.ln_2.bias", "blocks.{i}.mlp_norm.bias", **_GPT2_BIAS),
        ("transformer.h.{i}.mlp.c_fc.weight", "blocks.{i}.mlp.up.weight", None, CONV1D),
        Row("transformer.h.{i}.mlp.c_fc.bias", "blocks.{i}.mlp.up.bias", **_GPT2_BIAS),
        ("transformer.h.{i}.mlp.c_proj.weight", "blocks.{i}.mlp.down.weight", None, CONV1D),
        Row("transformer.h.{i}.mlp.c_proj.bias", "blocks.{i}.mlp.down.bias", **_GPT2_BIAS),
        ("transformer.ln_f.weight", "final_norm.weight"),
        Row("transformer.ln_f.bias", "final_norm.bias", **_GPT2_BIAS),
        ("lm_head.weight", "lm_head.weight"),
        ("score.weight", "lm_head.classifier.weight"),  # GPT2ForSequenceClassification
    ),
    ignore=(r"(transformer\.)?h\.\d+\.attn\.(masked_)?bias",),
    optional_prefix="transformer.",
)

# Llama, Mistral and Qwen2 share one layout; Qwen2 adds query/key/value biases.
HF_LLAMA = NameTable(
    "Hugging Face Llama/Mistral/Qwen2",
    _rows(
        ("model.embed_tokens.weight", "tok_emb.weight"),
        ("model.layers.{i}.input_layernorm.weight", "blocks.{i}.attn_norm.weight"),
        ("model.layers.{i}.self_attn.q_proj.weight", "blocks.{i}.attn.qkv.weight", "q"),
        ("model.layers.{i}.self_attn.k_proj.weight", "blocks.{i}.attn.qkv.weight", "k"),
        ("model.layers.{i}.self_attn.v_proj.weight", "blocks.{i}.attn.qkv.weight", "v"),
        ("model.layers.{i}.self_attn.q_proj.bias", "blocks.{i}.attn.qkv.bias", "q"),
        ("model.layers.{i}.self_attn.k_proj.bias", "blocks.{i}.attn.qkv.bias", "k"),
        ("model.layers.{i}.self_attn.v_proj.bias", "blocks.{i}.attn.qkv.bias", "v"),
        ("model.layers.{i}.self_attn.o_proj.weight", "blocks.{i}.attn.out.weight"),
        ("model.layers.{i}.self_attn.o_proj.bias", "blocks.{i}.attn.out.bias"),
        ("model.layers.{i}.post_attention_layernorm.weight", "blocks.{i}.mlp_norm.weight"),
        ("model.layers.{i}.mlp.gate_proj.weight", "blocks.{i}.mlp.up.weight", "gate"),
        ("model.layers.{i}.mlp.up_proj.weight", "blocks.{i}.mlp.up.weight", "up"),
        ("model.layers.{i}.mlp.down_proj.weight", "blocks.{i}.mlp.down.weight"),
        ("model.layers.{i}.mlp.gate_proj.bias", "blocks.{i}.mlp.up.bias", "gate"),
        ("model.layers.{i}.mlp.up_proj.bias", "blocks.{i}.mlp.up.bias", "up"),
        ("model.layers.{i}.mlp.down_proj.bias", "blocks.{i}.mlp.down.bias"),
        ("model.norm.weight", "final_norm.weight"),
        ("lm_head.weight", "lm_head.weight"),
        ("score.weight", "lm_head.classifier.weight"),  # LlamaForSequenceClassification (and Mistral's, Qwen2's)
    ),
    ignore=(r".*rotary_emb\.inv_freq",),
)


def _gguf_rows(q_order: tuple[str, ...], k_order: tuple[str, ...]) -> tuple[Row, ...]:
    """llama.cpp stores matrices (out, in), as numpy shapes read them: our layout."""
    return _rows(
        ("token_embd.weight", "tok_emb.weight"),
        ("blk.{i}.attn_norm.weight", "blocks.{i}.attn_norm.weight"),
        ("blk.{i}.attn_q.weight", "blocks.{i}.attn.qkv.weight", "q", q_order),
        ("blk.{i}.attn_k.weight", "blocks.{i}.attn.qkv.weight", "k", k_order),
        ("blk.{i}.attn_v.weight", "blocks.{i}.attn.qkv.weight", "v"),
        ("blk.{i}.attn_q.bias", "blocks.{i}.attn.qkv.bias", "q", q_order),
        ("blk.{i}.attn_k.bias", "blocks.{i}.attn.qkv.bias", "k", k_order),
        ("blk.{i}.attn_v.bias", "blocks.{i}.attn.qkv.bias", "v"),
        ("blk.{i}.attn_output.weight", "blocks.{i}.attn.out.weight"),
        ("blk.{i}.ffn_norm.weight", "blocks.{i}.mlp_norm.weight"),
        ("blk.{i}.ffn_gate.weight", "blocks.{i}.mlp.up.weight", "gate"),
        ("blk.{i}.ffn_up.weight", "blocks.{i}.mlp.up.weight", "up"),
        ("blk.{i}.ffn_down.weight", "blocks.{i}.mlp.down.weight"),
        ("output_norm.weight", "final_norm.weight"),
        ("output.weight", "lm_head.weight"),
    )


# llama.cpp stores Llama's q/k rows permuted for its interleaved rotary kernel; Qwen2 uses the
# "neox" (half-split) rotary layout, which is ours, so its rows are stored as they are.
GGUF_LLAMA = NameTable("GGUF llama", _gguf_rows(("unpermute_q",), ("unpermute_k",)))
GGUF_QWEN2 = NameTable("GGUF qwen2", _gguf_rows((), ()))

# Phi-3 stores q|k|v and gate|up already fused, in our row order; its rotary layout is ours, so
# llama.cpp keeps the rows as they are (attn_qkv, and ffn_up holding gate|up).
HF_PHI3 = NameTable(
    "Hugging Face Phi-3",
    _rows(
        ("model.embed_tokens.weight", "tok_emb.weight"),
        ("model.layers.{i}.input_layernorm.weight", "blocks.{i}.attn_norm.weight"),
        ("model.layers.{i}.self_attn.qkv_proj.weight", "blocks.{i}.attn.qkv.weight"),
        ("model.layers.{i}.self_attn.o_proj.weight", "blocks.{i}.attn.out.weight"),
        ("model.layers.{i}.post_attention_layernorm.weight", "blocks.{i}.mlp_norm.weight"),
        ("model.layers.{i}.mlp.gate_up_proj.weight", "blocks.{i}.mlp.up.weight"),
        ("model.layers.{i}.mlp.down_proj.weight", "blocks.{i}.mlp.down.weight"),
        ("model.norm.weight", "final_norm.weight"),
        ("lm_head.weight", "lm_head.weight"),
    ),
    ignore=(r".*rotary_emb\.inv_freq",),
)
GGUF_PHI3 = NameTable(
    "GGUF phi3",
    _rows(
        ("token_embd.weight", "tok_emb.weight"),
        ("blk.{i}.attn_norm.weight", "blocks.{i}.attn_norm.weight"),
        ("blk.{i}.attn_qkv.weight", "blocks.{i}.attn.qkv.weight"),
        ("blk.{i}.attn_output.weight", "blocks.{i}.attn.out.weight"),
        ("blk.{i}.ffn_norm.weight", "blocks.{i}.mlp_norm.weight"),
        ("blk.{i}.ffn_up.weight", "blocks.{i}.mlp.up.weight"),
        ("blk.{i}.ffn_down.weight", "blocks.{i}.mlp.down.weight"),
        ("output_norm.weight", "final_norm.weight"),
        ("output.weight", "lm_head.weight"),
    ),
)


def _gemma_rows(prefix: str) -> tuple[Row, ...]:
    """Gemma 2 and 3 under `prefix`: separate q/k/v and gate/up projections, four norms per layer
    (input, post-attention, pre- and post-feedforward), Gemma 3's per-head q/k norms, every norm
    scaling by 1 + w."""
    layer, norm = f"{prefix}layers.{{i}}", ("add_one",)
    return _rows(
        (f"{prefix}embed_tokens.weight", "tok_emb.weight"),
        *[(f"{layer}.self_attn.{part}_proj.weight", "blocks.{i}.attn.qkv.weight", part) for part in ("q", "k", "v")],
        (f"{layer}.self_attn.o_proj.weight", "blocks.{i}.attn.out.weight"),
        *[(f"{layer}.self_attn.{part}_norm.weight", f"blocks.{{i}}.attn.{part}_norm.weight", None, norm)
          for part in ("q", "k")],
        *[(f"{layer}.{source}.weight", f"blocks.{{i}}.{target}.weight", None, norm)
          for source, target in (("input_layernorm", "attn_norm"), ("post_attention_layernorm", "attn_post_norm"),
                                 ("pre_feedforward_layernorm", "mlp_norm"),
                                 ("post_feedforward_layernorm", "mlp_post_norm"))],
        *[(f"{layer}.mlp.{part}_proj.weight", "blocks.{i}.mlp.up.weight", part) for part in ("gate", "up")],
        (f"{layer}.mlp.down_proj.weight", "blocks.{i}.mlp.down.weight"),
        (f"{prefix}norm.weight", "final_norm.weight", None, norm),
    )


HF_GEMMA = NameTable("Hugging Face Gemma 2/3", _gemma_rows("model.") + _rows(("lm_head.weight", "lm_head.weight")),
                     ignore=(r".*rotary_emb\..*inv_freq",))
# Gemma 3 with its vision tower (model_type "gemma3"): the text model's tensors, as transformers 5
# saves them (model.language_model.*) or as the original files name them (language_model.model.*);
# the vision tower and its projector are not a text model's.
HF_GEMMA3_MULTIMODAL = NameTable(
    "Hugging Face Gemma 3 (text model of)",
    _gemma_rows("model.language_model.") + _gemma_rows("language_model.model.")
    + _rows(("lm_head.weight", "lm_head.weight"), ("language_model.lm_head.weight", "lm_head.weight")),
    ignore=(r"(model\.)?(vision_tower|multi_modal_projector)\..*", r".*rotary_emb\..*inv_freq"),
)
GGUF_GPT2 = NameTable(
    "GGUF gpt2",
    _rows(
        ("token_embd.weight", "tok_emb.weight"),
        ("position_embd.weight", "pos_emb.weight"),
        ("blk.{i}.attn_norm.weight", "blocks.{i}.attn_norm.weight"),
        ("blk.{i}.attn_norm.bias", "blocks.{i}.attn_norm.bias"),
        ("blk.{i}.attn_qkv.weight", "blocks.{i}.attn.qkv.weight"),
        ("blk.{i}.attn_qkv.bias", "blocks.{i}.attn.qkv.bias"),
        ("blk.{i}.attn_output.weight", "blocks.{i}.attn.out.weight"),
        ("blk.{i}.attn_output.bias", "blocks.{i}.attn.out.bias"),
        ("blk.{i}.ffn_norm.weight", "blocks.{i}.mlp_norm.weight"),
        ("blk.{i}.ffn_norm.bias", "blocks.{i}.mlp_norm.bias"),
        ("blk.{i}.ffn_up.weight", "blocks.{i}.mlp.up.weight"),
        ("blk.{i}.ffn_up.bias", "blocks.{i}.mlp.up.bias"),
        ("blk.{i}.ffn_down.weight", "blocks.{i}.mlp.down.weight"),
        ("blk.{i}.ffn_down.bias", "blocks.{i}.mlp.down.bias"),
        ("output_norm.weight", "final_norm.weight"),
        ("output_norm.bias", "final_norm.bias"),
        ("output.weight", "lm_head.weight"),
    ),
)

# BERT: separate query/key/value (fused into our qkv), post-norm blocks, the masked-LM head's
# transform and bias (its decoder is the word embedding), the pooler. BertForMaskedLM prefixes
# the encoder's names with "bert."; BertModel does not.
HF_BERT = NameTable(
    "Hugging Face BERT",
    _rows(
        ("embeddings.word_embeddings.weight", "tok_emb.weight"),
        ("embeddings.position_embeddings.weight", "pos_emb.weight"),
        ("embeddings.token_type_embeddings.weight", "type_emb.weight"),
        ("embeddings.LayerNorm.weight", "emb_norm.weight"),
        ("embeddings.LayerNorm.bias", "emb_norm.bias"),
        *[(f"encoder.layer.{{i}}.attention.self.{name}.{kind}", f"blocks.{{i}}.attn.qkv.{kind}", part)
          for name, part in (("query", "q"), ("key", "k"), ("value", "v")) for kind in ("weight", "bias")],
        ("encoder.layer.{i}.attention.output.dense.weight", "blocks.{i}.attn.out.weight"),
        ("encoder.layer.{i}.attention.output.dense.bias", "blocks.{i}.attn.out.bias"),
        ("encoder.layer.{i}.attention.output.LayerNorm.weight", "blocks.{i}.attn_norm.weight"),
        ("encoder.layer.{i}.attention.output.LayerNorm.bias", "blocks.{i}.attn_norm.bias"),
        ("encoder.layer.{i}.intermediate.dense.weight", "blocks.{i}.mlp.up.weight"),
        ("encoder.layer.{i}.intermediate.dense.bias", "blocks.{i}.mlp.up.bias"),
        ("encoder.layer.{i}.output.dense.weight", "blocks.{i}.mlp.down.weight"),
        ("encoder.layer.{i}.output.dense.bias", "blocks.{i}.mlp.down.bias"),
        ("encoder.layer.{i}.output.LayerNorm.weight", "blocks.{i}.mlp_norm.weight"),
        ("encoder.layer.{i}.output.LayerNorm.bias", "blocks.{i}.mlp_norm.bias"),
        ("pooler.dense.weight", "pooler.dense.weight"),
        ("pooler.dense.bias", "pooler.dense.bias"),
        ("cls.predictions.transform.dense.weight", "lm_head.transform.weight"),
        ("cls.predictions.transform.dense.bias", "lm_head.transform.bias"),
        ("cls.predictions.transform.LayerNorm.weight", "lm_head.norm.weight"),
        ("cls.predictions.transform.LayerNorm.bias", "lm_head.norm.bias"),
        ("cls.predictions.bias", "lm_head.decoder.bias"),
        ("classifier.weight", "lm_head.classifier.weight"),  # BertForSequenceClassification
        ("classifier.bias", "lm_head.classifier.bias"),
    ),
    # position_ids is a buffer; the decoder's weight and bias are the embedding's and the bias
    # above (tied copies, when saved); next-sentence prediction is not a head lucidlm has.
    ignore=(r"(bert\.)?embeddings\.position_ids", r"cls\.predictions\.decoder\.(weight|bias)",
            r"cls\.seq_relationship\..*"),
    optional_prefix="bert.",
)


def _seq2seq_rows(learned_positions: bool, final_norms: bool = False) -> tuple[Row, ...]:
    """BART's and Marian's layout: separate q/k/v projections (fused into our qkv, and k/v of the
    cross-attention into its kv), post-norm layers named after what they follow."""
    def layer(src: str, ours: str, cross: bool) -> list[tuple]:
        rows = [(f"{src}.self_attn.{name}_proj.{kind}", f"{ours}.attn.qkv.{kind}", name)
                for name in ("q", "k", "v") for kind in ("weight", "bias")]
        for source, target in (("self_attn.out_proj", "attn.out"), ("self_attn_layer_norm", "attn_norm"),
                               ("fc1", "mlp.up"), ("fc2", "mlp.down"), ("final_layer_norm", "mlp_norm"),
                               *((("encoder_attn.q_proj", "cross_attn.q"), ("encoder_attn.out_proj", "cross_attn.out"),
                                  ("encoder_attn_layer_norm", "cross_norm")) if cross else ())):
            rows += [(f"{src}.{source}.{kind}", f"{ours}.{target}.{kind}") for kind in ("weight", "bias")]
        if cross:
            rows += [(f"{src}.encoder_attn.{name}_proj.{kind}", f"{ours}.cross_attn.kv.{kind}", name)
                     for name in ("k", "v") for kind in ("weight", "bias")]
        return rows

    stacks = []
    for src, ours in (("model.encoder", "encoder."), ("model.decoder", "")):
        if learned_positions:
            stacks += [(f"{src}.embed_positions.weight", f"{ours}pos_emb.weight", None, ("drop_2_rows",)),
                       (f"{src}.layernorm_embedding.weight", f"{ours}emb_norm.weight"),
                       (f"{src}.layernorm_embedding.bias", f"{ours}emb_norm.bias")]
        index = "{e}" if ours else "{i}"
        stacks += layer(f"{src}.layers.{index}", f"{ours}blocks.{index}", cross=not ours)
        if final_norms:
            stacks += [(f"{src}.layer_norm.{kind}", f"{ours}final_norm.{kind}") for kind in ("weight", "bias")]
    return _rows(("model.shared.weight", "tok_emb.weight"), *stacks, ("lm_head.weight", "lm_head.weight"),
                 ("final_logits_bias", "lm_head.bias", None, ("flatten",)))


# The encoder's and decoder's embed_tokens are the shared matrix (tied copies, when saved).
_SEQ2SEQ_IGNORE = (r"model\.(encoder|decoder)\.embed_tokens\.weight",)
HF_BART = NameTable("Hugging Face BART", _seq2seq_rows(learned_positions=True), _SEQ2SEQ_IGNORE)
HF_MBART = NameTable("Hugging Face mBART", _seq2seq_rows(learned_positions=True, final_norms=True), _SEQ2SEQ_IGNORE)
# Marian's sinusoidal tables are computed, not stored (older files may still carry them).
HF_MARIAN = NameTable("Hugging Face Marian", _seq2seq_rows(learned_positions=False),
                      _SEQ2SEQ_IGNORE + (r"model\.(encoder|decoder)\.embed_positions\.weight",))
