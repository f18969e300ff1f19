"""AutoTokenizer and HFTokenizer: any lucidlm tokenizer behind transformers' tokenizer interface.

    tokenizer = AutoTokenizer.from_pretrained(PATH)      # a model folder, a GGUF file, a tokenizer.json, a hub id
    batch = tokenizer(["a text", "another"], padding=True, return_tensors="pt")
    tokenizer.decode(25966); len(tokenizer); tokenizer.add_special_tokens({"cls_token": "<CLS>"})

lucidlm's own tokenizers keep their own rules (special-token strings in text are plain text unless
allowed, `encode` adds nothing); this wrapper follows transformers instead, and tests hold it to
transformers' ids on the same files: special-token strings in text are special, `encode` and calls
add the model's special tokens ([CLS] ... [SEP], a BOS), and the named special tokens are
attributes a notebook may change (`tokenizer.pad_token = tokenizer.eos_token`). As in
transformers, changing cls_token changes the attribute, not the template that wraps each text.
"""

from __future__ import annotations

import copy
import json
import numbers
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from ..errors import LucidError
from ..files import write_atomic
from ..tokenizer import WordPieceTokenizer, load_tokenizer
from ..tokenizer.byte_unicode import bytes_to_text, text_to_bytes
from ..tokenizer.files import write_wordpiece_json
from ..tokenizer.special_tokens import EXTRA_KIND, SPECIAL_KINDS, add_special_tokens
from ..tokenizer.wordpiece import TRUNCATIONS, truncate_pair
from .outputs import BatchEncoding
from .paths import model_path

PADDINGS = {True: "longest", "longest": "longest", "max_length": "max_length", False: "do_not_pad",
            None: "do_not_pad", "do_not_pad": "do_not_pad"}
# transformers' own spelling of "no limit" for model_max_length
NO_LIMIT = int(1e30)
# from_pretrained arguments that change nothing here
TOKENIZER_HARMLESS = ("trust_remote_code", "use_fast", "cache_dir", "token", "local_files_only", "force_download",
                      "legacy", "clean_up_tokenization_spaces")


