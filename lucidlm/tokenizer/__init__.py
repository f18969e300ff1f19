"""Tokenizers: byte-level BPE (train, encode, decode), WordPiece, one id per character, ASCII code
point, byte or word, file formats, streaming detokenization and chat templates."""

from .ascii import AsciiTokenizer
from .basic_bpe import BasicBPE
from .byte import ByteTokenizer
from .char import CharTokenizer
from .pretokenizer import PreTokenizer
from .streaming import StreamingDetokenizer
from .tokenizer import UNIT_TOKENIZERS, Tokenizer, load_tokenizer, tokenizer_from_dict, unit_tokenizer
from .units import UnitTokenizer
from .word import WordTokenizer
from .wordpiece import WordPieceTokenizer

__all__ = ["AsciiTokenizer", "BasicBPE", "ByteTokenizer", "CharTokenizer", "PreTokenizer", "StreamingDetokenizer",
           "Tokenizer", "UNIT_TOKENIZERS", "UnitTokenizer", "WordTokenizer", "load_tokenizer", "tokenizer_from_dict",
           "unit_tokenizer", "WordPieceTokenizer"]
