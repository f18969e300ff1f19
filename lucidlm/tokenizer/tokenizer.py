"""Tokenizer: byte-level BPE with a regex pre-split, special tokens and a chat template.

Text -> pieces (pre-tokenizer) -> each piece's UTF-8 bytes -> merged by rank (bpe.merge_piece),
with a cache per piece, since real text repeats its words. Special-token strings in text are plain
text unless the caller allows them, so a user cannot forge a chat turn by typing "<|im_start|>".

Two merge rules exist in the wild and both are here: "merges" (Hugging Face, GGUF: a pair may merge
only if it is in the merge list) and "ranks" (tiktoken: a pair merges if the bytes it makes are a
token, ranked by that token's id).
"""

from __future__ import annotations

import os
from itertools import chain
from typing import Any, Iterable, Sequence

import regex

from ..errors import MALFORMED, FormatError, LucidError
from .ascii import AsciiTokenizer
from .bpe import merge_below, merge_piece, train_merges
from .byte import ByteTokenizer
from .char import CharTokenizer
from .files import read_tokenizer_data, write_ours, write_tiktoken, write_tokenizer_json
from .our_format import (ASCII_FORMAT, BPE_FORMAT, BYTE_FORMAT, CHAR_FORMAT, FORMAT_VERSION, WORD_FORMAT,
                         WORDPIECE_FORMAT, made_by_merges, vocab_and_merges)
from .word import WordTokenizer
from .wordpiece import WordPieceTokenizer
from .pretokenizer import PreTokenizer
from .special_tokens import add_special_tokens

CACHE_LIMIT = 1 << 18  # pieces; cleared when full, which real text reaches rarely


