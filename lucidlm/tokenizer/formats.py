"""Tokenizer files: read and write our format, Hugging Face tokenizer.json and tiktoken rank files;
read the tokenizer stored in a GGUF file's metadata.

Our format (lucidlm-tokenizer.json) keeps the merges as the source of truth: the byte tokens, the
merges [a, b, new] in rank order and the special tokens rebuild every token's bytes. A
lucidlm-tokenizer.vocab file beside it shows each token for people and is never read back.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from pathlib import Path
from typing import Any

from ..errors import FormatError
from ..files import read_json, write_atomic
from .byte_unicode import bytes_to_text, text_to_bytes
from .char import CharTokenizer
from .pretokenizer import GPT2_PATTERN, NAMED, SINGLE_DIGIT, PreTokenizer
from .tokenizer import Tokenizer

OUR_FILE = "lucidlm-tokenizer.json"
OUR_VOCAB_FILE = "lucidlm-tokenizer.vocab"
FORMAT_VERSION = 1


def load_tokenizer(path: str | os.PathLike, **options: Any):
    """Dispatch on what `path` is: a folder (ours, or a Hugging Face model folder), a GGUF file,
    a tokenizer.json, our JSON file, or a *.tiktoken rank file."""
    path = Path(path)
    if path.is_dir():
        if (path / OUR_FILE).exists():
            return load_ours(path / OUR_FILE)
        if (path / "tokenizer.json").exists():
            return load_tokenizer_json(path / "tokenizer.json")
        tiktokens = sorted(path.glob("*.tiktoken"))
        if tiktokens:
            return load_tiktoken(tiktokens[0], **options)
        raise FormatError(f"{path}: no tokenizer found (looked for {OUR_FILE}, tokenizer.json, *.tiktoken)")
    if not path.exists():
        raise FormatError(f"{path}: no such file or folder")
    if path.suffix == ".gguf":
        from ..gguf_file import read_metadata

        return tokenizer_from_gguf(read_metadata(path), str(path), **options)
    if path.suffix == ".tiktoken":
        return load_tiktoken(path, **options)
    if path.suffix == ".json":
        data = read_json(path)
        if str(data.get("format", "")).startswith("lucidlm."):
            return load_ours(path)
        return load_tokenizer_json(path, data)
    # tiktoken files are also shipped without a suffix (e.g. gpt2.tiktoken copies): sniff one line
    first = _first_line(path)
    if len(first.split()) == 2 and first.split()[1].isdigit():
        return load_tiktoken(path, **options)
    raise FormatError(f"{path}: not a tokenizer file lucidlm knows (GGUF, tokenizer.json, *.tiktoken, {OUR_FILE})")


def _first_line(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            return f.readline(200).decode("utf-8", errors="replace").strip()
    except OSError as exc:
        raise FormatError(f"{path}: cannot read: {exc.strerror}") from None


# --- merges in canonical form ---------------------------------------------------------------------

def merge_triples(tok: Tokenizer) -> list[tuple[int, int, int]]:
    """[(a, b, new)] in rank order. For a tiktoken ("ranks") tokenizer each token's merge is the
    last step BPE itself takes on that token's bytes, which is what a merges list must hold."""
    if tok.merge_rule == "merges":
        seen, out = set(), []
        for pair in tok.merges:
            if pair not in seen:
                seen.add(pair)
                out.append((pair[0], pair[1], tok.merge_results[tok.ranks[pair]]))
        return out
    out = []
    for token_id, token in enumerate(tok.vocab):
        if tok.is_special(token_id) or len(token) < 2 or tok.token_ids.get(token) != token_id:
            continue
        # BPE on the token's own bytes with every merge of a lower rank, down to two parts.
        ids = [tok.byte_ids[b] for b in token]
        while len(ids) > 2:
            merged = _merge_once(ids, tok.ranks, tok.merge_results, below=token_id)
            if merged is None:
                break
            ids = merged
        if len(ids) != 2:
            raise FormatError(f"token {token!r} cannot be built from two lower-ranked tokens")
        out.append((ids[0], ids[1], token_id))
    return out


def _merge_once(ids: list[int], ranks: dict, results: list[int], below: int) -> list[int] | None:
    """Merge the lowest-ranked adjacent pair with rank < below, or None if there is none."""
    best, best_i = below, -1
    for i in range(len(ids) - 1):
        rank = ranks.get((ids[i], ids[i + 1]), below)
        if rank < best:
            best, best_i = rank, i
    if best_i < 0:
        return None
    return ids[:best_i] + [results[best]] + ids[best_i + 2:]


# --- our format -----------------------------------------------------------------------------------

