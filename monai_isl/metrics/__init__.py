"""Metrics for ISL (Pearson correlation) and segmentation (IoU, instance mAP)."""

from .instance import DEFAULT_THRESHOLDS, MatchResult, match_instances, mean_average_precision  # noqa: F401
from .regression import PearsonCorrelationMetric, pearson_correlation  # noqa: F401
from .segmentation import IoUMetric, MeanAveragePrecisionMetric, iou_score  # noqa: F401
