"""The loss curve as a PNG (matplotlib, headless), rewritten at each evaluation."""

from __future__ import annotations

import os
from pathlib import Path


def plot_losses(records: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in records if "train_loss" in r]
    train = [r["train_loss"] for r in records if "train_loss" in r]
    evals = [r for r in records if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    if steps:
        ax.plot(steps, train, color="tab:blue", alpha=0.35, linewidth=0.8, label="train (per step)")
        window = max(1, len(train) // 50)
        if window > 1:  # a running mean shows the trend under the noise
            smooth = [sum(train[max(0, i - window + 1):i + 1]) / len(train[max(0, i - window + 1):i + 1])
                      for i in range(len(train))]
            ax.plot(steps, smooth, color="tab:blue", linewidth=1.5, label=f"train (mean of {window})")
    if evals:
        ax.plot([r["step"] for r in evals], [r["val_loss"] for r in evals], "o-", color="tab:orange", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy loss (nats per token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if steps or evals:
        ax.legend()
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
