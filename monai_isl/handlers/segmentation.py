"""Ignite handlers for the segmentation bundles' metrics (``key_metric`` / ``additional_metrics``).

With ``save_details=True`` the per-image values reach ``engine.state.metric_details`` under the metric's
name, so MONAI's ``MetricsSaver`` writes them to a per-image CSV next to the summary statistics.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from monai.handlers import IgniteMetricHandler
from monai.utils import MetricReduction

from ..metrics.instance import DEFAULT_THRESHOLDS
from ..metrics.segmentation import IoUMetric, MeanAveragePrecisionMetric

__all__ = ["IoU", "MeanAveragePrecision"]


class IoU(IgniteMetricHandler):
    """Mean per-image IoU of the binarised foreground masks (``pred`` probabilities vs ``label``)."""

    def __init__(
        self,
        threshold: float = 0.5,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        output_transform: Callable = lambda x: x,
        save_details: bool = True,
    ) -> None:
        super().__init__(
            metric_fn=IoUMetric(threshold=threshold, reduction=reduction),
            output_transform=output_transform,
            save_details=save_details,
        )


class MeanAveragePrecision(IgniteMetricHandler):
    """Mean per-image instance mAP over the IoU ``thresholds`` (``pred`` and ``label`` are label images)."""

    def __init__(
        self,
        thresholds: np.ndarray | list[float] = DEFAULT_THRESHOLDS,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        output_transform: Callable = lambda x: x,
        save_details: bool = True,
    ) -> None:
        super().__init__(
            metric_fn=MeanAveragePrecisionMetric(thresholds=thresholds, reduction=reduction),
            output_transform=output_transform,
            save_details=save_details,
        )