def save_ours(tok, directory: str | os.PathLike) -> None:
    directory = Path(directory)
    if isinstance(tok, CharTokenizer):
        write_atomic(directory / OUR_FILE, json.dumps({"format": "lucidlm.char", "version": FORMAT_VERSION,
                                                        "chars": tok.chars}, ensure_ascii=False, indent=1))
        return
    triples = merge_triples(tok)
    made = {new for _, _, new in triples} | set(tok.special_tokens.values())
    data = {
        "format": "lucidlm.bpe", "version": FORMAT_VERSION,
        "vocab_size": tok.vocab_size,
        "pre_tokenizer": tok.pre_tokenizer.to_dict(),
        "merge_rule": tok.merge_rule, "ignore_merges": tok.ignore_merges,
        # every token not made by a merge: the 256 bytes, and any stray entries of loaded vocabularies
        "base_tokens": {str(i): t.hex() for i, t in enumerate(tok.vocab) if i not in made},
        "merges": [list(t) for t in triples],
        "special_tokens": tok.special_tokens,
        "bos_token": tok.bos_token, "eos_token": tok.eos_token, "pad_token": tok.pad_token,
        "unk_token": tok.unk_token, "add_bos_token": tok.add_bos_token,
        "eos_token_ids": sorted(tok._extra_eos), "chat_template": tok.chat_template,
    }
    write_atomic(directory / OUR_FILE, json.dumps(data, ensure_ascii=False, indent=None))
    lines = []
    origin = {new: (a, b) for a, b, new in triples}
    for i, token in enumerate(tok.vocab):
        shown = repr(token.decode("utf-8", errors="backslashreplace"))[1:-1]
        note = "special" if tok.is_special(i) else (f"{origin[i][0]} + {origin[i][1]}" if i in origin else "byte")
        lines.append(f"{i}\t{shown}\t{note}")
    write_atomic(directory / OUR_VOCAB_FILE, "\n".join(lines) + "\n")


def load_ours(path: str | os.PathLike):
    path = Path(path)
    data = read_json(path)
    kind = data.get("format")
    if data.get("version") != FORMAT_VERSION:
        raise FormatError(f"{path}: unsupported tokenizer format version {data.get('version')!r}")
    try:
        if kind == "lucidlm.char":
            return CharTokenizer(data["chars"])
        if kind != "lucidlm.bpe":
            raise FormatError(f"{path}: unknown tokenizer kind {kind!r}")
        size = int(data["vocab_size"])
        vocab: list[bytes | None] = [None] * size
        for key, hexed in data["base_tokens"].items():
            vocab[int(key)] = bytes.fromhex(hexed)
        for text, i in data["special_tokens"].items():
            vocab[i] = text.encode("utf-8")
        merges = []
        for n, (a, b, new) in enumerate(data["merges"]):
            if vocab[a] is None or vocab[b] is None:
                raise FormatError(f"{path}: merge #{n} uses token {a if vocab[a] is None else b} before it exists")
            vocab[new] = vocab[a] + vocab[b]
            merges.append((a, b))
        holes = [i for i, t in enumerate(vocab) if t is None]
        if holes:
            raise FormatError(f"{path}: token ids {holes[:5]} are defined by no byte, merge or special token")
        return Tokenizer(vocab, merges, PreTokenizer.from_dict(data["pre_tokenizer"]), data["special_tokens"],
                         merge_rule=data.get("merge_rule", "merges"), ignore_merges=data.get("ignore_merges", False),
                         bos_token=data.get("bos_token"), eos_token=data.get("eos_token"),
                         pad_token=data.get("pad_token"), unk_token=data.get("unk_token"),
                         add_bos_token=bool(data.get("add_bos_token", False)),
                         chat_template=data.get("chat_template"), eos_token_ids=data.get("eos_token_ids", ()))
    except FormatError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise FormatError(f"{path}: malformed tokenizer file ({type(exc).__name__}: {exc})") from None


# --- Hugging Face tokenizer.json ---------------------------------------------------------------

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
                import regex

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


def load_tokenizer_json(path: str | os.PathLike, data: dict[str, Any] | None = None) -> Tokenizer:
    path = Path(path)
    origin = str(path)
    data = data if data is not None else read_json(path)
    model = data.get("model")
    if not isinstance(model, dict):
        raise FormatError(f"{origin}: no 'model' section; not a tokenizer.json")
    if model.get("type") != "BPE":
        raise FormatError(f"{origin}: unsupported tokenizer kind {model.get('type')!r} (only byte-level BPE)")
    if model.get("byte_fallback"):
        raise FormatError(f"{origin}: byte-fallback (SentencePiece-style) BPE is not supported")
    if data.get("normalizer") is not None:
        raise FormatError(f"{origin}: tokenizers with a normalizer are not supported")
    pre = _pre_tokenizer_from_hf(data.get("pre_tokenizer"), origin)
    try:
        vocab_map: dict[str, int] = model["vocab"]
        added = {t["content"]: int(t["id"]) for t in data.get("added_tokens", [])}
        size = max([*vocab_map.values(), *added.values()]) + 1
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
    return Tokenizer(vocab, merges, pre, added, ignore_merges=bool(model.get("ignore_merges", False)),
                     bos_token=_token_text(config.get("bos_token")), eos_token=_token_text(config.get("eos_token")),
                     pad_token=_token_text(config.get("pad_token")), unk_token=_token_text(config.get("unk_token")),
                     add_bos_token=add_bos, chat_template=template)


