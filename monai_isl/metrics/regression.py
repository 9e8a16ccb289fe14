"""Pearson correlation coefficient (PCC): the paper's metric for in silico labeling.

PCC is invariant to the intensity scale and offset of the prediction, so it rates how well the *pattern* of
the stain is predicted, whatever the camera's range. It is computed per image over the whole field (all
pixels of all channels) in float64, not per crop as the reference code did for its last batch.
"""

from __future__ import annotations

import numpy as np
import torch

from .base import PerImageMetric


def pearson_correlation(y_pred: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray) -> float:
    """PCC between two images of the same shape; NaN when either is constant (correlation is undefined)."""
    a = torch.as_tensor(np.asarray(y_pred) if not isinstance(y_pred, torch.Tensor) else y_pred).double().flatten()
    b = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y).double().flatten()
    if a.shape != b.shape:
        raise ValueError(f"y_pred and y must have the same number of pixels, got {a.numel()} and {b.numel()}")
    a, b = a - a.mean(), b - b.mean()
    denominator = torch.sqrt((a * a).sum() * (b * b).sum())
    if denominator == 0:
        return float("nan")
    return float((a * b).sum() / denominator)


class PearsonCorrelationMetric(PerImageMetric):
    """Per-image PCC of batch-first predictions ``(B, C, H, W)``; ``aggregate`` averages over images.

    Images where the PCC is undefined (a constant prediction or target) are NaN and, with the default
    ``reduction="mean"``, left out of the mean, as MONAI does for undefined Dice.
    """

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore
        y = self._check_pair(y_pred, y)
        values = [pearson_correlation(p, t) for p, t in zip(y_pred, y)]
        return torch.tensor(values, dtype=torch.float64).reshape(-1, 1)
