"""Ignite handlers wrapping the monai_isl metrics, for use as key metrics in bundle configs."""

from .checkpoint import AtomicCheckpointSaver  # noqa: F401
from .naming import image_names  # noqa: F401
from .regression import PearsonCorrelation  # noqa: F401
from .report import InstanceReport  # noqa: F401
from .segmentation import IoU, MeanAveragePrecision  # noqa: F401
