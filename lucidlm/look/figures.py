"""matplotlib for the views: headless (the Agg backend), and figures saved whole or not at all.

matplotlib costs a second to import, so modules that draw import it through `pyplot()` when they
first draw, and `lucidlm attention` without --png never pays for it.
"""

from __future__ import annotations

import os
from pathlib import Path


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Write the figure as a PNG beside its target and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    os.replace(tmp, path)
    return path
