"""Training: token shards and windows, settings and presets, the trainer with resumable
checkpoints, and data-parallel training through torch.distributed."""

from .settings import TRAIN_PRESETS, TrainSettings

__all__ = ["TRAIN_PRESETS", "TrainSettings"]
