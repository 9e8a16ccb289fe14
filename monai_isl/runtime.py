"""How the bundles' networks are placed for speed: device and memory format.

On a CPU, oneDNN runs the DenseNet-121 encoder and the U-Net decoder with ~15-20 % less work per 512 x 512 window
on ``channels_last`` (NHWC) tensors than on the default NCHW ones (``benchmarks/README.md``; FACTS.md measured the
encoder alone at 0.27 vs 0.52 s), so the inference and evaluation configs use it; for training (forward +
backward + Adam) it brought nothing on the development CPU, so the training configs leave it off. Converting the
network's 4D weights is enough: a convolution whose weight is ``channels_last`` returns ``channels_last`` output,
so the inputs (1-3 channels, where both layouts are nearly the same) need no conversion, and a checkpoint loads
into the converted network unchanged (``load_state_dict`` copies values, not layouts).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .bundle import as_bool

__all__ = ["prepare_network"]


def prepare_network(network: nn.Module, device: Any = None, channels_last: Any = False) -> nn.Module:
    """``network`` moved to ``device`` and, when ``channels_last`` (a bool or ``"true"``/``"false"`` from the
    command line), with its 4D parameters and buffers in ``torch.channels_last``. Returns the same module."""
    if device is not None:
        network = network.to(device)
    if as_bool(channels_last):
        network = network.to(memory_format=torch.channels_last)
    return network
