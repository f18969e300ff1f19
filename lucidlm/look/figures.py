"""matplotlib for the views, without pyplot: each view builds a plain `Figure`, so drawing never
changes the backend or the open figures of the user's own session (a notebook's inline plots keep
working), and nothing is left open to close. Figures are saved whole or not at all.

matplotlib costs a second to import, so it is imported when the first figure is made: `lucidlm
attention` without --png never pays for it.
"""

from __future__ import annotations

import os
from pathlib import Path


def new_figure(**options):
    from matplotlib.figure import Figure

    return Figure(**options)


def colormap(name: str, bad: str | None = None):
    import matplotlib

    cmap = matplotlib.colormaps[name]
    return cmap.with_extremes(bad=bad) if bad else cmap


def save_figure(fig, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Write the figure as a PNG beside its target and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    try:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
