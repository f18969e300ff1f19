"""The Hugging Face way: transformers' Auto classes, tokenizer interface and pipeline() on
lucidlm's models, so notebook code runs with only its import line changed.

    from lucidlm import AutoModelForCausalLM, AutoTokenizer, pipeline
"""

from .auto import (AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM, AutoModelForSeq2SeqLM,
                   AutoModelForSequenceClassification, AutoModelForTextEncoding)
from .config import AutoConfig, HFConfig
from .model import HFModel
from .outputs import BatchEncoding, ModelOutput
from .tokenizer import AutoTokenizer, HFTokenizer

__all__ = ["AutoConfig", "AutoModel", "AutoModelForCausalLM", "AutoModelForMaskedLM", "AutoModelForSeq2SeqLM",
           "AutoModelForSequenceClassification", "AutoModelForTextEncoding", "AutoTokenizer", "BatchEncoding",
           "HFConfig", "HFModel", "HFTokenizer", "ModelOutput"]
