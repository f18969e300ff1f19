"""Tokenizer files: every format read into our dict format, and written from a tokenizer.

Reading: our JSON file, Hugging Face tokenizer.json (with tokenizer_config.json and
chat_template.jinja beside it), tiktoken rank files and GGUF metadata all become the dict that
`Tokenizer.from_dict` / `CharTokenizer.from_dict` take (our format, below). Which reader applies is
decided by `locate` (lucidlm/locate.py), the one place that tells what a path is.

Our dict format is described in our_format.py. A lucidlm-tokenizer.vocab file beside our JSON
file shows each token for people and is never read back.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from itertools import repeat
from pathlib import Path
from typing import Any, Callable

import regex

from ..errors import FormatError, reading
from ..files import read_json, write_atomic
from ..gguf_file import read_metadata
from ..locate import TOKENIZER_FILE, Location, adapter_base, locate
from .byte_unicode import bytes_to_text, text_to_bytes, texts_to_bytes
from .our_format import BPE_FORMAT, FORMAT_VERSION, UNIT_FORMATS, WORDPIECE_FORMAT, bpe_data
from .pretokenizer import GPT2_PATTERN, NAMED, SINGLE_DIGIT, PreTokenizer

OUR_FILE = TOKENIZER_FILE
OUR_VOCAB_FILE = "lucidlm-tokenizer.vocab"


# --- reading: any location -> our dict --------------------------------------------------------------

def read_tokenizer_data(path: str | os.PathLike | Location, required: bool = True,
                        **options: Any) -> dict[str, Any] | None:
    """Our-format dict of the tokenizer at `path` (a file, a folder, a model, a hub id), for
    tokenizer_from_dict: in memory, so a BPE reader gives every token's bytes as `tokens` (our_format.py). Options
    fill in what a format does not store (tiktoken: pattern, special_tokens, eos_token; GGUF:
    pre_tokenizer). required=False: None when a model comes without a tokenizer."""
    location = path if isinstance(path, Location) else locate(path)
    with reading(location.path, "tokenizer"):
        data = READERS[location.kind](location.path, **options)
    if data is None and required:
        raise FormatError(f"{location.path}: has no tokenizer (looked for {OUR_FILE}, tokenizer.json, "
                          f"GGUF tokenizer metadata)")
    return data


def _read_adapter_folder(folder: Path, **options: Any) -> dict[str, Any] | None:
    """A LoRA adapter: its own tokenizer if it carries one, else its base model's (adapters never
    change the vocabulary)."""
    return _read_from_folder(folder) or read_tokenizer_data(adapter_base(folder), required=False, **options)


def _read_from_folder(folder: Path, **options: Any) -> dict[str, Any] | None:
    """A model folder: our tokenizer if it has one (a run, a checkpoint, an export), else
    tokenizer.json, else a BERT vocab.txt."""
    if (folder / OUR_FILE).exists():
        return read_ours(folder / OUR_FILE)
    if (folder / "tokenizer.json").exists():
        return read_tokenizer_json(folder / "tokenizer.json")
    if (folder / "vocab.txt").exists():
        return read_vocab_txt(folder / "vocab.txt")
    return None


def _read_gguf(path: Path, **options: Any) -> dict[str, Any] | None:
    meta = read_metadata(path)
    if "tokenizer.ggml.model" not in meta:
        raise FormatError(f"{path}: the GGUF file has no tokenizer (no tokenizer.ggml.model)")
    return gguf_tokenizer_data(meta, str(path), **options)


def read_ours(path: str | os.PathLike, **_: Any) -> dict[str, Any]:
    path = Path(path)
    data = read_json(path)
    if data.get("format") not in (BPE_FORMAT, WORDPIECE_FORMAT, *UNIT_FORMATS):
        raise FormatError(f"{path}: unknown tokenizer kind {data.get('format')!r}")
    if data.get("version") != FORMAT_VERSION:
        raise FormatError(f"{path}: unsupported tokenizer format version {data.get('version')!r}")
    if "tokens" in data:  # the readers' in-memory form, never a file's: a file lists base tokens
        raise FormatError(f"{path}: a lucidlm tokenizer file lists base_tokens, not tokens")
    return {**data, "origin": str(path)}


# --- Hugging Face tokenizer.json -------------------------------------------------------------------

def _pre_tokenizer_from_hf(spec: dict[str, Any] | None, origin: str) -> PreTokenizer:
    if spec is None:
        raise FormatError(f"{origin}: byte-level BPE without a pre-tokenizer is not supported")
    steps: list[str] = []
    byte_level = False
    for item in spec.get("pretokenizers", []) if spec.get("type") == "Sequence" else [spec]:
        kind = item.get("type")
        if kind == "ByteLevel":
            if item.get("add_prefix_space"):
                raise FormatError(f"{origin}: ByteLevel add_prefix_space=true is not supported")
            if item.get("use_regex", True):
                steps.append(GPT2_PATTERN)
            byte_level = True
        elif kind == "Digits":
            steps.append(SINGLE_DIGIT if item.get("individual_digits") else r"\p{N}+")
        elif kind == "Split":
            pattern = item.get("pattern", {})
            if item.get("behavior") != "Isolated" or item.get("invert"):
                raise FormatError(f"{origin}: Split with behavior {item.get('behavior')!r}"
                                  f"{' inverted' if item.get('invert') else ''} is not supported")
            if "Regex" in pattern:
                steps.append(pattern["Regex"])
            elif "String" in pattern:
                steps.append(regex.escape(pattern["String"]))
            else:
                raise FormatError(f"{origin}: Split without a pattern")
        else:
            raise FormatError(f"{origin}: unsupported pre-tokenizer {kind!r}")
    if not byte_level:
        raise FormatError(f"{origin}: not a byte-level tokenizer (no ByteLevel pre-tokenizer)")
    known = {steps_: name for name, steps_ in NAMED.items()}
    return PreTokenizer(steps, known.get(tuple(steps)))


def _token_text(value: Any) -> str | None:
    """tokenizer_config.json stores a special token as a string or as {"content": ...}."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def read_tokenizer_json(path: str | os.PathLike, **_: Any) -> dict[str, Any]:
    path = Path(path)
    origin = str(path)
    data = read_json(path)
    model = data.get("model")
    if not isinstance(model, dict):
        raise FormatError(f"{origin}: no 'model' section; not a tokenizer.json")
    if model.get("type") == "WordPiece":
        return wordpiece_json_data(data, origin)
    if model.get("type") != "BPE":
        raise FormatError(f"{origin}: unsupported tokenizer kind {model.get('type')!r} (byte-level BPE and "
                          f"WordPiece are supported)")
    if model.get("byte_fallback"):
        raise FormatError(f"{origin}: byte-fallback (SentencePiece-style) BPE is not supported")
    if data.get("normalizer") is not None:
        raise FormatError(f"{origin}: tokenizers with a normalizer are not supported")
    pre = _pre_tokenizer_from_hf(data.get("pre_tokenizer"), origin)
    try:
        vocab_map: dict[str, int] = model["vocab"]
        added = {t["content"]: int(t["id"]) for t in data.get("added_tokens", [])}
        ids = [*vocab_map.values(), *added.values()]
        size = max(ids) + 1
        if size > len(ids) or min(ids) < 0:  # before allocating: an id of 10**9 is not 10**9 tokens
            raise FormatError(f"{origin}: token ids run from {min(ids)} to {size - 1}, for {len(ids)} tokens")
        owner: dict[int, str] = {}  # every id names one text: an added token may repeat its own vocab entry
        for text, i in [*vocab_map.items(), *added.items()]:
            if owner.setdefault(i, text) != text:
                raise FormatError(f"{origin}: token id {i} is given to both {owner[i]!r} and {text!r}")
        for text, i in added.items():
            if vocab_map.get(text, i) != i:
                raise FormatError(f"{origin}: {text!r} has id {vocab_map[text]} in the vocabulary and {i} as an "
                                  f"added token")
        vocab: list[bytes | None] = [None] * size
        for text, i in vocab_map.items():
            vocab[i] = text_to_bytes(text) if text not in added else text.encode("utf-8")
            if vocab[i] is None:
                raise FormatError(f"{origin}: vocabulary entry {text!r} is not byte-level text")
        for text, i in added.items():
            vocab[i] = text.encode("utf-8")
        holes = [i for i, t in enumerate(vocab) if t is None]
        if holes:
            raise FormatError(f"{origin}: the vocabulary has no token for ids {holes[:5]}")
        merges = []
        for n, merge in enumerate(model.get("merges", [])):
            a, b = merge.split(" ", 1) if isinstance(merge, str) else merge
            if a not in vocab_map or b not in vocab_map:
                raise FormatError(f"{origin}: merge #{n} ({a!r}, {b!r}) uses a token not in the vocabulary")
            merges.append((vocab_map[a], vocab_map[b]))
    except FormatError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError(f"{origin}: malformed tokenizer.json ({type(exc).__name__}: {exc})") from None

    config = {}
    if (path.parent / "tokenizer_config.json").exists():
        config = read_json(path.parent / "tokenizer_config.json")
    template = config.get("chat_template")
    if isinstance(template, list):  # named templates: take the default one
        template = next((t.get("template") for t in template if t.get("name") == "default"), None)
    if (path.parent / "chat_template.jinja").exists():
        template = (path.parent / "chat_template.jinja").read_text(encoding="utf-8")
    add_bos = bool(config.get("add_bos_token", False))
    post = data.get("post_processor") or {}
    for step in post.get("processors", [post]) if post.get("type") == "Sequence" else [post]:
        if step.get("type") == "TemplateProcessing":
            first = (step.get("single") or [{}])[0]
            add_bos = add_bos or "SpecialToken" in first
    return bpe_data(vocab, merges, pre, added, origin, ignore_merges=bool(model.get("ignore_merges", False)),
                    bos_token=_token_text(config.get("bos_token")), eos_token=_token_text(config.get("eos_token")),
                    pad_token=_token_text(config.get("pad_token")), unk_token=_token_text(config.get("unk_token")),
                    add_bos_token=add_bos, chat_template=template)


