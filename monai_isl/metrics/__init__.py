"""Metrics for ISL (Pearson correlation) and segmentation (IoU, instance mAP)."""

from .instance import (  # noqa: F401
    DEFAULT_THRESHOLDS,
    MatchResult,
    map_by_min_area,
    match_instances,
    mean_average_precision,
)
from .regression import PearsonCorrelationMetric, pearson_correlation  # noqa: F401
from .segmentation import IoUMetric, MeanAveragePrecisionMetric, iou_score  # noqa: F401
