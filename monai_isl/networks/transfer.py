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

Every network is a ``torch.nn.Sequential(unet, head, CellOutput)`` so the ISL weights keep their names under
``0.``. :class:`CellOutput` (not in the paper) multiplies the distance channel by a fixed gain of 255
(``DEFAULT_DISTANCE_GAIN``), so that a raw output of ~1 is already on the target's 0..255 scale (the paper's loss
is unchanged): without it the outputs reach only a fraction of the scale in hundreds of steps. The ISL head is
wider than the paper's (``DEFAULT_HEAD_CHANNELS`` = 8 hidden channels instead of 2): with 2 channels, the head
reached the distance scale in 1 of 3 synthetic seeds (``docs/results/synthetic_cell_cpu``) and the gain took the
2 shared channels from the mask (``benchmarks/bench_cell_head.py``); width 8 with the gain trained in every seed
(``docs/results/synthetic_cell_disjoint``). ``head_channels=2, distance_gain=1`` is the paper's head.
:class:`CellOutput` also carries the watershed ``h`` (and smoothing sigma) fitted after training
(:mod:`monai_isl.instance_fit`), so they travel with ``model.pt`` and a TorchScript export. Checkpoints saved
before it existed load with gain 1 and no fitted ``h``; a saved head's width is read from its weights
(:func:`head_channels_of_checkpoint`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .densenet import PaddedFlexibleUNet

logger = logging.getLogger(__name__)

INITS = ("isl", "imagenet", "none")

#: gain of the distance channel (:class:`CellOutput`) by default, for every init. Chosen with
#: ``benchmarks/bench_cell_head.py`` (Usiigaci, 100 steps: the baselines' distance inside cells 16.5 -> 87 of a
#: 89.6 target mean, fitted-h mAP 0.009 -> 0.105) and, for the ISL head, with the synthetic sweeps
#: (``docs/results/synthetic_cell_disjoint``, together with ``DEFAULT_HEAD_CHANNELS``).
DEFAULT_DISTANCE_GAIN = 255.0
#: hidden width of the ISL :class:`TransferHead` by default (the paper: 2). Width 2 reached the distance scale in 1
#: of 3 synthetic seeds (mAP 0.61 / 0.04 / 0.03, ``docs/results/synthetic_cell_cpu``); width 8 with the gain of 255
#: trained in all (``docs/results/synthetic_cell_disjoint``).
DEFAULT_HEAD_CHANNELS = 8
#: learning-rate multiplier of the head against the pretrained network in :func:`param_groups` (``head_lr`` None).
DEFAULT_HEAD_LR_FACTOR = 10.0
#: value of the stored watershed parameters before ``fit_network_watershed`` (any negative number: not fitted)
NOT_FITTED = -1.0


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


class CellOutput(nn.Module):
    """``(gain * x[:, 0] + offset, x[:, 1:])`` plus the fitted watershed parameters, all as buffers.

    The gain puts the distance channel on the target's 0..255 scale from the first step: Adam moves a weight by
    ~lr per step whatever the loss scale, so an un-scaled output needs thousands of steps to climb to ~90 (the
    mean target inside cells) and meanwhile the h-maxima ``h`` (on the 0..255 scale) means something else.
    ``watershed_h`` / ``watershed_sigma`` are ``NOT_FITTED`` (-1; not NaN, which the checkpoint guard refuses)
    until :func:`monai_isl.instance_fit.fit_network_watershed` stores the values it picked;
    ``HMaximaWatershedd(h="auto")`` reads them back. Being buffers they are saved in ``model.pt`` and kept by
    ``torch.jit.script``. A state dict without any of them (saved before this module existed) loads as gain 1,
    offset 0 and nothing fitted: exactly the old network. One without ``watershed_min_area`` only (fitted before
    the minimum object area existed) loads with min_area 0 where its h was fitted: every object kept, as then;
    one without ``watershed_min_area_fraction`` (fitted in pixels only) loads without a relative minimum area, one
    without ``watershed_area_low`` / ``_high`` without a cell-size range (never resampled, :mod:`monai_isl.scale`).
    """

    def __init__(self, distance_gain: float = 1.0, distance_offset: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("distance_gain", torch.tensor(float(distance_gain)))
        self.register_buffer("distance_offset", torch.tensor(float(distance_offset)))
        self.register_buffer("watershed_h", torch.tensor(NOT_FITTED))
        self.register_buffer("watershed_sigma", torch.tensor(NOT_FITTED))
        self.register_buffer("watershed_min_area", torch.tensor(NOT_FITTED))
        self.register_buffer("watershed_min_area_fraction", torch.tensor(NOT_FITTED))
        # the range of typical object areas (px) the network segments, for resampling other fields (monai_isl.scale)
        self.register_buffer("watershed_area_low", torch.tensor(NOT_FITTED))
        self.register_buffer("watershed_area_high", torch.tensor(NOT_FITTED))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        distance = x[:, :1] * self.distance_gain + self.distance_offset
        return torch.cat((distance, x[:, 1:]), dim=1)

    def _load_from_state_dict(
        self,
        state_dict: dict,
        prefix: str,
        local_metadata: dict,
        strict: bool,
        missing_keys: list,
        unexpected_keys: list,
        error_msgs: list,
    ) -> None:
        names = [prefix + n for n, _ in self.named_buffers(recurse=False)]
        legacy = not any(n in state_dict for n in names)
        added = ("watershed_min_area", "watershed_min_area_fraction", "watershed_area_low", "watershed_area_high")
        optional = names if legacy else [prefix + n for n in added]
        if legacy:  # a checkpoint from before CellOutput: identity output, nothing fitted
            with torch.no_grad():
                self.distance_gain.fill_(1.0)
                self.distance_offset.fill_(0.0)
                self.watershed_h.fill_(NOT_FITTED)
                self.watershed_sigma.fill_(NOT_FITTED)
                self.watershed_min_area.fill_(NOT_FITTED)
        with torch.no_grad():  # fitted before the relative minimum area / size range existed: none of them
            for name in ("watershed_min_area_fraction", "watershed_area_low", "watershed_area_high"):
                getattr(self, name).fill_(NOT_FITTED)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        if not legacy and prefix + "watershed_min_area" not in state_dict:  # fitted before min_area existed
            with torch.no_grad():
                self.watershed_min_area.fill_(0.0 if float(self.watershed_h) >= 0 else NOT_FITTED)
        missing_keys[:] = [k for k in missing_keys if k not in optional]


def cell_outputs(network: nn.Module) -> list[nn.Module]:
    """The :class:`CellOutput` modules of ``network`` (also inside wrappers such as DDP or a TorchScript module)."""
    found = []
    for _, module in network.named_modules():
        if isinstance(module, CellOutput) or getattr(module, "original_name", None) == "CellOutput":
            found.append(module)
    return found


def param_groups(
    network: nn.Module, lr: float, head_lr: float | None = None, head_prefix: str | None = None
) -> list[dict[str, Any]]:
    """Optimiser parameter groups: the pretrained network at ``lr``, the newly added head at ``head_lr``.

    For ``torch.optim.Adam(param_groups(net, 1e-4, 1e-2))``: the ISL network (``network[0]``, or the parameters
    not under ``head_prefix``) keeps most of what it learned while the two new Conv2d layers learn fast.
    ``head_lr`` None: ``DEFAULT_HEAD_LR_FACTOR * lr``. A network without head parameters (the baseline, whose
    head is ``Identity``) gets one group at ``lr``; empty groups are left out.
    """
    if head_lr is None:
        head_lr = DEFAULT_HEAD_LR_FACTOR * float(lr)
    module = getattr(network, "module", network)  # DistributedDataParallel / DataParallel
    if head_prefix is None:
        pretrained_ids = {id(p) for p in module[0].parameters()} if isinstance(module, nn.Sequential) else None
        if pretrained_ids is None:
            raise ValueError("param_groups needs an nn.Sequential(unet, head, ...) or a head_prefix")
    else:
        pretrained_ids = {id(p) for n, p in module.named_parameters() if not n.startswith(head_prefix)}
    body = [p for p in module.parameters() if id(p) in pretrained_ids]
    head = [p for p in module.parameters() if id(p) not in pretrained_ids]
    groups = [{"params": body, "lr": float(lr)}, {"params": head, "lr": float(head_lr)}]
    return [g for g in groups if g["params"]]


def _iter_state(checkpoint: str | os.PathLike) -> Iterator[str]:
    state = torch.load(Path(checkpoint), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    return (str(k) for k in state)


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
    distance_gain: float | None = None,
    head_channels: int | None = None,
) -> nn.Sequential:
    """cell_instance_seg network with 2 outputs: channel 0 distance map (0..255 scale), channel 1 mask logit.

    ``init="isl"``: the cellmask_isl network (1 output) + :class:`TransferHead` (hidden width ``head_channels``,
    None: ``DEFAULT_HEAD_CHANNELS`` = 8; the paper: 2); otherwise FlexibleUNet-densenet121 with 2 outputs
    (``Identity`` head) from ImageNet or random weights. Both end in :class:`CellOutput`, whose ``distance_gain``
    scales the distance channel (None: ``DEFAULT_DISTANCE_GAIN`` = 255; 1 is the network without the fix). The gain
    is a buffer: ``model.pt`` restores the one a model was trained with.
    """
    init = _check_init(init)
    gain = DEFAULT_DISTANCE_GAIN if distance_gain is None else float(distance_gain)
    width = DEFAULT_HEAD_CHANNELS if head_channels is None else int(head_channels)
    if init == "isl":
        unet = _unet(in_channels, 1, init, None, False)
        if load_pretrained:
            if isl_checkpoint is None:
                raise ValueError("init='isl' needs isl_checkpoint: the cellmask_isl models/model.pt")
            load_isl_weights(unet, isl_checkpoint, bundle="cellmask_isl")
        return nn.Sequential(unet, TransferHead(1, 2, hidden_channels=width), CellOutput(gain))
    unet = _unet(in_channels, 2, init, imagenet_weights, load_pretrained)
    return nn.Sequential(unet, nn.Identity(), CellOutput(gain))


def init_of_checkpoint(checkpoint: str | os.PathLike, default: str = "isl") -> str:
    """``isl`` if a saved cell network has a transfer head, else ``none``; ``default`` if there is no file yet.

    Lets evaluation and inference rebuild the architecture a model was trained with, whatever ``--init`` was.
    The head is ``1.`` (``2.`` is :class:`CellOutput`, present for every init).
    """
    path = Path(checkpoint)
    if not path.is_file():
        return default
    return "isl" if any(k.startswith("1.") for k in _iter_state(path)) else "none"


def head_channels_of_checkpoint(checkpoint: str | os.PathLike, default: int | None = None) -> int:
    """Hidden width of a saved :class:`TransferHead` (``1.0.weight`` has shape ``(width, 1, 3, 3)``); ``default``
    (None: ``DEFAULT_HEAD_CHANNELS``) without a file or an ISL head, so ``cell_network(head_channels=...)``
    rebuilds the trained architecture, also for a model trained with the paper's width 2."""
    default = DEFAULT_HEAD_CHANNELS if default is None else int(default)
    path = Path(checkpoint)
    if not path.is_file():
        return default
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    weight = state.get("1.0.weight")
    return int(weight.shape[0]) if weight is not None else default