# --- WordPiece: BERT's vocab.txt and tokenizer.json ------------------------------------------------

def _bert_config(folder: Path) -> dict[str, Any]:
    """tokenizer_config.json's BERT switches, when it is there."""
    config = read_json(folder / "tokenizer_config.json") if (folder / "tokenizer_config.json").exists() else {}
    out = {"lowercase": bool(config.get("do_lower_case", True)), "strip_accents": config.get("strip_accents"),
           "chinese_chars": bool(config.get("tokenize_chinese_chars", True))}
    for name in ("unk_token", "cls_token", "sep_token", "pad_token", "mask_token"):
        text = _token_text(config.get(name))
        if text:
            out[name] = text
    if isinstance(config.get("model_max_length"), int) and 0 < config["model_max_length"] < 1 << 24:
        out["model_max_length"] = config["model_max_length"]
    return out


def read_vocab_txt(path: str | os.PathLike, **_: Any) -> dict[str, Any]:
    """One piece per line, the line number its id (BERT's vocab.txt)."""
    path = Path(path)
    try:
        pieces = path.read_text(encoding="utf-8").split("\n")
    except OSError as exc:
        raise FormatError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise FormatError(f"{path}: not UTF-8 (invalid byte at offset {exc.start})") from None
    if pieces and pieces[-1] == "":
        pieces.pop()
    seen: dict[str, int] = {}
    for n, piece in enumerate(pieces, 1):
        if piece in seen:
            raise FormatError(f"{path}: line {n}: piece {piece!r} already has a line ({seen[piece]})")
        seen[piece] = n
    return {"format": WORDPIECE_FORMAT, "version": FORMAT_VERSION, "origin": str(path), "vocab": pieces,
            **_bert_config(path.parent)}


