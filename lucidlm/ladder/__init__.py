"""The course's ladder, from n-gram counts to the baby GPT: the worked attention examples as
functions, one small model per rung, and `lucidlm ladder`, which trains and measures them all.

    from lucidlm import ladder
    ladder.simplified_attention(x)     # scores, weights and context vectors of S = X X^T
"""

from .climb import Ladder, Row, format_table
from .ngram import NGramLM
from .rungs import DEFAULT_RUNGS, NEURAL, Rung, parse_rungs
from .worked_examples import (JOURNEY, JOURNEY_WORDS, AttentionSteps, attention_from_qk, causal_attention,
                              multi_head_attention, self_attention, simplified_attention)

__all__ = ["AttentionSteps", "DEFAULT_RUNGS", "JOURNEY", "JOURNEY_WORDS", "Ladder", "NEURAL", "NGramLM", "Row", "Rung",
           "attention_from_qk", "causal_attention", "format_table", "multi_head_attention", "parse_rungs",
           "self_attention", "simplified_attention"]
