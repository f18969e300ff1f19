"""Weights: model sources (GGUF, Hugging Face folders, our checkpoints, training runs) read through
declarative name tables, our checkpoint format, and export to Hugging Face folders."""

from .checkpoint import save
from .export import export_hf
from .load import default_model_path, load
from .sources import Source, open_source

__all__ = ["Source", "default_model_path", "export_hf", "load", "open_source", "save"]
