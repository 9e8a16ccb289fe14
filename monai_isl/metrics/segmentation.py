"""Segmentation metrics of the paper as MONAI metrics: semantic IoU of the cell mask and instance mAP.

Both are computed per image and averaged over images by ``aggregate`` (MONAI's ``do_metric_reduction``), so
the Ignite handlers in :mod:`monai_isl.handlers.segmentation` can save the per-image values.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from monai.utils import MetricReduction

from .base import PerImageMetric
from .instance import DEFAULT_THRESHOLDS, match_instances

__all__ = ["IoUMetric", "MeanAveragePrecisionMetric", "iou_score"]


def _to_numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def iou_score(y_pred_mask: Any, y_true_mask: Any, threshold: float = 0.5) -> float:
    """Semantic IoU of ``y_pred_mask > threshold`` and ``y_true_mask > threshold`` (arrays or tensors).

    Both masks empty gives 1.0: the paper's rule, nothing to find and nothing found is a perfect answer.
    """
    pred = _to_numpy(y_pred_mask) > threshold
    true = _to_numpy(y_true_mask) > threshold
    if pred.shape != true.shape:
        raise ValueError(f"masks must have the same shape, got {pred.shape} and {true.shape}")
    union = np.count_nonzero(pred | true)
    if union == 0:
        return 1.0
    return float(np.count_nonzero(pred & true) / union)


class IoUMetric(PerImageMetric):
    """Per-image IoU of the foreground: ``y_pred`` (probabilities, after the activation) and ``y`` binarised
    with ``> threshold``; input ``(B, C, H, W)`` (all channels of an image pooled), output ``(B, 1)``.

    An image where both masks are empty scores 1.0 (see :func:`iou_score`), so no value is NaN.
    """

    def __init__(
        self,
        threshold: float = 0.5,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        get_not_nans: bool = False,
    ) -> None:
        super().__init__(reduction=reduction, get_not_nans=get_not_nans)
        self.threshold = threshold

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore
        y = self._check_pair(y_pred, y)
        pred = (torch.as_tensor(y_pred) > self.threshold).flatten(1)
        true = (torch.as_tensor(y) > self.threshold).flatten(1)
        inter = (pred & true).sum(1).double()
        union = (pred | true).sum(1).double()
        iou = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))
        return iou.reshape(-1, 1)


class MeanAveragePrecisionMetric(PerImageMetric):
    """Per-image mAP (mean over IoU ``thresholds`` of TP / (TP + FP + FN)) of instance label images.

    ``y_pred`` and ``y`` are ``(B, 1, H, W)`` label images (0 = background, any integer ids; integral floats are
    accepted). The buffer holds one mAP per image, ``(B, 1)``; :attr:`per_threshold` gives the AP of every image
    at every threshold, ``(N, len(thresholds))``, for reports. See :func:`~monai_isl.metrics.match_instances`
    for the matching and the empty-image rules.
    """

    def __init__(
        self,
        thresholds: np.ndarray | list[float] = DEFAULT_THRESHOLDS,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        get_not_nans: bool = False,
    ) -> None:
        super().__init__(reduction=reduction, get_not_nans=get_not_nans)
        self.thresholds = np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
        self._per_threshold: list[np.ndarray] = []

    def reset(self) -> None:
        super().reset()
        self._per_threshold = []

    @property
    def per_threshold(self) -> torch.Tensor:
        """AP of every image seen since the last reset at every threshold, ``(N, T)`` float64."""
        if not self._per_threshold:
            return torch.zeros((0, len(self.thresholds)), dtype=torch.float64)
        return torch.as_tensor(np.stack(self._per_threshold))

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore
        y = self._check_pair(y_pred, y)
        if y_pred.ndim < 3 or y_pred.shape[1] != 1:
            raise ValueError(f"expected instance label images (B, 1, spatial...), got {tuple(y_pred.shape)}")
        values = []
        for p, t in zip(y_pred, y, strict=True):
            ap = match_instances(_to_numpy(t[0]), _to_numpy(p[0]), self.thresholds).ap
            self._per_threshold.append(ap)
            values.append(float(ap.mean()))
        return torch.tensor(values, dtype=torch.float64).reshape(-1, 1)
