"""monai-isl: In Silico Labeling (ISL) pretraining for cell and nucleus segmentation, as MONAI bundles.

Importing the package registers the ``densenet121`` encoder with MONAI's ``FlexibleUNet``
(see :mod:`monai_isl.networks`), so bundle configs only need ``_target_: monai_isl...`` or
``$import monai_isl`` before building a network.
"""

from __future__ import annotations

__version__ = "0.1.0"

from . import networks  # noqa: F401,E402  (registers the densenet121 FlexibleUNet backbone)
from .errors import install_hook as _install_hook  # noqa: E402

_install_hook()  # a failed bundle run ends with the project's message (monai_isl.errors)
