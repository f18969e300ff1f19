"""RungTrainer: the project's Trainer on a ladder rung, a small model that is not a Transformer."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import save_file

from ..config import Config
from ..errors import LucidError
from ..train.settings import TrainSettings
from ..train.trainer import Trainer


class RungTrainer(Trainer):
    """The project's trainer, unchanged, on a rung's model: only how the model is made, saved and
    described differs (a rung is not a Transformer, so it has no checkpoint to chat with)."""

    def __init__(self, settings: TrainSettings, config: Config, build: Callable[[Config], torch.nn.Module],
                 force: bool = False) -> None:
        self.build = build
        super().__init__(settings, config, force=force)

    def _model(self, config: Config | None, resume: bool) -> torch.nn.Module:
        if resume or config is None:
            raise LucidError("a ladder rung is trained from scratch (rerun lucidlm ladder)")
        config = config.replace(vocab_size=self.tokenizer.vocab_size)
        with torch.device(self.device):
            model = self.build(config)
        model.config = config  # what the trainer checks: causal, an LM head, the context length
        return model.train()

    def sample(self) -> str:
        return ""  # the ladder samples every rung the same way at the end

    def save(self, is_best: bool = False) -> Path | None:
        if not self.main:
            return None
        path = self.run.path / "rung.safetensors"
        tmp = path.with_name(path.name + ".tmp")
        save_file({k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}, str(tmp))
        tmp.replace(path)
        return path

    def describe_interruption(self) -> str:
        return f"interrupted at step {self.step} of this rung (a rung starts over: run lucidlm ladder again)"

    def describe_end(self, result: dict[str, Any]) -> str:
        return f"done: {self.step} steps in {self.elapsed:.1f} s ({result['ms_per_iter']:.1f} ms/step)"
