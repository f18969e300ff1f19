"""Weights: GGUF and safetensors loading through declarative name tables, our checkpoint format,
export to Hugging Face folders, and the hub."""

from .checkpoint import save
from .export import export_hf
from .load import default_model_path, load

__all__ = ["default_model_path", "export_hf", "load", "save"]
