"""WordPiece (Schuster & Nakajima 2012; BERT, Devlin et al. 2019): the tokenizer of encoder models.

Text -> BERT's normaliser (control characters removed, whitespace made plain, CJK characters
spaced out, accents stripped and lowercased where configured) -> words split at whitespace and
punctuation -> each word cut greedily into the longest vocabulary pieces from its start, later
pieces written "##piece"; a word that cannot be cut, or is longer than `max_input_chars_per_word`,
is [UNK]. Then [CLS] A [SEP] (B [SEP]) with token-type ids 0 for A and 1 for B. The rules follow
`tokenizers`' BertNormalizer, BertPreTokenizer and WordPiece, which the tests use as the oracle.
"""

from __future__ import annotations

import os
import unicodedata
from typing import Any, Iterable, Sequence

import regex

from ..errors import FormatError, LucidError
from .files import write_ours, write_vocab_txt, write_wordpiece_json
from .our_format import FORMAT_VERSION, WORDPIECE_FORMAT
from .special_tokens import add_special_tokens
from .wordpiece_train import train_wordpiece_vocab

ASCII_PUNCTUATION = set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
              (0x2B920, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))
SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
CLEANUP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
           (" do not", " don't"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


def is_control(ch: str) -> bool:
    return ch not in "\t\n\r" and unicodedata.category(ch).startswith("C")


def is_whitespace(ch: str) -> bool:
    return ch in "\t\n\r" or ch.isspace()


def is_punctuation(ch: str) -> bool:
    return ch in ASCII_PUNCTUATION or unicodedata.category(ch).startswith("P")


def is_cjk(ch: str) -> bool:
    code = ord(ch)
    return any(low <= code <= high for low, high in CJK_RANGES)


def normalize(text: str, lowercase: bool = True, strip_accents: bool | None = None, clean_text: bool = True,
              chinese_chars: bool = True) -> str:
    """BERT's normaliser, in tokenizers' order: clean, space out CJK, strip accents, lowercase."""
    if clean_text:
        text = "".join(" " if is_whitespace(c) else c for c in text
                       if not (c == "\0" or c == "\ufffd" or is_control(c)))
    if chinese_chars:
        text = "".join(f" {c} " if is_cjk(c) else c for c in text)
    if lowercase if strip_accents is None else strip_accents:
        text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
    return text.lower() if lowercase else text


def split_words(text: str) -> list[str]:
    """BertPreTokenizer: whitespace separates words and goes; every punctuation character is a word."""
    words, current = [], []
    for ch in text:
        if is_whitespace(ch) or is_punctuation(ch):
            if current:
                words.append("".join(current))
                current = []
            if not is_whitespace(ch):
                words.append(ch)
        else:
            current.append(ch)
    if current:
        words.append("".join(current))
    return words


class WordPieceTokenizer:
    kind = "wordpiece"
    chat_template = None
    add_bos_token = False
    bos_token = eos_token = None
    bos_token_id = eos_token_id = None

    def __init__(self, vocab: Sequence[str], special_tokens: dict[str, int] | None = None, *, lowercase: bool = True,
                 strip_accents: bool | None = None, clean_text: bool = True, chinese_chars: bool = True,
                 prefix: str = "##", max_input_chars_per_word: int = 100, unk_token: str = "[UNK]",
                 cls_token: str = "[CLS]", sep_token: str = "[SEP]", pad_token: str = "[PAD]",
                 mask_token: str = "[MASK]", model_max_length: int = 512) -> None:
        self.vocab: list[str] = list(vocab)  # id -> piece ("##" marks a piece that continues a word)
        self.ids = {piece: i for i, piece in reversed(list(enumerate(self.vocab)))}
        if len(self.ids) < len(self.vocab):
            raise FormatError("the WordPiece vocabulary holds a piece twice")
        self.special_tokens = dict(special_tokens if special_tokens is not None else
                                   {t: self.ids[t] for t in SPECIALS if t in self.ids})
        self.lowercase, self.strip_accents, self.clean_text = lowercase, strip_accents, clean_text
        self.chinese_chars, self.prefix, self.max_input_chars_per_word = chinese_chars, prefix, max_input_chars_per_word
        self.unk_token, self.cls_token, self.sep_token = unk_token, cls_token, sep_token
        self.pad_token, self.mask_token = pad_token, mask_token
        self.model_max_length = model_max_length
        for name in ("unk_token", "cls_token", "sep_token"):
            if getattr(self, name) not in self.ids:
                raise FormatError(f"the WordPiece vocabulary has no {name} {getattr(self, name)!r}")
        self._special_ids = set(self.special_tokens.values())
        self._cache: dict[str, list[int]] = {}

    # --- facts ---------------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def __len__(self) -> int:
        return len(self.vocab)

    def token_id(self, text: str | None) -> int | None:
        return None if text is None else self.ids.get(text)

    unk_token_id = property(lambda self: self.token_id(self.unk_token))
    cls_token_id = property(lambda self: self.token_id(self.cls_token))
    sep_token_id = property(lambda self: self.token_id(self.sep_token))
    pad_token_id = property(lambda self: self.token_id(self.pad_token))
    mask_token_id = property(lambda self: self.token_id(self.mask_token))
    eos_token_ids: set[int] = set()

    def is_special(self, token_id: int) -> bool:
        return token_id in self._special_ids

    def token_bytes(self, token_id: int) -> bytes:
        return self.vocab[token_id].encode("utf-8")

    def add_eos_token_ids(self, ids: Iterable[int]) -> None:
        pass  # an encoder does not generate

    def add_special_tokens(self, tokens: dict[str, Any]) -> int:
        """Hugging Face's add_special_tokens: {"mask_token": "<mask>", ...}; returns how many new
        ids were made (the model then needs resize_token_embeddings(len(tokenizer)))."""
        return add_special_tokens(self, tokens)

    def add_special(self, text: str) -> bool:
        """Make `text` a special token (a new id at the end unless it is a piece already); True
        when a new id was made. A special token is matched whole in text, before lowercasing."""
        if text in self.special_tokens:
            return False
        created = text not in self.ids
        if created:
            self.vocab.append(text)
            self.ids[text] = len(self.vocab) - 1
        self.special_tokens[text] = self.ids[text]
        self._special_ids.add(self.ids[text])
        return created

    # --- encoding ------------------------------------------------------------------------------

    def _word(self, word: str) -> list[int]:
        """Greedy longest-match-first from the word's start; [UNK] for the whole word if stuck."""
        if len(word) > self.max_input_chars_per_word:
            return [self.ids[self.unk_token]]
        pieces, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else self.prefix + word[start:end]
                if piece in self.ids:
                    pieces.append(self.ids[piece])
                    break
                end -= 1
            else:
                return [self.ids[self.unk_token]]
            start = end
        return pieces

    def encode_ordinary(self, text: str) -> list[int]:
        """Text -> piece ids, no [CLS]/[SEP] and no special-token handling."""
        out: list[int] = []
        for word in split_words(normalize(text, self.lowercase, self.strip_accents, self.clean_text,
                                          self.chinese_chars)):
            ids = self._cache.get(word)
            if ids is None:
                ids = self._cache[word] = self._word(word)
            out.extend(ids)
        return out

    def encode(self, text: str, allowed_special: str | Iterable[str] = (), add_special_tokens: bool = False,
               add_bos: bool = False) -> list[int]:
        """Text -> ids. Special-token strings ("[MASK]") are plain text unless allowed (or "all");
        add_special_tokens=True wraps the ids as [CLS] ... [SEP]."""
        if not isinstance(text, str):
            raise LucidError(f"encode expects a string, got {type(text).__name__}")
        allowed = set(self.special_tokens) if allowed_special == "all" else set(allowed_special)
        unknown = allowed - set(self.special_tokens)
        if unknown:
            raise LucidError(f"not special tokens of this tokenizer: {', '.join(sorted(unknown))}")
        if not allowed:
            ids = self.encode_ordinary(text)
        else:
            pattern = "|".join(regex.escape(s) for s in sorted(allowed, key=len, reverse=True))
            ids = []
            for i, part in enumerate(regex.split(f"({pattern})", text)):
                ids.extend([self.special_tokens[part]] if i % 2 else self.encode_ordinary(part))
        return self.with_specials(ids) if add_special_tokens else ids

    def with_specials(self, a: list[int], b: list[int] | None = None) -> list[int]:
        cls, sep = [self.cls_token_id], [self.sep_token_id]
        return cls + a + sep + (b + sep if b is not None else [])

    def type_ids(self, a: list[int], b: list[int] | None = None) -> list[int]:
        return [0] * (len(a) + 2) + ([1] * (len(b) + 1) if b is not None else [])

    def __call__(self, text: str | Sequence[str], text_pair: str | Sequence[str] | None = None,
                 padding: bool | str = False, truncation: bool | str = False, max_length: int | None = None,
                 return_tensors: str | None = None) -> dict[str, Any]:
        """Hugging Face's tokenizer call: input_ids, token_type_ids and attention_mask, for one text
        (or pair) or a batch; special-token strings are special here, as there."""
        single = isinstance(text, str)
        texts = [text] if single else list(text)
        pairs = [text_pair] if single and text_pair is not None else list(text_pair) if text_pair is not None else None
        if pairs is not None and len(pairs) != len(texts):
            raise LucidError(f"{len(texts)} texts but {len(pairs)} pairs")
        strategy = TRUNCATIONS.get(truncation)
        if strategy is None:
            raise LucidError(f"truncation={truncation!r}: choose from {', '.join(map(repr, TRUNCATIONS))}")
        limit = (max_length or self.model_max_length) if strategy != "do_not_truncate" else None
        rows = []
        for n, t in enumerate(texts):
            a = self.encode(t, allowed_special="all")
            b = self.encode(pairs[n], allowed_special="all") if pairs is not None else None
            if limit is not None:
                a, b = truncate_pair(a, b, limit - (3 if b is not None else 2), strategy)
            rows.append((self.with_specials(a, b), self.type_ids(a, b)))
        if padding and padding != "do_not_pad":
            width = max_length if padding == "max_length" and max_length else max(len(ids) for ids, _ in rows)
        else:
            width = None
        out = {"input_ids": [], "token_type_ids": [], "attention_mask": []}
        for ids, types in rows:
            pad = (width - len(ids)) if width is not None and width > len(ids) else 0
            out["input_ids"].append(ids + [self.pad_token_id] * pad)
            out["token_type_ids"].append(types + [0] * pad)
            out["attention_mask"].append([1] * len(ids) + [0] * pad)
        if return_tensors == "pt":
            import torch  # the tokenizer layer needs no torch otherwise

            return {k: torch.tensor(v) for k, v in out.items()}
        if return_tensors is not None:
            raise LucidError(f"return_tensors={return_tensors!r}: only 'pt' or None")
        return {k: v[0] for k, v in out.items()} if single else out

    # --- decoding ------------------------------------------------------------------------------

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        return self.decode(ids).encode("utf-8")

    def decode(self, ids: Iterable[int] | int, skip_special_tokens: bool = False) -> str:
        """Pieces joined with spaces, "##" pieces glued to the one before, and each piece's
        cleanup as `tokenizers`' WordPiece decoder does it (so " ." becomes ".")."""
        ids = [ids] if isinstance(ids, int) else list(ids)
        if any(not 0 <= i < len(self.vocab) for i in ids):
            bad = next(i for i in ids if not 0 <= i < len(self.vocab))
            raise LucidError(f"token id {bad} is outside the vocabulary of {len(self.vocab)}")
        out = []
        for i in ids:
            if skip_special_tokens and i in self._special_ids:
                continue
            piece = self.vocab[i]
            if out:  # as `tokenizers`: the first piece is left as it is, "##" and all
                piece = piece[len(self.prefix):] if piece.startswith(self.prefix) else " " + piece
            for before, after in CLEANUP:  # per piece, as tokenizers does: " ' " never occurs in one
                piece = piece.replace(before, after)
            out.append(piece)
        return "".join(out)

    # --- training ------------------------------------------------------------------------------

    @classmethod
    def train(cls, texts: str | Iterable[str], vocab_size: int, lowercase: bool = True,
              special_tokens: Sequence[str] = SPECIALS, min_frequency: int = 2, score: str = "frequency",
              progress: bool = False, model_max_length: int = 512) -> "WordPieceTokenizer":
        """Learn a vocabulary of vocab_size pieces (special tokens included) from the texts, as
        they read after this tokenizer's normaliser and word splitting (see wordpiece_train).
        score: "frequency" (as `tokenizers` trains BERT vocabularies) or "likelihood" (the
        textbook WordPiece). Pairs seen fewer than min_frequency times are never merged (2, as
        BertWordPieceTokenizer)."""
        for needed in ("[UNK]", "[CLS]", "[SEP]"):
            if needed not in special_tokens:
                raise LucidError(f"a WordPiece tokenizer needs the special token {needed}")
        counts: dict[str, int] = {}
        for text in [texts] if isinstance(texts, str) else texts:
            for word in split_words(normalize(text, lowercase)):
                counts[word] = counts.get(word, 0) + 1
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=vocab_size, desc="vocabulary", unit="piece")
        try:
            vocab = train_wordpiece_vocab(counts, vocab_size, special_tokens, min_frequency=min_frequency,
                                          score=score, on_merge=(lambda size: bar.update(size - bar.n)) if bar else None)
        finally:
            if bar is not None:
                bar.close()
        return cls(vocab, {t: vocab.index(t) for t in special_tokens}, lowercase=lowercase,
                   model_max_length=model_max_length)

    # --- our dict format and files --------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {"format": WORDPIECE_FORMAT, "version": FORMAT_VERSION, "vocab": self.vocab,
                "special_tokens": self.special_tokens, "lowercase": self.lowercase,
                "strip_accents": self.strip_accents, "clean_text": self.clean_text,
                "chinese_chars": self.chinese_chars, "prefix": self.prefix,
                "max_input_chars_per_word": self.max_input_chars_per_word, "unk_token": self.unk_token,
                "cls_token": self.cls_token, "sep_token": self.sep_token, "pad_token": self.pad_token,
                "mask_token": self.mask_token, "model_max_length": self.model_max_length}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "WordPieceTokenizer":
        fields = {k: v for k, v in data.items() if k not in ("format", "version", "origin", "vocab")}
        vocab = data.get("vocab")
        if not isinstance(vocab, list) or not all(isinstance(p, str) for p in vocab):
            raise FormatError(f"{data.get('origin') or 'tokenizer'}: a WordPiece vocabulary is a list of strings")
        try:
            return cls(vocab, **fields)
        except TypeError as exc:
            raise FormatError(f"{data.get('origin') or 'tokenizer'}: malformed WordPiece tokenizer ({exc})") from None

    def save(self, directory: str | os.PathLike) -> None:
        """Our format, plus vocab.txt and tokenizer.json beside it (BERT's own files)."""
        write_ours(self, directory)
        write_vocab_txt(self, directory)
        write_wordpiece_json(self, directory)

    def __repr__(self) -> str:
        return f"WordPieceTokenizer(vocab_size={self.vocab_size}, lowercase={self.lowercase})"


