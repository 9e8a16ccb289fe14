"""Figures for people: what the network saw, what the stain looks like, and what the network predicted."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def _display_range(image: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(image, [1.0, 99.8])
    return float(lo), float(hi if hi > lo else lo + 1)


def save_panel(
    images: Sequence[np.ndarray | None],
    titles: Sequence[str],
    path: str | Path,
    suptitle: str | None = None,
    cmaps: Sequence[str] | None = None,
) -> Path:
    """Save 2D images side by side as a PNG, each shown between its own 1st and 99.8th percentile.

    An image given as None is drawn as an empty tile saying "not available" (e.g. no fluorescence for a dataset).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(images)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.5), squeeze=False)
    for i, (ax, image, title) in enumerate(zip(axes[0], images, titles)):
        ax.set_title(title, fontsize=10)
        ax.axis("off")
        if image is None:
            ax.text(0.5, 0.5, "not available", ha="center", va="center", transform=ax.transAxes, color="0.4")
            continue
        image = np.squeeze(np.asarray(image, dtype=np.float32))
        vmin, vmax = _display_range(image)
        ax.imshow(image, cmap=(cmaps[i] if cmaps else "gray"), vmin=vmin, vmax=vmax, interpolation="nearest")
    if suptitle:
        fig.suptitle(suptitle, fontsize=11)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