def wordpiece_json_data(data: dict[str, Any], origin: str) -> dict[str, Any]:
    """tokenizer.json with a WordPiece model, BertNormalizer and BertPreTokenizer."""
    model, normalizer = data["model"], data.get("normalizer") or {}
    if normalizer.get("type") not in (None, "BertNormalizer"):
        raise FormatError(f"{origin}: WordPiece with a {normalizer.get('type')} normaliser is not supported")
    if (data.get("pre_tokenizer") or {}).get("type") not in (None, "BertPreTokenizer"):
        raise FormatError(f"{origin}: WordPiece with pre-tokenizer {data['pre_tokenizer'].get('type')!r} "
                          f"is not supported")
    vocab_map: dict[str, int] = model["vocab"]
    ids = sorted(vocab_map.values())
    if ids != list(range(len(ids))):
        raise FormatError(f"{origin}: WordPiece ids must run from 0 without gaps or repeats")
    pieces = [""] * len(ids)
    for piece, i in vocab_map.items():
        pieces[i] = piece
    specials = {t["content"]: int(t["id"]) for t in data.get("added_tokens", []) if t.get("special")}
    for text, i in sorted(specials.items(), key=lambda kv: kv[1]):
        if text not in vocab_map and i == len(pieces):  # added after the vocabulary (add_special_tokens)
            pieces.append(text)
        elif vocab_map.get(text, i) != i or not 0 <= i < len(pieces):
            raise FormatError(f"{origin}: special token {text!r} has id {i}, which is another piece's")
    fields = {**_bert_config(Path(origin).parent), "special_tokens": specials,
              "prefix": model.get("continuing_subword_prefix", "##"),
              "max_input_chars_per_word": int(model.get("max_input_chars_per_word", 100)),
              "unk_token": model.get("unk_token", "[UNK]")}
    if normalizer:
        fields.update(lowercase=bool(normalizer.get("lowercase", True)), strip_accents=normalizer.get("strip_accents"),
                      clean_text=bool(normalizer.get("clean_text", True)),
                      chinese_chars=bool(normalizer.get("handle_chinese_chars", True)))
    return {"format": WORDPIECE_FORMAT, "version": FORMAT_VERSION, "origin": origin, "vocab": pieces, **fields}