# The truncation argument, as transformers takes it, -> the strategy.
TRUNCATIONS = {True: "longest_first", "longest_first": "longest_first", "only_first": "only_first",
               "only_second": "only_second", False: "do_not_truncate", None: "do_not_truncate",
               "do_not_truncate": "do_not_truncate"}


def truncate_pair(a: list[int], b: list[int] | None, room: int,
                  strategy: str = "longest_first") -> tuple[list[int], list[int] | None]:
    """Make a (and b) fit `room` tokens. "only_first" / "only_second" cut that sequence alone (an
    error when it cannot give up enough); tokenizers' "longest_first" keeps the shorter sequence
    whole when the longer can give up enough, else cuts both to half the room each (the odd token
    to the longer one)."""
    if room < 0:
        raise LucidError("max_length leaves no room for the special tokens")
    excess = len(a) + (len(b) if b is not None else 0) - room
    if strategy in ("only_first", "only_second") and excess > 0:
        if strategy == "only_second" and b is None:
            raise LucidError("truncation='only_second' needs a pair of texts")
        cut = a if strategy == "only_first" else b
        if excess >= len(cut):  # as tokenizers: the text cut must keep at least one token
            raise LucidError(f"truncation={strategy!r}: that text has {len(cut)} tokens, {excess} would have to go")
        return (a[:len(a) - excess], b) if strategy == "only_first" else (a, b[:len(b) - excess])
    if strategy != "longest_first" or excess <= 0:
        return a, b
    if b is None:
        return a[:room], None
    short, long = sorted((len(a), len(b)))
    keep_long = short if short > room else max(short, room - short)
    if short + keep_long > room:
        short, keep_long = room // 2, room // 2 + room % 2
    return (a[:keep_long], b[:short]) if len(a) > len(b) else (a[:short], b[:keep_long])
