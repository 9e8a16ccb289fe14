"""Dictionary transforms referenced from the bundle configs."""

from .field import (  # noqa: F401
    ApplyPercentilesd,
    LoadFieldd,
    PercentileStatsd,
    RandCropSamplesd,
    WriteFieldd,
    WriteOverlayd,
)
from .instance import InstanceToDistanced, InstanceToMaskd, instance_distance  # noqa: F401