# --- tiktoken rank files ---------------------------------------------------------------------------

def read_tiktoken(path: str | os.PathLike, pattern: str = "gpt2", special_tokens: dict[str, int] | None = None,
                  eos_token: str | None = None, **_: Any) -> dict[str, Any]:
    """A tiktoken rank file holds only the ordinary tokens; the pattern and the special tokens are
    not in it. Defaults follow tiktoken's GPT-2 encoding: GPT-2's pattern and <|endoftext|> as the
    id after the last rank. Every token is a base token: under the "ranks" rule a pair merges when
    the bytes it makes are a token, so no merge list is needed."""
    path = Path(path)
    ranks: dict[int, bytes] = {}
    lines_of: dict[bytes, int] = {}  # token -> the line that gave it
    n = 0
    try:
        with open(path, "rb") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                token, rank = line.split()
                token, rank = base64.b64decode(token, validate=True), int(rank)
                # each would silently replace or hide another token (tiktoken refuses the first two)
                if rank < 0:
                    raise FormatError(f"{path}: line {n}: negative rank {rank}")
                if rank in ranks:
                    raise FormatError(f"{path}: line {n}: rank {rank} appears twice")
                if token in lines_of:
                    raise FormatError(f"{path}: line {n}: token {token!r} already has a rank (line {lines_of[token]})")
                ranks[rank], lines_of[token] = token, n
    except FormatError:
        raise
    except OSError as exc:
        raise FormatError(f"{path}: cannot read: {exc.strerror}") from None
    except (ValueError, binascii.Error):
        raise FormatError(f"{path}: line {n} is not '<base64 token> <rank>'") from None
    if not ranks:
        raise FormatError(f"{path}: empty tiktoken file")
    if special_tokens is None:
        special_tokens = {"<|endoftext|>": max(ranks) + 1}
        eos_token = eos_token or "<|endoftext|>"
    size = max([*ranks, *special_tokens.values()]) + 1
    if size > len(ranks) + len(special_tokens):  # before allocating: a rank of 10**9 is not 10**9 tokens
        raise FormatError(f"{path}: ranks are not contiguous (the highest is {size - 1}, for "
                          f"{len(ranks) + len(special_tokens)} tokens)")
    vocab: list[bytes | None] = [None] * size
    for rank, token in ranks.items():
        vocab[rank] = token
    for text, i in special_tokens.items():
        if vocab[i] is not None:
            raise FormatError(f"{path}: special token {text!r} id {i} collides with a rank")
        vocab[i] = text.encode("utf-8")
    holes = [i for i, t in enumerate(vocab) if t is None]
    if holes:
        raise FormatError(f"{path}: ranks are not contiguous (missing {holes[:5]})")
    return bpe_data(vocab, [], PreTokenizer.named(pattern), special_tokens, str(path), merge_rule="ranks",
                    eos_token=eos_token)


