"""The learning-rate schedule: linear warmup, then cosine decay to a floor (as in nanoGPT).

A pure function of the step, so resuming needs only the step number.
"""

from __future__ import annotations

import math


def learning_rate(step: int, peak: float, floor: float, warmup: int, decay_until: int) -> float:
    if step < warmup:
        return peak * (step + 1) / (warmup + 1)
    if step > decay_until:
        return floor
    progress = (step - warmup) / max(1, decay_until - warmup)
    return floor + 0.5 * (1.0 + math.cos(math.pi * progress)) * (peak - floor)
