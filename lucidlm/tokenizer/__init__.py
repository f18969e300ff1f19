"""Tokenizers: byte-level BPE (train, encode, decode), characters, file formats, streaming
detokenization and chat templates."""

from .basic_bpe import BasicBPE
from .char import CharTokenizer
from .pretokenizer import PreTokenizer
from .streaming import StreamingDetokenizer
from .tokenizer import Tokenizer, load_tokenizer, tokenizer_from_dict
from .wordpiece import WordPieceTokenizer

__all__ = ["BasicBPE", "CharTokenizer", "PreTokenizer", "StreamingDetokenizer", "Tokenizer", "load_tokenizer",
           "tokenizer_from_dict", "WordPieceTokenizer"]