# --- GGUF metadata ---------------------------------------------------------------------------------

TOKEN_TYPE_NORMAL, TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED = 1, 3, 4


def gguf_tokenizer_data(meta: dict[str, Any], origin: str, pre_tokenizer: str | None = None,
                        **_: Any) -> dict[str, Any]:
    kind = meta.get("tokenizer.ggml.model")
    if kind is None:
        raise FormatError(f"{origin}: the GGUF file has no tokenizer (no tokenizer.ggml.model)")
    if kind != "gpt2":
        raise FormatError(f"{origin}: unsupported tokenizer kind {kind!r} (only byte-level BPE, 'gpt2')")
    tokens = meta.get("tokenizer.ggml.tokens")
    merges_text = meta.get("tokenizer.ggml.merges")
    if not isinstance(tokens, list) or not isinstance(merges_text, list):
        raise FormatError(f"{origin}: the GGUF tokenizer lacks tokenizer.ggml.tokens or tokenizer.ggml.merges")
    if not set(map(type, tokens)) <= {str} or not set(map(type, merges_text)) <= {str}:
        raise FormatError(f"{origin}: tokenizer.ggml.tokens and tokenizer.ggml.merges must be arrays of strings")
    pre_name = pre_tokenizer or meta.get("tokenizer.ggml.pre")
    if pre_name is None:
        raise FormatError(f"{origin}: the GGUF file does not name its pre-tokenizer (tokenizer.ggml.pre); "
                          f"pass pre_tokenizer=")
    pre = PreTokenizer.named(pre_name)
    types = meta.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    if len(types) != len(tokens):
        raise FormatError(f"{origin}: {len(tokens)} tokens but {len(types)} token types")
    # Whole-list operations, not a loop per token: this runs at every load of a GGUF model, and its
    # 49,000 tokens and merges took 0.3 s one by one.
    special_ids = [i for i, kind_ in enumerate(types) if kind_ in (TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED)]
    ordinary = list(tokens)
    for i in special_ids:
        ordinary[i] = ""
    vocab = texts_to_bytes(ordinary)
    if vocab is None:
        i = next(i for i, text in enumerate(ordinary) if text_to_bytes(text) is None)
        raise FormatError(f"{origin}: token {i} {tokens[i]!r} is not byte-level text")
    specials = {}
    for i in special_ids:
        specials[tokens[i]] = i
        vocab[i] = tokens[i].encode("utf-8")
    ids = dict(zip(reversed(tokens), range(len(tokens) - 1, -1, -1)))  # a repeated text: its first id
    try:  # every merge is two tokens and one space: the joined text splits into their pairs
        if set(map(str.count, merges_text, repeat(" "))) - {1}:
            raise ValueError("a merge is not two tokens")
        merge_ids = iter(list(map(ids.__getitem__, " ".join(merges_text).split(" ")))) if merges_text else iter(())
        merges = list(zip(merge_ids, merge_ids))
    except (KeyError, ValueError):  # find the first bad one, for the message
        n, merge = next((n, merge) for n, merge in enumerate(merges_text)
                        if len(parts := merge.split(" ")) != 2 or parts[0] not in ids or parts[1] not in ids)
        raise FormatError(f"{origin}: merge #{n} {merge!r} uses a token not in the vocabulary") from None

    def token(key: str) -> str | None:
        i = meta.get(f"tokenizer.ggml.{key}_token_id")
        return tokens[i] if isinstance(i, int) and 0 <= i < len(tokens) else None

    return bpe_data(vocab, merges, pre, specials, origin, bos_token=token("bos"), eos_token=token("eos"),
                    pad_token=token("padding"), unk_token=token("unknown"),
                    add_bos_token=bool(meta.get("tokenizer.ggml.add_bos_token", False)),
                    chat_template=meta.get("tokenizer.chat_template"))