class Tokenizer:
    kind = "bpe"

    def __init__(self, vocab: Sequence[bytes], merges: Sequence[tuple[int, int]], pre_tokenizer: PreTokenizer,
                 special_tokens: dict[str, int] | None = None, *, merge_rule: str = "merges",
                 ignore_merges: bool = False, bos_token: str | None = None, eos_token: str | None = None,
                 pad_token: str | None = None, unk_token: str | None = None, add_bos_token: bool = False,
                 chat_template: str | None = None, eos_token_ids: Iterable[int] = ()) -> None:
        self.vocab: list[bytes] = list(vocab)  # id -> bytes (a special token: its UTF-8 text)
        self.special_tokens: dict[str, int] = dict(special_tokens or {})
        self.pre_tokenizer = pre_tokenizer
        self.merge_rule = merge_rule
        self.ignore_merges = ignore_merges
        self.bos_token, self.eos_token, self.pad_token, self.unk_token = bos_token, eos_token, pad_token, unk_token
        self.add_bos_token = add_bos_token
        self.chat_template = chat_template
        self._extra_eos = set(eos_token_ids)
        self._build(list(merges))

    def _build(self, merges: list[tuple[int, int]]) -> None:
        special_ids = set(self.special_tokens.values())
        for text, i in self.special_tokens.items():
            if not 0 <= i < len(self.vocab):
                raise FormatError(f"special token {text!r} has id {i}, outside the vocabulary of {len(self.vocab)}")
        # bytes -> id, ordinary tokens only (a repeated token: its first id). Built by one dict() call:
        # a GGUF model's tokenizer is built at every load, and a loop spent 40 ms here.
        keys: list[bytes | None] = list(self.vocab)
        for i in special_ids:
            keys[i] = None
        self.token_ids: dict[bytes, int] = dict(zip(reversed(keys), range(len(keys) - 1, -1, -1)))
        self.token_ids.pop(None, None)
        # Some real vocabularies lack a few bytes (SmolLM2 has no token for b"\x04" or for 0xC0,
        # which UTF-8 never uses). Like `tokenizers` and llama.cpp, such bytes are dropped.
        self.byte_ids: list[int | None] = [self.token_ids.get(bytes([b])) for b in range(256)]
        if sum(i is not None for i in self.byte_ids) < 128:
            raise FormatError("the vocabulary lacks most single-byte tokens: not a byte-level BPE vocabulary")
        self.missing_bytes = bytes(b for b in range(256) if self.byte_ids[b] is None)

        # ranks[(a, b)]: the pair's merge priority (lower first); merge_results[rank]: what it makes.
        self.ranks: dict[tuple[int, int], int] = {}
        if self.merge_rule == "ranks":
            # tiktoken: any split of a token into two tokens is a pair that merges at the token's
            # rank, which is its id.
            self.merge_results = list(range(len(self.vocab)))
            for i, token in enumerate(self.vocab):
                if i in special_ids or len(token) < 2:
                    continue
                for cut in range(1, len(token)):
                    a, b = self.token_ids.get(token[:cut]), self.token_ids.get(token[cut:])
                    if a is not None and b is not None:
                        self.ranks[(a, b)] = i
        elif self.merge_rule == "merges":
            pairs = list(map(tuple, merges))
            n = len(self.vocab)
            ends = list(chain.from_iterable(pairs))
            outside = len(pairs)  # the first merge naming a token outside the vocabulary, if any
            if ends and (min(ends) < 0 or max(ends) >= n):
                outside = next(r for r, (a, b) in enumerate(pairs) if not (0 <= a < n and 0 <= b < n))
            vocab, find = self.vocab, self.token_ids.get
            self.merge_results = [find(vocab[a] + vocab[b]) for a, b in pairs[:outside]]
            if None in self.merge_results:  # the first bad merge is reported, whichever way it is bad
                rank = self.merge_results.index(None)
                made = vocab[pairs[rank][0]] + vocab[pairs[rank][1]]
                raise FormatError(f"merge #{rank} makes {made!r}, which is not in the vocabulary")
            if outside < len(pairs):
                raise FormatError(f"merge #{outside} {pairs[outside]} refers to a token outside the vocabulary")
            # a pair merged twice keeps its first rank
            self.ranks = dict(zip(reversed(pairs), range(len(pairs) - 1, -1, -1)))
        else:
            raise FormatError(f"unknown merge rule {self.merge_rule!r} (known: merges, ranks)")
        self.merges = merges
        self._special_ids = special_ids
        self._cache: dict[str, list[int]] = {}
        self._special_splitters: dict[frozenset, Any] = {}

    # --- facts ---------------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def __len__(self) -> int:
        return len(self.vocab)

    def token_id(self, text: str | None) -> int | None:
        if text is None:
            return None
        if text in self.special_tokens:
            return self.special_tokens[text]
        return self.token_ids.get(text.encode("utf-8"))

    @property
    def bos_token_id(self) -> int | None:
        return self.token_id(self.bos_token)

    @property
    def eos_token_id(self) -> int | None:
        return self.token_id(self.eos_token)

    @property
    def pad_token_id(self) -> int | None:
        return self.token_id(self.pad_token)

    @property
    def eos_token_ids(self) -> set[int]:
        """Every id that ends generation: the EOS token and any the generation config adds."""
        ids = set(self._extra_eos)
        if self.eos_token_id is not None:
            ids.add(self.eos_token_id)
        return ids

    def add_eos_token_ids(self, ids: Iterable[int]) -> None:
        self._extra_eos.update(ids)

    def is_special(self, token_id: int) -> bool:
        return token_id in self._special_ids

    def token_bytes(self, token_id: int) -> bytes:
        return self.vocab[token_id]

    # --- encoding ------------------------------------------------------------------------------

    def _bpe(self, piece: str) -> list[int]:
        data = piece.encode("utf-8", errors="surrogatepass")
        if self.ignore_merges:  # Llama 3: a piece that is already a token is taken whole
            whole = self.token_ids.get(data)
            if whole is not None:
                return [whole]
        byte_ids = self.byte_ids
        if self.missing_bytes:
            return merge_piece([byte_ids[b] for b in data if byte_ids[b] is not None], self.ranks, self.merge_results)
        return merge_piece([byte_ids[b] for b in data], self.ranks, self.merge_results)

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode text with no special-token handling at all."""
        cache = self._cache
        if len(cache) > CACHE_LIMIT:
            cache.clear()
        out: list[int] = []
        extend = out.extend
        for piece in self.pre_tokenizer.split(text):
            ids = cache.get(piece)
            if ids is None:
                ids = cache[piece] = self._bpe(piece)
            extend(ids)
        return out

    def encode(self, text: str, allowed_special: str | Iterable[str] = (), add_bos: bool = False) -> list[int]:
        """Text -> ids. Special-token strings are plain text unless listed in allowed_special
        (or allowed_special="all"). add_bos prepends the BOS token."""
        if not isinstance(text, str):
            raise LucidError(f"encode expects a string, got {type(text).__name__}")
        prefix = [self.bos_token_id] if add_bos and self.bos_token_id is not None else []
        allowed = set(self.special_tokens) if allowed_special == "all" else set(allowed_special)
        unknown = allowed - set(self.special_tokens)
        if unknown:
            raise LucidError(f"not special tokens of this tokenizer: {', '.join(sorted(unknown))}")
        if not allowed:
            return prefix + self.encode_ordinary(text)
        out = prefix
        for chunk, special in self.split_special(text, allowed):
            out.extend([self.special_tokens[chunk]] if special else self.encode_ordinary(chunk))
        return out

    def split_special(self, text: str, allowed: Iterable[str]) -> list[tuple[str, bool]]:
        """Cut text at occurrences of the allowed special tokens: [(chunk, is_special), ...]."""
        key = frozenset(allowed)
        splitter = self._special_splitters.get(key)
        if splitter is None:
            # Longest first, so "<|im_start|>" wins over a special that is its prefix.
            alternatives = "|".join(regex.escape(s) for s in sorted(key, key=len, reverse=True))
            splitter = self._special_splitters[key] = regex.compile(f"({alternatives})")
        parts = splitter.split(text)
        # split() alternates text, special, text, ...; odd indices are the specials.
        return [(part, i % 2 == 1) for i, part in enumerate(parts) if part]

    def encode_batch(self, texts: Iterable[str], allowed_special: str | Iterable[str] = ()) -> list[list[int]]:
        return [self.encode(t, allowed_special) for t in texts]

    # --- decoding ------------------------------------------------------------------------------

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        ids = list(ids)
        vocab = self.vocab
        if ids and (min(ids) < 0 or max(ids) >= len(vocab)):
            bad = next(i for i in ids if not 0 <= i < len(vocab))
            raise LucidError(f"token id {bad} is outside the vocabulary of {len(vocab)}")
        return b"".join([vocab[i] for i in ids])

    def decode(self, ids: Iterable[int] | int, skip_special_tokens: bool = False) -> str:
        """Ids (or one id) -> text. Invalid UTF-8 (a character cut between tokens) is replaced, at
        the end only."""
        ids = [ids] if isinstance(ids, int) else ids
        if skip_special_tokens:
            ids = [i for i in ids if i not in self._special_ids]
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    # --- special tokens and templates ----------------------------------------------------------

    def add_special_tokens(self, tokens: dict[str, Any]) -> int:
        """Add special tokens, Hugging Face style: {"additional_special_tokens": [...], "pad_token":
        "<pad>", "cls_token": ...}; a named kind becomes that attribute. Returns how many new ids
        were created (the model then needs resize_token_embeddings(len(tokenizer)))."""
        return add_special_tokens(self, tokens)

    def add_special(self, text: str) -> bool:
        """Make `text` a special token (a new id at the end, unless it is a token already); True
        when a new id was made."""
        if text in self.special_tokens:
            return False
        existing = self.token_ids.get(text.encode("utf-8"))
        created = existing is None
        if created:
            self.vocab.append(text.encode("utf-8"))
            existing = len(self.vocab) - 1
        self.special_tokens[text] = existing
        self._build(self.merges)
        return created

    def chat_chunks(self, messages: list[dict[str, Any]], add_generation_prompt: bool = False,
                    **kwargs: Any) -> list[tuple[str, bool]]:
        """The rendered conversation as [(text, is_special_token)] chunks, in order."""
        from .chat_template import render_chat  # jinja2 costs 80 ms to import: only when chatting

        return render_chat(self, messages, add_generation_prompt, **kwargs)

    def apply_chat_template(self, messages: list[dict[str, Any]], add_generation_prompt: bool = False,
                            tokenize: bool = True, **kwargs: Any):
        """Render a conversation with the model's own template (or ChatML when it has none).

        tokenize=True returns ids: the template's special tokens become special ids, while special
        strings inside message contents stay plain text. tokenize=False returns the string.
        """
        parts = self.chat_chunks(messages, add_generation_prompt, **kwargs)
        if not tokenize:
            return "".join(text for text, _ in parts)
        ids: list[int] = []
        for text, special in parts:
            ids.extend([self.special_tokens[text]] if special else self.encode_ordinary(text))
        return ids

    # --- training ------------------------------------------------------------------------------

    @classmethod
    def train(cls, texts: str | Iterable[str], vocab_size: int, pattern: str = "gpt4",
              special_tokens: Sequence[str] = ("<|endoftext|>",), progress: bool = False,
              eos_token: str | None = "<|endoftext|>") -> "Tokenizer":
        """Learn a byte-level BPE: 256 byte tokens, then merges, then the special tokens, in that
        id order. `pattern` names a pre-tokenizer ("gpt2", "gpt4", "llama3", ...)."""
        pre = PreTokenizer.named(pattern)
        n_merges = vocab_size - 256 - len(special_tokens)
        if n_merges < 0:
            raise LucidError(f"vocab size {vocab_size} is too small: 256 bytes and "
                             f"{len(special_tokens)} special tokens need {256 + len(special_tokens)}")
        if isinstance(texts, str):
            texts = [texts]
        counts: dict[str, int] = {}
        for text in texts:
            for piece in pre.split(text):
                counts[piece] = counts.get(piece, 0) + 1
        word_counts: dict[bytes, int] = {}
        for piece, count in counts.items():
            data = piece.encode("utf-8", errors="surrogatepass")
            word_counts[data] = word_counts.get(data, 0) + count

        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=n_merges, desc="merges", unit="merge")
        try:
            merges = train_merges(word_counts, n_merges, on_merge=(lambda _: bar.update(1)) if bar else None)
        finally:
            if bar is not None:
                bar.close()
        vocab = [bytes([b]) for b in range(256)]
        for a, b in merges:
            vocab.append(vocab[a] + vocab[b])
        specials = {}
        for text in special_tokens:
            specials[text] = len(vocab)
            vocab.append(text.encode("utf-8"))
        return cls(vocab, merges, pre, specials, eos_token=eos_token if eos_token in specials else None)

    # --- our dict format and files --------------------------------------------------------------

    def merge_triples(self) -> list[tuple[int, int, int]]:
        """[(a, b, new)] in rank order. For a tiktoken ("ranks") tokenizer each token's merge is the
        last step BPE itself takes on that token's bytes, which is what a merges list must hold."""
        if self.merge_rule == "merges":
            seen, out = set(), []
            for pair in self.merges:
                if pair not in seen:
                    seen.add(pair)
                    out.append((pair[0], pair[1], self.merge_results[self.ranks[pair]]))
            return out
        out = []
        for token_id, token in enumerate(self.vocab):
            if self.is_special(token_id) or len(token) < 2 or self.token_ids.get(token) != token_id:
                continue
            ids = merge_below([self.byte_ids[b] for b in token], self.ranks, self.merge_results, token_id)
            if len(ids) != 2:
                raise FormatError(f"token {token!r} cannot be built from two lower-ranked tokens")
            out.append((ids[0], ids[1], token_id))
        return out

    def to_dict(self) -> dict[str, Any]:
        """Our format (lucidlm-tokenizer.json): JSON-ready, read back by from_dict. Tokens that a
        merge makes are stored as that merge only."""
        triples = self.merge_triples() if self.merge_rule == "merges" else []
        made = made_by_merges(triples)
        return {"format": BPE_FORMAT, "version": FORMAT_VERSION, "vocab_size": self.vocab_size,
                "pre_tokenizer": self.pre_tokenizer.to_dict(), "merge_rule": self.merge_rule,
                "ignore_merges": self.ignore_merges,
                "base_tokens": {str(i): t.hex() for i, t in enumerate(self.vocab)
                                if i not in made and not self.is_special(i)},
                "merges": [list(t) for t in triples], "special_tokens": self.special_tokens,
                "bos_token": self.bos_token, "eos_token": self.eos_token, "pad_token": self.pad_token,
                "unk_token": self.unk_token, "add_bos_token": self.add_bos_token,
                "eos_token_ids": sorted(self._extra_eos), "chat_template": self.chat_template}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Tokenizer":
        origin = data.get("origin") or "tokenizer"
        try:
            vocab, merges = vocab_and_merges(data, origin)
            return cls(vocab, merges, PreTokenizer.from_dict(data["pre_tokenizer"]), data["special_tokens"],
                       merge_rule=data.get("merge_rule", "merges"), ignore_merges=data.get("ignore_merges", False),
                       bos_token=data.get("bos_token"), eos_token=data.get("eos_token"),
                       pad_token=data.get("pad_token"), unk_token=data.get("unk_token"),
                       add_bos_token=bool(data.get("add_bos_token", False)),
                       chat_template=data.get("chat_template"), eos_token_ids=data.get("eos_token_ids", ()))
        except FormatError as exc:
            raise FormatError(str(exc) if str(exc).startswith(origin) else f"{origin}: {exc}") from None
        except MALFORMED as exc:
            raise FormatError(f"{origin}: malformed tokenizer file ({type(exc).__name__}: {exc})") from None

    @classmethod
    def from_file(cls, path: str | os.PathLike, **options: Any):
        """Load from our folder format, a tokenizer.json, a GGUF file, a *.tiktoken rank file, a
        model folder holding any of them or a hub id (a character tokenizer comes back as one)."""
        return load_tokenizer(path, **options)

    def save(self, directory: str | os.PathLike) -> None:
        """Our format: lucidlm-tokenizer.json, with lucidlm-tokenizer.vocab beside it for people."""
        write_ours(self, directory)

    def save_hf(self, path: str | os.PathLike) -> None:
        write_tokenizer_json(self, path)

    def save_tiktoken(self, path: str | os.PathLike) -> None:
        write_tiktoken(self, path)

    def __repr__(self) -> str:
        return (f"Tokenizer(vocab_size={self.vocab_size}, pre_tokenizer={self.pre_tokenizer.name or 'custom'}, "
                f"specials={len(self.special_tokens)}, rule={self.merge_rule})")


def tokenizer_from_dict(data: dict[str, Any]):
    """Our dict format -> the tokenizer it describes (byte-level BPE, WordPiece, or one id per
    character, ASCII code point, byte or word)."""
    kinds = {CHAR_FORMAT: CharTokenizer, WORDPIECE_FORMAT: WordPieceTokenizer, ASCII_FORMAT: AsciiTokenizer,
             BYTE_FORMAT: ByteTokenizer, WORD_FORMAT: WordTokenizer}
    return kinds.get(data.get("format"), Tokenizer).from_dict(data)


# The tokenizers a flag can name (--tokenizer char|ascii|bytes|words): one id per unit of text.
UNIT_TOKENIZERS = {"char": CharTokenizer, "ascii": AsciiTokenizer, "bytes": ByteTokenizer, "words": WordTokenizer}


def unit_tokenizer(name: str, text: str):
    """The named unit tokenizer; char and words learn their vocabulary from text."""
    return UNIT_TOKENIZERS[name].train(text)


def load_tokenizer(path: str | os.PathLike, **options: Any):
    """The tokenizer at `path`, whatever kind of file or folder it is (see lucidlm/locate.py)."""
    return tokenizer_from_dict(read_tokenizer_data(path, **options))
