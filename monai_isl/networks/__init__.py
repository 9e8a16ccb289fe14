"""Networks: the densenet121 encoder for MONAI FlexibleUNet and the ISL network builders.

``__all__`` below is the one list of the public names of ``densenet`` and ``transfer``.
"""

from __future__ import annotations

from .densenet import (
    DENSENET121_IMAGENET_FILE,
    DENSENET121_IMAGENET_URL,
    DenseNet121Encoder,
    PaddedFlexibleUNet,
    default_imagenet_weights_path,
    load_imagenet_weights,
    pad_to_multiple,
    register_flexunet_backbone,
)

# Makes FlexibleUNet(backbone="densenet121") available as soon as monai_isl is imported; idempotent.
register_flexunet_backbone()

__all__ = [
    "DENSENET121_IMAGENET_FILE",
    "DENSENET121_IMAGENET_URL",
    "DenseNet121Encoder",
    "PaddedFlexibleUNet",
    "default_imagenet_weights_path",
    "load_imagenet_weights",
    "pad_to_multiple",
    "register_flexunet_backbone",
]

from .transfer import (  # noqa: E402
    ShiftedSigmoid,
    TransferHead,
    cell_network,
    init_of_checkpoint,
    load_isl_weights,
    nucleus_network,
)

__all__ += [
    "ShiftedSigmoid",
    "TransferHead",
    "cell_network",
    "init_of_checkpoint",
    "load_isl_weights",
    "nucleus_network",
]