def gguf_tokenizer_metadata(tok) -> dict[str, Any]:
    """The inverse of gguf_tokenizer_data: a byte-level BPE as llama.cpp's tokenizer.* metadata keys."""
    if getattr(tok, "kind", "") != "bpe":
        raise FormatError(f"GGUF files hold byte-level BPE tokenizers; this one is {getattr(tok, 'kind', 'another kind')}")
    tokens, types = [], []
    for i, token in enumerate(tok.vocab):
        special = tok.is_special(i)
        tokens.append(token.decode("utf-8") if special else bytes_to_text(token))
        types.append(TOKEN_TYPE_CONTROL if special else TOKEN_TYPE_NORMAL)
    meta: dict[str, Any] = {
        "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": tok.pre_tokenizer.name or "default",
        "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.merges": [f"{bytes_to_text(tok.vocab[a])} {bytes_to_text(tok.vocab[b])}" for a, b in tok.merges],
        "tokenizer.ggml.add_bos_token": bool(tok.add_bos_token)}
    for key, text in (("bos", tok.bos_token), ("eos", tok.eos_token), ("padding", tok.pad_token),
                      ("unknown", tok.unk_token)):
        if tok.token_id(text) is not None:
            meta[f"tokenizer.ggml.{key}_token_id"] = tok.token_id(text)
    if tok.chat_template:
        meta["tokenizer.chat_template"] = tok.chat_template
    return meta


# kind (from locate) -> reader(path, **options) -> our dict, or None for a model without a tokenizer
READERS: dict[str, Callable[..., dict[str, Any] | None]] = {
    "ours": read_ours,
    "vocab-txt": read_vocab_txt,
    "tokenizer-json": read_tokenizer_json,
    "tiktoken": read_tiktoken,
    "gguf": _read_gguf,
    "hf-folder": _read_from_folder,
    "checkpoint": _read_from_folder,
    "run": _read_from_folder,
    "adapter": _read_adapter_folder,
}


# --- writing ---------------------------------------------------------------------------------------

def write_ours(tok, directory: str | os.PathLike) -> None:
    """lucidlm-tokenizer.json (tok.to_dict()) and, for a BPE, the vocabulary listing beside it: each
    token's id, text and origin (special, the two tokens its merge joins, or base)."""
    directory = Path(directory)
    data = tok.to_dict()
    write_atomic(directory / OUR_FILE, json.dumps(data, ensure_ascii=False, indent=1 if data["format"] in UNIT_FORMATS
                                                   else None))
    if data["format"] == BPE_FORMAT:  # a listing for people; WordPiece writes its vocab.txt instead
        origin = {new: (a, b) for a, b, new in data["merges"]}
        lines = []
        for i, token in enumerate(tok.vocab):
            shown = repr(token.decode("utf-8", errors="backslashreplace"))[1:-1]
            note = "special" if tok.is_special(i) else (f"{origin[i][0]} + {origin[i][1]}" if i in origin else "base")
            lines.append(f"{i}\t{shown}\t{note}")
        write_atomic(directory / OUR_VOCAB_FILE, "\n".join(lines) + "\n")


def _bos_template(tok) -> dict[str, Any] | None:
    """A tokenizer that starts every text with BOS says so in its template, which is what
    `tokenizers` and transformers 5 read (they ignore tokenizer_config's add_bos_token)."""
    if not tok.add_bos_token or tok.bos_token_id is None:
        return None
    bos = {"SpecialToken": {"id": tok.bos_token, "type_id": 0}}
    return {"type": "TemplateProcessing", "single": [bos, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [bos, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": tok.bos_token, "type_id": 1}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {tok.bos_token: {"id": tok.bos_token, "ids": [tok.bos_token_id],
                                               "tokens": [tok.bos_token]}}}


