"""Segmentation networks that start from an In Silico Labeling (ISL) network: the paper's transfer heads.

Bonte et al. reuse the whole ISL network (encoder *and* decoder) and add only what turns a predicted stain into a
segmentation output:

- nucleus_seg: the dapi_isl network followed by ``sigmoid(slope * (x - 0.5))`` (paper eq. 1). The dapi_isl target
  is scaled so that background is ~0 and bright nuclei ~1 (``monai_isl.transforms.PercentileStatsd``), so at the
  start of fine-tuning the output is already a nucleus probability above 0.5 wherever DAPI is predicted above half
  the bright-nucleus level. (The paper's code divided the raw uint16 prediction by 65535 to reach 0..1 first.)
  The baseline is the same architecture with 1 output and a plain sigmoid, from ImageNet or random weights.
- cell_instance_seg: the cellmask_isl network followed by two 3x3 Conv2d layers, 1 -> 2 -> 2 channels
  (distance map, mask logit). Unlike the paper's code, the last layer has no BatchNorm/ReLU: a ReLU would keep
  mask logits >= 0, i.e. probabilities >= 0.5, and floor the BCE of background pixels at ln 2.

Every network is a ``torch.nn.Sequential(unet, head)`` so the ISL weights keep their names under ``0.``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .densenet import PaddedFlexibleUNet

logger = logging.getLogger(__name__)

INITS = ("isl", "imagenet", "none")


class ShiftedSigmoid(nn.Module):
    """``sigmoid(slope * (x - shift))``; shift and slope are buffers, so a saved model restores its own activation.

    ``shift=0.5`` is the paper's ISL transfer activation (eq. 1), ``shift=0`` a plain sigmoid for the baseline.
    """

    def __init__(self, shift: float = 0.0, slope: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor(float(shift)))
        self.register_buffer("slope", torch.tensor(float(slope)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.slope * (x - self.shift))


class TransferHead(nn.Sequential):
    """Two 3x3 convolutions from the ISL output (1 channel) to (distance, mask logit), without a final ReLU."""

    def __init__(self, in_channels: int = 1, out_channels: int = 2, hidden_channels: int = 2) -> None:
        super().__init__(
            nn.Conv2d(in_channels, hidden_channels, kernel_size=3, padding=1),
            nn.BatchNorm2d(hidden_channels),
            nn.ReLU(),
            nn.Conv2d(hidden_channels, out_channels, kernel_size=3, padding=1),
        )


def _check_init(init: str) -> str:
    init = str(init).lower()
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got '{init}'")
    return init


def load_isl_weights(network: nn.Module, checkpoint: str | os.PathLike, bundle: str = "the ISL bundle") -> None:
    """Load an ISL bundle's ``models/model.pt`` into ``network`` strictly (every tensor restored, none left over).

    Accepts a plain state dict or a checkpoint dict holding one under ``"model"``.

    Raises:
        FileNotFoundError: no checkpoint; the message says how to train one.
        RuntimeError: the checkpoint does not fit (e.g. trained with another number of input channels).
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(
            f"ISL checkpoint not found: '{path}'. Train {bundle} first (its models/model.pt), pass "
            "--isl_checkpoint PATH, or use --init imagenet / --init none for the baseline"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise RuntimeError(f"ISL checkpoint '{path}' does not fit the network: {err}") from err
    logger.info("loaded %d ISL tensors from %s", len(state), path)


def _unet(in_channels: int, out_channels: int, init: str, imagenet_weights: Any, load_pretrained: bool) -> nn.Module:
    pretrained = (imagenet_weights if imagenet_weights not in (None, "") else True) if init == "imagenet" else False
    return PaddedFlexibleUNet(
        in_channels=in_channels,
        out_channels=out_channels,
        backbone="densenet121",
        spatial_dims=2,
        pretrained=pretrained if load_pretrained else False,
    )


def nucleus_network(
    in_channels: int = 3,
    init: str = "isl",
    isl_checkpoint: str | os.PathLike | None = None,
    imagenet_weights: str | os.PathLike | bool | None = None,
    sigmoid_slope: float = 1.0,
    load_pretrained: bool = True,
) -> nn.Sequential:
    """nucleus_seg network: FlexibleUNet-densenet121 (1 output) + sigmoid, shifted by 0.5 for ``init="isl"``.

    Args:
        in_channels: label-free input channels (3 in the paper: 2 bright-field planes + phase contrast).
        init: ``isl`` (dapi_isl weights), ``imagenet`` (torchvision densenet121 encoder) or ``none`` (random).
        isl_checkpoint: the dapi_isl ``model.pt`` (``init="isl"``).
        imagenet_weights: torchvision ``densenet121-a639ec97.pth`` path, or None/True for the torch hub cache.
        sigmoid_slope: slope of the output sigmoid (paper eq. 1: 1).
        load_pretrained: False builds the architecture only (evaluation/inference load ``model.pt`` afterwards).
    """
    init = _check_init(init)
    unet = _unet(in_channels, 1, init, imagenet_weights, load_pretrained)
    if init == "isl" and load_pretrained:
        if isl_checkpoint is None:
            raise ValueError("init='isl' needs isl_checkpoint: the dapi_isl models/model.pt")
        load_isl_weights(unet, isl_checkpoint, bundle="dapi_isl")
    return nn.Sequential(unet, ShiftedSigmoid(shift=0.5 if init == "isl" else 0.0, slope=sigmoid_slope))


def cell_network(
    in_channels: int = 1,
    init: str = "isl",
    isl_checkpoint: str | os.PathLike | None = None,
    imagenet_weights: str | os.PathLike | bool | None = None,
    load_pretrained: bool = True,
) -> nn.Sequential:
    """cell_instance_seg network with 2 outputs: channel 0 distance map (0..255 scale), channel 1 mask logit.

    ``init="isl"``: the cellmask_isl network (1 output) + :class:`TransferHead`; otherwise FlexibleUNet-densenet121
    with 2 outputs (``Identity`` head) from ImageNet or random weights.
    """
    init = _check_init(init)
    if init == "isl":
        unet = _unet(in_channels, 1, init, None, False)
        if load_pretrained:
            if isl_checkpoint is None:
                raise ValueError("init='isl' needs isl_checkpoint: the cellmask_isl models/model.pt")
            load_isl_weights(unet, isl_checkpoint, bundle="cellmask_isl")
        return nn.Sequential(unet, TransferHead(1, 2))
    return nn.Sequential(_unet(in_channels, 2, init, imagenet_weights, load_pretrained), nn.Identity())


def init_of_checkpoint(checkpoint: str | os.PathLike, default: str = "isl") -> str:
    """``isl`` if a saved cell network has a transfer head, else ``none``; ``default`` if there is no file yet.

    Lets evaluation and inference rebuild the architecture a model was trained with, whatever ``--init`` was.
    """
    path = Path(checkpoint)
    if not path.is_file():
        return default
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    return "isl" if any(str(k).startswith("1.") for k in state) else "none"