def save_tokenizer_json(tok: Tokenizer, path: str | os.PathLike) -> None:
    """Write tokenizer.json (and tokenizer_config.json beside it) that `tokenizers` and
    transformers load with the same ids as ours."""
    path = Path(path)
    vocab = {}
    for i, token in enumerate(tok.vocab):
        text = token.decode("utf-8") if tok.is_special(i) else bytes_to_text(token)
        vocab.setdefault(text, i)
    merges = [[bytes_to_text(tok.vocab[a]), bytes_to_text(tok.vocab[b])] for a, b, _ in merge_triples(tok)]
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
        "post_processor": None,
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


# --- tiktoken rank files ---------------------------------------------------------------------------

def load_tiktoken(path: str | os.PathLike, pattern: str = "gpt2",
                  special_tokens: dict[str, int] | None = None, eos_token: str | None = None, **_: Any) -> Tokenizer:
    """A tiktoken rank file holds only the ordinary tokens; the pattern and the special tokens are
    not in it. Defaults follow tiktoken's GPT-2 encoding: GPT-2's pattern and <|endoftext|> as the
    id after the last rank."""
    path = Path(path)
    ranks: dict[int, bytes] = {}
    try:
        with open(path, "rb") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                token, rank = line.split()
                ranks[int(rank)] = base64.b64decode(token, validate=True)
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
    return Tokenizer(vocab, [], PreTokenizer.named(pattern), special_tokens, merge_rule="ranks", eos_token=eos_token)


def save_tiktoken(tok: Tokenizer, path: str | os.PathLike) -> None:
    lines = [f"{base64.b64encode(token).decode('ascii')} {i}" for i, token in enumerate(tok.vocab)
             if not tok.is_special(i)]
    write_atomic(Path(path), "\n".join(lines) + "\n")


# --- GGUF metadata ---------------------------------------------------------------------------------

TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED = 3, 4


def tokenizer_from_gguf(meta: dict[str, Any], origin: str, pre_tokenizer: str | None = None, **_: Any) -> Tokenizer:
    kind = meta.get("tokenizer.ggml.model")
    if kind is None:
        raise FormatError(f"{origin}: the GGUF file has no tokenizer (no tokenizer.ggml.model)")
    if kind != "gpt2":
        raise FormatError(f"{origin}: unsupported tokenizer kind {kind!r} (only byte-level BPE, 'gpt2')")
    tokens = meta.get("tokenizer.ggml.tokens")
    merges_text = meta.get("tokenizer.ggml.merges")
    if not isinstance(tokens, list) or not isinstance(merges_text, list):
        raise FormatError(f"{origin}: the GGUF tokenizer lacks tokenizer.ggml.tokens or tokenizer.ggml.merges")
    pre_name = pre_tokenizer or meta.get("tokenizer.ggml.pre")
    if pre_name is None:
        raise FormatError(f"{origin}: the GGUF file does not name its pre-tokenizer (tokenizer.ggml.pre); "
                          f"pass pre_tokenizer=")
    pre = PreTokenizer.named(pre_name)
    types = meta.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    if len(types) != len(tokens):
        raise FormatError(f"{origin}: {len(tokens)} tokens but {len(types)} token types")
    specials, vocab, ids = {}, [], {}
    for i, (text, kind_) in enumerate(zip(tokens, types)):
        if kind_ in (TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED):
            specials[text] = i
            vocab.append(text.encode("utf-8"))
        else:
            data = text_to_bytes(text)
            if data is None:
                raise FormatError(f"{origin}: token {i} {text!r} is not byte-level text")
            vocab.append(data)
        ids.setdefault(text, i)
    merges = []
    for n, merge in enumerate(merges_text):
        parts = merge.split(" ")
        if len(parts) != 2 or parts[0] not in ids or parts[1] not in ids:
            raise FormatError(f"{origin}: merge #{n} {merge!r} uses a token not in the vocabulary")
        merges.append((ids[parts[0]], ids[parts[1]]))

    def token(key: str) -> str | None:
        i = meta.get(f"tokenizer.ggml.{key}_token_id")
        return tokens[i] if isinstance(i, int) and 0 <= i < len(tokens) else None

    return Tokenizer(vocab, merges, pre, specials, bos_token=token("bos"), eos_token=token("eos"),
                     pad_token=token("padding"), unk_token=token("unknown"),
                     add_bos_token=bool(meta.get("tokenizer.ggml.add_bos_token", False)),
                     chat_template=meta.get("tokenizer.chat_template"))
