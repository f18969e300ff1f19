"""Streaming detokenization: ids in one at a time, complete UTF-8 text out.

A character can be cut across tokens (an emoji is 4 bytes and often 2-3 tokens). The incremental
UTF-8 decoder holds an incomplete tail back until the rest arrives, so nothing is ever emitted
broken; bytes that can never become valid are replaced, exactly as a one-shot decode would.
"""

from __future__ import annotations

import codecs


class StreamingDetokenizer:
    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.reset()

    def reset(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text = ""  # everything emitted so far

    def add(self, token_id: int) -> str:
        """Feed one id; return the text it completes (possibly empty)."""
        piece = self._decoder.decode(self.tokenizer.token_bytes(token_id))
        self.text += piece
        return piece

    def flush(self) -> str:
        """End of stream: whatever is held back, with an unfinished character replaced."""
        piece = self._decoder.decode(b"", final=True)
        self.text += piece
        return piece
