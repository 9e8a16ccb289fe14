"""Ignite handlers for the bundle configs: metrics, kill-safe checkpoints, NaN stop, skip-and-report inference."""

from .checkpoint import AtomicCheckpointSaver, atomic_save, keep_final_model  # noqa: F401
from .curve import LearningCurve  # noqa: F401
from .guard import FineTuneGuard  # noqa: F401
from .naming import image_names  # noqa: F401
from .nonfinite import NonFiniteLossError, StopOnNonFiniteLoss  # noqa: F401
from .regression import PearsonCorrelation  # noqa: F401
from .report import InstanceReport  # noqa: F401
from .sanity import SegmentationSanity  # noqa: F401
from .segmentation import IoU, MeanAveragePrecision  # noqa: F401
from .skipped import SkippedFieldsReport  # noqa: F401
from .validation import ValidationHandler  # noqa: F401