def write_tokenizer_json(tok, path: str | os.PathLike) -> None:
    """Write tokenizer.json (and tokenizer_config.json beside it) that `tokenizers` and
    transformers load with the same ids as ours."""
    path = Path(path)
    vocab = {}
    for i, token in enumerate(tok.vocab):
        text = token.decode("utf-8") if tok.is_special(i) else bytes_to_text(token)
        vocab.setdefault(text, i)
    merges = [[bytes_to_text(tok.vocab[a]), bytes_to_text(tok.vocab[b])] for a, b, _ in tok.merge_triples()]
    steps = [{"type": "Split", "pattern": {"Regex": p}, "behavior": "Isolated", "invert": False}
             for p in tok.pre_tokenizer.steps]
    data = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": i, "content": text, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for text, i in sorted(tok.special_tokens.items(),
                                                                                       key=lambda kv: kv[1])],
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": steps + [
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
        "post_processor": _bos_template(tok),
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "ignore_merges": tok.ignore_merges, "vocab": vocab, "merges": merges},
    }
    write_atomic(path, json.dumps(data, ensure_ascii=False))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": tok.add_bos_token,
              "model_max_length": 1 << 30}
    for name in ("bos_token", "eos_token", "pad_token", "unk_token"):
        if getattr(tok, name):
            config[name] = getattr(tok, name)
    if tok.chat_template:
        config["chat_template"] = tok.chat_template
    write_atomic(path.parent / "tokenizer_config.json", json.dumps(config, ensure_ascii=False, indent=2))


def write_vocab_txt(tok, directory: str | os.PathLike) -> None:
    write_atomic(Path(directory) / "vocab.txt", "\n".join(tok.vocab) + "\n")


def write_wordpiece_json(tok, directory: str | os.PathLike) -> None:
    """tokenizer.json and tokenizer_config.json for a WordPiece tokenizer, as BERT ships them."""
    directory = Path(directory)
    cls, sep = tok.cls_token, tok.sep_token
    template = {"single": [{"SpecialToken": {"id": cls, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                           {"SpecialToken": {"id": sep, "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": cls, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                         {"SpecialToken": {"id": sep, "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}},
                         {"SpecialToken": {"id": sep, "type_id": 1}}],
                "special_tokens": {t: {"id": t, "ids": [tok.token_id(t)], "tokens": [t]} for t in (cls, sep)}}
    data = {"version": "1.0", "truncation": None, "padding": None,
            "added_tokens": [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                              "normalized": False, "special": True}
                             for t, i in sorted(tok.special_tokens.items(), key=lambda kv: kv[1])],
            "normalizer": {"type": "BertNormalizer", "clean_text": tok.clean_text,
                           "handle_chinese_chars": tok.chinese_chars, "strip_accents": tok.strip_accents,
                           "lowercase": tok.lowercase},
            "pre_tokenizer": {"type": "BertPreTokenizer"},
            "post_processor": {"type": "TemplateProcessing", **template},
            "decoder": {"type": "WordPiece", "prefix": tok.prefix, "cleanup": True},
            "model": {"type": "WordPiece", "unk_token": tok.unk_token, "continuing_subword_prefix": tok.prefix,
                      "max_input_chars_per_word": tok.max_input_chars_per_word,
                      "vocab": {piece: i for i, piece in enumerate(tok.vocab)}}}
    write_atomic(directory / "tokenizer.json", json.dumps(data, ensure_ascii=False))
    config = {"tokenizer_class": "BertTokenizerFast", "do_lower_case": tok.lowercase,
              "strip_accents": tok.strip_accents, "tokenize_chinese_chars": tok.chinese_chars,
              "model_max_length": tok.model_max_length,
              **{name: getattr(tok, name) for name in ("unk_token", "cls_token", "sep_token", "pad_token", "mask_token")}}
    write_atomic(directory / "tokenizer_config.json", json.dumps(config, ensure_ascii=False, indent=2))


def write_tiktoken(tok, path: str | os.PathLike) -> None:
    lines = [f"{base64.b64encode(token).decode('ascii')} {i}" for i, token in enumerate(tok.vocab)
             if not tok.is_special(i)]
    write_atomic(Path(path), "\n".join(lines) + "\n")