class HFTokenizer:
    """One lucidlm tokenizer (`.tokenizer`) with transformers' methods and attributes."""

    def __init__(self, tokenizer, name_or_path: str = "") -> None:
        self.tokenizer = tokenizer
        self.name_or_path = name_or_path
        self.is_wordpiece = isinstance(tokenizer, WordPieceTokenizer)
        for kind in SPECIAL_KINDS:  # the attributes transformers has, None where the tokenizer has none
            setattr(self, kind, getattr(tokenizer, kind, None))
        self.additional_special_tokens: list[str] = []
        self.padding_side = "right"
        self.truncation_side = "right"
        self.model_max_length = getattr(tokenizer, "model_max_length", NO_LIMIT)
        self.chat_template = getattr(tokenizer, "chat_template", None)
        # transformers' vocab_size is the base vocabulary; len() counts the tokens added after loading
        self.vocab_size = len(tokenizer.vocab)

    # --- facts ---------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.tokenizer.vocab)

    def _id(self, text: str | None) -> int | None:
        return None if text is None else self.convert_tokens_to_ids(text)

    bos_token_id = property(lambda self: self._id(self.bos_token))
    eos_token_id = property(lambda self: self._id(self.eos_token))
    unk_token_id = property(lambda self: self._id(self.unk_token))
    sep_token_id = property(lambda self: self._id(self.sep_token))
    pad_token_id = property(lambda self: self._id(self.pad_token))
    cls_token_id = property(lambda self: self._id(self.cls_token))
    mask_token_id = property(lambda self: self._id(self.mask_token))

    @property
    def special_tokens_map(self) -> dict[str, Any]:
        out = {kind: getattr(self, kind) for kind in SPECIAL_KINDS if getattr(self, kind) is not None}
        if self.additional_special_tokens:
            out[EXTRA_KIND] = list(self.additional_special_tokens)
        return out

    @property
    def all_special_tokens(self) -> list[str]:
        seen = [getattr(self, kind) for kind in SPECIAL_KINDS] + self.additional_special_tokens
        return list(dict.fromkeys(t for t in seen if t is not None))

    @property
    def all_special_ids(self) -> list[int]:
        return [self.convert_tokens_to_ids(t) for t in self.all_special_tokens]

    def get_vocab(self) -> dict[str, int]:
        return {self.convert_ids_to_tokens(i): i for i in range(len(self))}

    # --- tokens <-> ids ------------------------------------------------------------------------

    def convert_ids_to_tokens(self, ids: int | Sequence[int] | torch.Tensor, skip_special_tokens: bool = False):
        """Ids -> token strings: WordPiece pieces, or byte-level BPE tokens in GPT-2's byte alphabet
        ("Ġthe" for " the"); special tokens as their text."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        if isinstance(ids, int):
            return self._token(ids)
        return [self._token(i) for i in ids if not (skip_special_tokens and self.tokenizer.is_special(i))]

    def _token(self, i: int) -> str:
        if not 0 <= i < len(self):
            raise LucidError(f"token id {i} is outside the vocabulary of {len(self)}")
        if self.is_wordpiece:
            return self.tokenizer.vocab[i]
        data = self.tokenizer.vocab[i]
        return data.decode("utf-8") if self.tokenizer.is_special(i) else bytes_to_text(data)

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]):
        """Token strings -> ids; an unknown token gives the unknown token's id (None without one)."""
        if isinstance(tokens, str):
            return self._token_id(tokens)
        return [self._token_id(t) for t in tokens]

    def _token_id(self, token: str) -> int | None:
        core = self.tokenizer
        if token in core.special_tokens:
            found = core.special_tokens[token]
        elif self.is_wordpiece:
            found = core.ids.get(token)
        else:
            data = text_to_bytes(token)
            found = core.token_ids.get(data) if data is not None else None
        if found is None and self.unk_token is not None and token != self.unk_token:
            return self._token_id(self.unk_token)
        return found

    def convert_tokens_to_string(self, tokens: Sequence[str]) -> str:
        return self.decode(self.convert_tokens_to_ids(list(tokens)))

    def tokenize(self, text: str, **kwargs: Any) -> list[str]:
        return self.convert_ids_to_tokens(self.encode(text, add_special_tokens=False, **kwargs))

    # --- encoding ------------------------------------------------------------------------------

    def _ids(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise LucidError(f"the tokenizer takes text (a string or a list of strings), got {type(text).__name__}")
        return self.tokenizer.encode(text, allowed_special="all")  # transformers: special strings are special

    def _with_specials(self, a: list[int], b: list[int] | None) -> tuple[list[int], list[int]]:
        """The model's template around one text or a pair: (ids, token type ids)."""
        if self.is_wordpiece:
            return self.tokenizer.with_specials(a, b), self.tokenizer.type_ids(a, b)
        core = self.tokenizer
        bos = [core.bos_token_id] if core.add_bos_token and core.bos_token_id is not None else []
        ids = bos + a + (bos + b if b is not None else [])
        return ids, [0] * len(ids)

    def _specials_count(self, pair: bool) -> int:
        return len(self._with_specials([], [] if pair else None)[0])

    def encode(self, text: str, text_pair: str | None = None, add_special_tokens: bool = True,
               truncation: bool | str | None = None, max_length: int | None = None,
               return_tensors: str | None = None, **kwargs: Any):
        """One text (or pair) -> ids, with the model's special tokens unless add_special_tokens=False."""
        out = self(text, text_pair, add_special_tokens=add_special_tokens, truncation=truncation,
                   max_length=max_length, return_tensors=return_tensors, **kwargs)
        return out["input_ids"]

    def __call__(self, text: str | Sequence[str], text_pair: str | Sequence[str] | None = None,
                 add_special_tokens: bool = True, padding: bool | str = False,
                 truncation: bool | str | None = None, max_length: int | None = None,
                 return_tensors: str | None = None, return_attention_mask: bool | None = None,
                 return_token_type_ids: bool | None = None, pad_to_multiple_of: int | None = None,
                 padding_side: str | None = None, **unused: Any) -> BatchEncoding:
        """transformers' tokenizer call: input_ids and attention_mask (and token_type_ids for a
        tokenizer with segments), for one text (or pair) or a batch."""
        if unused:
            raise LucidError(f"unsupported tokenizer argument(s): {', '.join(sorted(unused))}")
        if not isinstance(text, (str, list, tuple)):
            raise LucidError(f"the tokenizer takes a string or a list of strings, got {type(text).__name__}")
        single = isinstance(text, str)
        texts = [text] if single else list(text)
        pairs = None if text_pair is None else [text_pair] if isinstance(text_pair, str) else list(text_pair)
        if pairs is not None and len(pairs) != len(texts):
            raise LucidError(f"{len(texts)} texts but {len(pairs)} text pairs")
        strategy = TRUNCATIONS.get(truncation if truncation is not None else bool(max_length))
        pad_mode = PADDINGS.get(padding)
        if strategy is None or pad_mode is None:
            bad = ("truncation", truncation, TRUNCATIONS) if strategy is None else ("padding", padding, PADDINGS)
            raise LucidError(f"{bad[0]}={bad[1]!r}: choose from {', '.join(map(repr, bad[2]))}")
        side = padding_side or self.padding_side
        if side not in ("left", "right"):
            raise LucidError(f"padding_side must be 'left' or 'right', got {side!r}")
        rows = [self._row(t, pairs[n] if pairs is not None else None, add_special_tokens, strategy, max_length)
                for n, t in enumerate(texts)]
        rows = self._pad(rows, pad_mode, max_length, pad_to_multiple_of, side)
        with_types = return_token_type_ids if return_token_type_ids is not None else self.is_wordpiece
        out = BatchEncoding(input_ids=[ids for ids, _, _ in rows])
        if with_types:
            out["token_type_ids"] = [types for _, types, _ in rows]
        if return_attention_mask is not False:
            out["attention_mask"] = [mask for _, _, mask in rows]
        return self._finish(out, single, return_tensors)

    def _row(self, text: str, pair: str | None, add_special_tokens: bool, strategy: str,
             max_length: int | None) -> tuple[list[int], list[int], list[int]]:
        """One text (or pair) -> (ids, token type ids, attention mask), cut to max_length."""
        a = self._ids(text)
        b = self._ids(pair) if pair is not None else None
        if strategy != "do_not_truncate":
            limit = max_length if max_length is not None else self.model_max_length
            room = limit - (self._specials_count(b is not None) if add_special_tokens else 0)
            if self.truncation_side == "left":  # cut from the start: truncate the reversed ids
                a, b = a[::-1], b[::-1] if b is not None else None
                a, b = truncate_pair(a, b, room, strategy)
                a, b = a[::-1], b[::-1] if b is not None else None
            else:
                a, b = truncate_pair(a, b, room, strategy)
        ids, types = self._with_specials(a, b) if add_special_tokens else (a + (b or []), [0] * len(a) + [1] * len(b or []))
        return ids, types, [1] * len(ids)

    def _pad(self, rows: list[tuple[list[int], list[int], list[int]]], mode: str, max_length: int | None,
             multiple: int | None, side: str) -> list[tuple[list[int], list[int], list[int]]]:
        """Pad every (ids, types, mask) row to the longest (or max_length) on `side`."""
        if mode == "do_not_pad" or not rows:
            return rows
        if mode == "max_length" and max_length is None:
            if self.model_max_length >= NO_LIMIT:  # transformers pads to nothing it could name
                return rows
            max_length = self.model_max_length
        width = max(len(ids) for ids, _, _ in rows) if mode == "longest" else max_length
        if multiple:
            width = -(-width // multiple) * multiple
        if any(len(ids) < width for ids, _, _ in rows) and self.pad_token_id is None:
            raise LucidError("this tokenizer has no padding token: set one first, for example "
                             "tokenizer.pad_token = tokenizer.eos_token")
        out = []
        for ids, types, mask in rows:
            n = max(width - len(ids), 0)
            pad, zeros = [self.pad_token_id] * n, [0] * n
            out.append((pad + ids, zeros + types, zeros + mask) if side == "left" else
                       (ids + pad, types + zeros, mask + zeros))
        return out

    @staticmethod
    def _finish(out: BatchEncoding, single: bool, return_tensors: str | None) -> BatchEncoding:
        if return_tensors is None:
            return BatchEncoding({k: v[0] for k, v in out.items()}) if single else out
        if return_tensors != "pt":
            raise LucidError(f"return_tensors={return_tensors!r}: lucidlm returns PyTorch tensors ('pt') or lists")
        if len({len(row) for row in out["input_ids"]}) > 1:
            raise LucidError("the texts have different lengths: pass padding=True to make one tensor of them")
        return BatchEncoding({k: torch.tensor(v, dtype=torch.long) for k, v in out.items()})

    def pad(self, encoded: dict[str, Any], padding: bool | str = True, max_length: int | None = None,
            return_tensors: str | None = None) -> BatchEncoding:
        """Pad already tokenized rows ({"input_ids": [[...], ...]}), as a data collator does."""
        if isinstance(encoded, (list, tuple)):  # a data collator's list of {"input_ids": [...]} features
            if not all(isinstance(f, dict) and "input_ids" in f for f in encoded):
                raise LucidError("pad takes {'input_ids': rows} or a list of {'input_ids': ids} features")
            encoded = {"input_ids": [_id_list(f["input_ids"]) for f in encoded]}
        if not isinstance(encoded, dict) or "input_ids" not in encoded:
            raise LucidError("pad takes {'input_ids': rows} or a list of {'input_ids': ids} features")
        ids = [list(row) for row in _id_list(encoded["input_ids"])]
        rows = self._pad([(row, [0] * len(row), [1] * len(row)) for row in ids], PADDINGS.get(padding, "longest"),
                         max_length, None, self.padding_side)
        out = BatchEncoding(input_ids=[r for r, _, _ in rows], attention_mask=[m for _, _, m in rows])
        return self._finish(out, False, return_tensors)

    # --- decoding ------------------------------------------------------------------------------

    def decode(self, ids: int | Sequence[int] | torch.Tensor, skip_special_tokens: bool = False,
               clean_up_tokenization_spaces: bool | None = None, **kwargs: Any) -> str:
        """Ids (an int, a list or a 0-D/1-D tensor) -> text."""
        ids = _id_list(ids)
        ids = [ids] if isinstance(ids, int) else ids
        if ids and not isinstance(ids[0], int):
            raise LucidError("decode takes one sequence of ids: use batch_decode for several")
        if skip_special_tokens:  # the tokenizer's special tokens and those named here
            named = set(self.all_special_ids)
            ids = [i for i in ids if not self.tokenizer.is_special(i) and i not in named]
        return self.tokenizer.decode(ids)

    def batch_decode(self, sequences: Iterable[Sequence[int]] | torch.Tensor, skip_special_tokens: bool = False,
                     **kwargs: Any) -> list[str]:
        sequences = _id_list(sequences)
        if sequences and isinstance(sequences[0], int):  # one flat sequence, as transformers 5 reads it
            sequences = [sequences]
        return [self.decode(s, skip_special_tokens=skip_special_tokens, **kwargs) for s in sequences]

    # --- special tokens, chats, files ----------------------------------------------------------

    def add_special_tokens(self, tokens: dict[str, Any], replace_additional_special_tokens: bool = True) -> int:
        """transformers' add_special_tokens: each text becomes a special token (a new id at the end
        unless it is a token already) and each named kind this tokenizer's attribute. Returns how
        many ids were made: the model then needs resize_token_embeddings(len(tokenizer))."""
        added = add_special_tokens(self.tokenizer, tokens, set_attributes=False)
        for kind, value in tokens.items():
            if kind == EXTRA_KIND:
                extra = [value] if isinstance(value, str) else list(value)
                kept = [] if replace_additional_special_tokens else self.additional_special_tokens
                self.additional_special_tokens = list(dict.fromkeys(kept + extra))
            else:
                setattr(self, kind, value)
        return added

    def add_tokens(self, tokens: str | Sequence[str], special_tokens: bool = False) -> int:
        """New tokens matched whole in text. lucidlm adds them as special tokens (matched before
        the text is split), which decode with skip_special_tokens=True drops."""
        tokens = [tokens] if isinstance(tokens, str) else list(tokens)
        return add_special_tokens(self.tokenizer, {EXTRA_KIND: tokens}, set_attributes=False)

    def apply_chat_template(self, conversation: list[dict[str, Any]], tokenize: bool = True,
                            add_generation_prompt: bool = False, return_tensors: str | None = None,
                            return_dict: bool = True, continue_final_message: bool = False, **kwargs: Any):
        """The conversation through the model's own template. tokenize=False: the string; else (as
        transformers 5) a BatchEncoding, or the ids alone with return_dict=False.
        continue_final_message: the text stops right after the last message's content, so the
        model continues it (transformers cuts the rendered chat at that content's last occurrence)."""
        kwargs.pop("tokenizer_kwargs", None)
        if not hasattr(self.tokenizer, "chat_chunks"):
            raise LucidError("this tokenizer has no chat template (an encoder's WordPiece does not chat)")
        if continue_final_message and add_generation_prompt:
            raise LucidError("continue_final_message continues the last message: it takes no generation prompt")
        chunks = self.tokenizer.chat_chunks(conversation, add_generation_prompt, **kwargs)
        if continue_final_message:
            chunks = _cut_after(chunks, (conversation[-1].get("content") or "").strip())
        if not tokenize:
            return "".join(text for text, _ in chunks)
        ids: list[int] = []
        for text, special in chunks:  # the template's special tokens only: a message's text stays text
            ids.extend([self.tokenizer.special_tokens[text]] if special else self.tokenizer.encode_ordinary(text))
        if not return_dict:
            return torch.tensor([ids]) if return_tensors == "pt" else ids
        out = BatchEncoding(input_ids=[ids], attention_mask=[[1] * len(ids)])
        return self._finish(out, return_tensors is None, return_tensors)

    def read_config(self, folder: Path) -> None:
        """Take the named special tokens, sides and length limit from tokenizer_config.json, as
        transformers does (the tokenizer file itself knows only its own template's tokens)."""
        try:
            config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        if not isinstance(config, dict):
            return
        for kind in SPECIAL_KINDS:
            value = config.get(kind)
            value = value.get("content") if isinstance(value, dict) else value
            if isinstance(value, str) and self._token_id(value) is not None:
                setattr(self, kind, value)
        extra = config.get("extra_special_tokens") or config.get(EXTRA_KIND) or []
        self.additional_special_tokens = [t for t in extra if isinstance(t, str)] if isinstance(extra, list) else []
        for side in ("padding_side", "truncation_side"):
            if config.get(side) in ("left", "right"):
                setattr(self, side, config[side])
        if isinstance(config.get("model_max_length"), (int, float)) and config["model_max_length"] > 0:
            self.model_max_length = int(min(config["model_max_length"], NO_LIMIT))

    def save_pretrained(self, directory: str | os.PathLike, **unused: Any) -> tuple[str, ...]:
        """tokenizer.json and tokenizer_config.json, which transformers (and lucidlm) load back
        with the same ids, special tokens and chat template."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.is_wordpiece:
            # transformers 5 rebuilds a BERT template from the named tokens when it loads a folder:
            # write the template it will make, so the file means the same to both libraries
            named = copy.copy(self.tokenizer)
            named.cls_token, named.sep_token = self.cls_token, self.sep_token
            write_wordpiece_json(named, directory)
        else:
            self.tokenizer.save_hf(directory / "tokenizer.json")
        config_file = directory / "tokenizer_config.json"
        config = json.loads(config_file.read_text(encoding="utf-8"))
        config.update({kind: value for kind, value in self.special_tokens_map.items() if kind != EXTRA_KIND})
        config.update(padding_side=self.padding_side, truncation_side=self.truncation_side,
                      model_max_length=min(self.model_max_length, NO_LIMIT),
                      extra_special_tokens=list(self.additional_special_tokens))
        if self.chat_template:
            config["chat_template"] = self.chat_template
        write_atomic(config_file, json.dumps(config, ensure_ascii=False, indent=2))
        return str(config_file), str(directory / "tokenizer.json")

    def __repr__(self) -> str:
        return (f"HFTokenizer(name_or_path={self.name_or_path!r}, vocab_size={self.vocab_size}, len={len(self)}, "
                f"tokenizer={self.tokenizer!r})")


def _cut_after(chunks: list[tuple[str, bool]], final: str) -> list[tuple[str, bool]]:
    """The rendered chat's (text, is_special) chunks up to the end of the last occurrence of `final`
    in the ordinary text."""
    text = "".join(t for t, _ in chunks)
    where = text.rfind(final) if final else -1
    if where < 0:
        raise LucidError("continue_final_message: the last message's content is not in the rendered chat")
    end, out, at = where + len(final), [], 0
    for chunk, special in chunks:
        if at >= end:
            break
        out.append((chunk[:end - at], special) if not special else (chunk, special))
        at += len(chunk)
    return out


def _id_list(ids: Any):
    """An id, ids, or rows of ids as Python ints, from ints, lists, numpy arrays or tensors."""
    if isinstance(ids, numbers.Integral):
        return int(ids)
    if hasattr(ids, "tolist"):  # a tensor or a numpy array (a 0-D one gives an int)
        return ids.tolist()
    if isinstance(ids, (list, tuple)):
        return [_id_list(i) for i in ids]
    raise LucidError(f"ids are ints, lists of ints or tensors, got {type(ids).__name__}")


def as_hf_tokenizer(tokenizer, name_or_path: str = "") -> HFTokenizer:
    """Wrap one of lucidlm's tokenizers (an HFTokenizer passes through)."""
    return tokenizer if isinstance(tokenizer, HFTokenizer) else HFTokenizer(tokenizer, name_or_path)


class AutoTokenizer:
    """transformers' AutoTokenizer: `from_pretrained(path_or_id)` -> an HFTokenizer."""

    def __init__(self) -> None:
        raise LucidError("AutoTokenizer is not built directly: use AutoTokenizer.from_pretrained(path)")

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *args: Any, gguf_file: str | None = None,
                        subfolder: str | None = None, revision: str | None = None, **kwargs: Any) -> HFTokenizer:
        """A model folder, a GGUF file (or folder + gguf_file=NAME), a tokenizer.json or a hub id.
        Named special tokens (pad_token="..."), model_max_length, padding_side and truncation_side
        override the files', as in transformers; trust_remote_code, use_fast and the hub's cache
        options change nothing (lucidlm never runs code from a model); any other is refused."""
        settings = {k: kwargs.pop(k) for k in (*SPECIAL_KINDS, "model_max_length", "padding_side",
                                               "truncation_side") if k in kwargs}
        unknown = sorted(set(kwargs) - set(TOKENIZER_HARMLESS))
        if args or unknown:
            raise LucidError(f"unsupported tokenizer argument(s): {', '.join(unknown) or 'positional ones'}")
        where = model_path(path, gguf_file, subfolder, revision)
        tokenizer = as_hf_tokenizer(load_tokenizer(where), str(path))
        tokenizer.read_config(Path(where) if Path(where).is_dir() else Path(where).parent)
        for key, value in settings.items():
            if key in SPECIAL_KINDS and value is not None:
                tokenizer.add_special_tokens({key: value})
            elif key in ("padding_side", "truncation_side") and value not in ("left", "right"):
                raise LucidError(f"{key} must be 'left' or 'right', got {value!r}")
            else:
                setattr(tokenizer, key, value)
        return tokenizer
