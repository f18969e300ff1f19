"""Write small GGUF files the way llama.cpp's converter does, for tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def permute_for_llama_cpp(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf permutation of q/k rows (interleaved rotary layout)."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(path: Path, arch: str = "llama", strings: dict[str, str] | None = None,
               tensors: dict[str, tuple[np.ndarray, object]] | None = None) -> Path:
    """A minimal GGUF file: an architecture, some string metadata, raw tensors {name: (data, type)}."""
    import gguf

    writer = gguf.GGUFWriter(str(path), arch)
    for key, value in (strings or {}).items():
        writer.add_string(key, value)
    for name, (data, kind) in (tensors or {}).items():
        writer.add_tensor(name, data, raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    if tensors:
        writer.write_tensors_to_file()
    writer.close()
    return path


def sized_writer(path, arch: str, c):
    """A GGUFWriter for `arch` holding the sizes of the transformers config `c` (a Llama-like one)."""
    import gguf

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(c.num_hidden_layers)
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    writer.add_rope_freq_base(c.rope_parameters["rope_theta"])
    writer.add_rope_dimension_count(c.hidden_size // c.num_attention_heads)
    return writer


def write_llama_gguf(path: Path, hf_model, qtype=None, tokenizer=None, pre: str = "gpt2",
                     extra_tensors: dict | None = None, drop: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Write hf_model (a transformers Llama) as GGUF with matrices in `qtype`. Returns the weights
    the file holds, dequantized, by Hugging Face name, so a test can build the exact reference."""
    import gguf
    from gguf.quants import dequantize, quantize

    qtype = qtype or gguf.GGMLQuantizationType.F32
    c = hf_model.config
    writer = sized_writer(path, "llama", c)
    if tokenizer is not None:
        from lucidlm.tokenizer.files import gguf_tokenizer_metadata

        meta = gguf_tokenizer_metadata(tokenizer)
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(pre)
        writer.add_token_list(meta["tokenizer.ggml.tokens"])
        writer.add_token_types(meta["tokenizer.ggml.token_type"])
        writer.add_token_merges(meta["tokenizer.ggml.merges"])
        if tokenizer.eos_token_id is not None:
            writer.add_eos_token_id(tokenizer.eos_token_id)
        writer.add_chat_template("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                                 "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    sd = {k: v.detach().float().numpy() for k, v in hf_model.state_dict().items()}
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    for i in range(c.num_hidden_layers):
        p = f"model.layers.{i}."
        names.update({p + "input_layernorm.weight": f"blk.{i}.attn_norm.weight",
                      p + "self_attn.q_proj.weight": f"blk.{i}.attn_q.weight",
                      p + "self_attn.k_proj.weight": f"blk.{i}.attn_k.weight",
                      p + "self_attn.v_proj.weight": f"blk.{i}.attn_v.weight",
                      p + "self_attn.o_proj.weight": f"blk.{i}.attn_output.weight",
                      p + "post_attention_layernorm.weight": f"blk.{i}.ffn_norm.weight",
                      p + "mlp.gate_proj.weight": f"blk.{i}.ffn_gate.weight",
                      p + "mlp.up_proj.weight": f"blk.{i}.ffn_up.weight",
                      p + "mlp.down_proj.weight": f"blk.{i}.ffn_down.weight"})
    reference = {}
    for hf_name, array in sd.items():
        if hf_name == "lm_head.weight" and c.tie_word_embeddings:
            continue
        name = names[hf_name]
        if name in drop:
            continue
        kind = qtype if array.ndim == 2 else gguf.GGMLQuantizationType.F32
        # Quantization works within rows, so quantizing before or after the row permutation is the
        # same: the reference keeps HF's row order and never needs our un-permutation.
        reference[hf_name] = dequantize(quantize(array, kind), kind).reshape(array.shape) \
            if kind != gguf.GGMLQuantizationType.F32 else array
        if name.endswith("attn_q.weight"):
            array = permute_for_llama_cpp(array, c.num_attention_heads)
        elif name.endswith("attn_k.weight"):
            array = permute_for_llama_cpp(array, c.num_key_value_heads)
        data = quantize(array, kind) if kind != gguf.GGMLQuantizationType.F32 else array
        writer.add_tensor(name, data, raw_dtype=kind)
    for name, array in (extra_tensors or {}).items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return reference


def reference_with(hf_model, weights: dict[str, np.ndarray]):
    """A copy of hf_model carrying exactly the (dequantized) weights the file holds."""
    import copy

    ref = copy.deepcopy(hf_model)
    sd = ref.state_dict()
    for name, array in weights.items():
        sd[name] = torch.from_numpy(np.ascontiguousarray(array))
    ref.load_state_dict(sd)
    return ref.eval()
