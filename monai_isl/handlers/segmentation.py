"""Ignite handlers for the segmentation bundles' metrics (``key_metric`` / ``additional_metrics``).

With ``save_details=True`` the per-image values reach ``engine.state.metric_details`` under the metric's
name, so MONAI's ``MetricsSaver`` writes them to a per-image CSV next to the summary statistics.
"""

from __future__ import annotations

import numpy as np
from monai.handlers import IgniteMetricHandler
from monai.utils import MetricReduction

from ..metrics.instance import DEFAULT_THRESHOLDS
from ..metrics.segmentation import IoUMetric, MeanAveragePrecisionMetric

__all__ = ["IoU", "MeanAveragePrecision"]


class IoU(IgniteMetricHandler):
    """Mean per-image IoU of the binarised foreground masks (``pred`` probabilities vs ``label``).

    Other keyword arguments (``output_transform``, ``save_details``: default True) go to ``IgniteMetricHandler``.
    """

    def __init__(self, threshold: float = 0.5, reduction: MetricReduction | str = MetricReduction.MEAN, **kwargs):
        super().__init__(metric_fn=IoUMetric(threshold=threshold, reduction=reduction), **kwargs)


class MeanAveragePrecision(IgniteMetricHandler):
    """Mean per-image instance mAP over the IoU ``thresholds`` (``pred`` and ``label`` are label images).

    Other keyword arguments (``output_transform``, ``save_details``: default True) go to ``IgniteMetricHandler``.
    """

    def __init__(
        self,
        thresholds: np.ndarray | list[float] = DEFAULT_THRESHOLDS,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        **kwargs,
    ) -> None:
        metric = MeanAveragePrecisionMetric(thresholds=thresholds, reduction=reduction)
        super().__init__(metric_fn=metric, **kwargs)
