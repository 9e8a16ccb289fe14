"""Ignite handler for the ISL bundles' key metric."""

from __future__ import annotations

from collections.abc import Callable

from monai.handlers import IgniteMetricHandler
from monai.utils import MetricReduction

from ..metrics.regression import PearsonCorrelationMetric


class PearsonCorrelation(IgniteMetricHandler):
    """Mean per-image Pearson correlation between ``pred`` and ``label``, usable as ``key_metric``.

    With ``save_details=True`` the per-image values reach ``engine.state.metric_details`` so that MONAI's
    ``MetricsSaver`` writes them to a CSV next to the mean and standard deviation.
    """

    def __init__(
        self,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        output_transform: Callable = lambda x: x,
        save_details: bool = True,
    ) -> None:
        super().__init__(
            metric_fn=PearsonCorrelationMetric(reduction=reduction),
            output_transform=output_transform,
            save_details=save_details,
        )
