"""DenseNet-121 encoder for MONAI ``FlexibleUNet``, offline ImageNet loading and a padding wrapper.

MONAI's ``FlexibleUNet`` only ships EfficientNet and ResNet backbones; the ISL models use a DenseNet-121
encoder with the skip taps of ``segmentation_models_pytorch``'s ``DenseNetEncoder``. The layers are MONAI's own
(``monai.networks.nets.DenseNet``), so module names match torchvision's (``features.conv0`` ...
``features.norm5``) except for the ``.layers.`` level MONAI puts inside each dense layer; the loader maps
torchvision's key formats onto it. Weights are never downloaded: the torchvision file must already be on disk.
"""

from __future__ import annotations

import logging
import math
import os
import re
import warnings
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.blocks import BaseEncoder
from monai.networks.nets import DenseNet
from monai.networks.nets.flexible_unet import FLEXUNET_BACKBONE, FlexibleUNet
from torch import nn

logger = logging.getLogger(__name__)

DENSENET121_IMAGENET_FILE = "densenet121-a639ec97.pth"
"""File name of torchvision's ImageNet densenet121 weights, looked up in ``torch.hub.get_dir()/checkpoints``."""
DENSENET121_IMAGENET_URL = f"https://download.pytorch.org/models/{DENSENET121_IMAGENET_FILE}"
"""Where to download that file by hand (this package never downloads)."""

BACKBONE_NAME = "densenet121"

# torchvision densenet121 hyper-parameters
_INIT_FEATURES = 64
_GROWTH_RATE = 32
_BLOCK_CONFIG = (6, 12, 24, 16)
_BN_SIZE = 4
_OUT_CHANNELS = (64, 256, 512, 1024, 1024)

# "denseblockB.denselayerL.<norm|relu|conv><.|><1|2>.<tensor>" (old torchvision "norm.1", new "norm1", MONAI
# "layers.norm1") -> MONAI's "denseblockB.denselayerL.layers.<norm|relu|conv><1|2>.<tensor>"
_DENSE_LAYER_KEY = re.compile(
    r"^(denseblock\d+\.denselayer\d+)\.(?:layers\.)?(norm|relu|conv)\.?([12])\."
    r"(weight|bias|running_mean|running_var|num_batches_tracked)$"
)
_IGNORED_PREFIXES = ("classifier.", "class_layers.")


class DenseNet121Encoder(nn.Module, BaseEncoder):
    """DenseNet-121 feature extractor with five outputs at strides 2, 4, 8, 16, 32 for ``FlexibleUNet``.

    Outputs (channels 64, 256, 512, 1024, 1024) are tapped as in ``segmentation_models_pytorch``:
    ``relu0(norm0(conv0(x)))``; the ``norm``+``relu`` output of ``transition1..3`` (before its conv and pool);
    ``norm5(denseblock4(.))`` without a final ReLU. Spatial sizes are ``ceil(H/2)``, ``ceil(H/4)`` and then
    halved with floor by each transition's average pooling.

    Args:
        spatial_dims: 2 (3 also builds, but without ImageNet weights).
        in_channels: number of input channels; any value (ImageNet ``conv0`` is adapted when loading).
        pretrained: ``False``; ``True`` for torchvision's ImageNet file in ``torch.hub.get_dir()/checkpoints``;
            or a path to a torchvision-format ``.pth`` state dict.
    """

    def __init__(self, spatial_dims: int = 2, in_channels: int = 3, pretrained: bool | str | os.PathLike = False):
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}.")
        net = DenseNet(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=1,  # classifier is discarded
            init_features=_INIT_FEATURES,
            growth_rate=_GROWTH_RATE,
            block_config=_BLOCK_CONFIG,
            bn_size=_BN_SIZE,
        )
        self.features: nn.Sequential = net.features
        # The ReLUs whose outputs are returned as skips must not work in place on a tensor someone else holds;
        # parameter-free, so the state dict is unchanged.
        self.features.relu0 = nn.ReLU(inplace=False)
        for name in ("transition1", "transition2", "transition3"):
            getattr(self.features, name).relu = nn.ReLU(inplace=False)
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels

        if pretrained is True:
            source: str | os.PathLike = default_imagenet_weights_path()
        elif pretrained is False or pretrained is None:
            return
        elif isinstance(pretrained, (str, os.PathLike)):
            source = pretrained
        else:
            raise TypeError(f"pretrained must be a bool or a path, got {type(pretrained).__name__}.")
        if spatial_dims != 2:
            raise ValueError("ImageNet weights are 2D; pretrained requires spatial_dims=2.")
        load_imagenet_weights(self, source)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return the five feature maps (strides 2, 4, 8, 16, 32); written out so TorchScript can compile it."""
        f = self.features
        x = f.relu0(f.norm0(f.conv0(x)))
        s2 = x
        x = f.denseblock1(f.pool0(x))
        x = f.transition1.relu(f.transition1.norm(x))
        s4 = x
        x = f.denseblock2(f.transition1.pool(f.transition1.conv(x)))
        x = f.transition2.relu(f.transition2.norm(x))
        s8 = x
        x = f.denseblock3(f.transition2.pool(f.transition2.conv(x)))
        x = f.transition3.relu(f.transition3.norm(x))
        s16 = x
        x = f.denseblock4(f.transition3.pool(f.transition3.conv(x)))
        s32 = f.norm5(x)
        return [s2, s4, s8, s16, s32]

    @classmethod
    def get_encoder_parameters(cls) -> list[dict]:
        """Constructor kwargs per registered name; ``FlexibleUNet`` overwrites all three keys on each build."""
        return [{"spatial_dims": 2, "in_channels": 3, "pretrained": False}]

    @classmethod
    def num_channels_per_output(cls) -> list[tuple[int, ...]]:
        """Channels of the five outputs."""
        return [_OUT_CHANNELS]

    @classmethod
    def num_outputs(cls) -> list[int]:
        """Number of outputs."""
        return [len(_OUT_CHANNELS)]

    @classmethod
    def get_encoder_names(cls) -> list[str]:
        """Backbone name(s) for ``FlexibleUNet(backbone=...)``."""
        return [BACKBONE_NAME]


def register_flexunet_backbone() -> None:
    """Register :class:`DenseNet121Encoder` as ``FlexibleUNet`` backbone ``"densenet121"`` (idempotent).

    Re-registering overwrites the single registry entry, so repeated imports or module reloads never duplicate it;
    an entry already pointing at this exact class is left alone. Each entry gets a fresh parameter dict.
    """
    current = FLEXUNET_BACKBONE.register_dict.get(BACKBONE_NAME)
    if current is not None and current.get("type") is DenseNet121Encoder:
        return
    if current is not None and _qualified_name(current.get("type")) != _qualified_name(DenseNet121Encoder):
        warnings.warn(f"Replacing FlexibleUNet backbone {BACKBONE_NAME!r} ({current.get('type')}).", stacklevel=2)
    FLEXUNET_BACKBONE.register_class(DenseNet121Encoder)


def _qualified_name(obj: Any) -> str:
    """``module.qualname`` of a class; tells a reloaded copy of our class from somebody else's."""
    return f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', repr(obj))}"


def default_imagenet_weights_path() -> str:
    """Path where ``pretrained=True`` expects torchvision's densenet121 weights (``torch.hub`` checkpoints dir)."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", DENSENET121_IMAGENET_FILE)


def _read_state_dict(source: str | os.PathLike | Mapping[str, Any]) -> Mapping[str, Any]:
    """Load ``source`` (a path or a dict) and unwrap a ``{"state_dict": ...}`` / ``{"model": ...}`` container."""
    if isinstance(source, Mapping):
        state = source
    else:
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"DenseNet-121 ImageNet weights not found at {path!r}. This package does not download; fetch "
                f"{DENSENET121_IMAGENET_URL} and save it as {path!r} (or pass pretrained=<path to the file>)."
            )
        state = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model"):
        inner = state.get(wrapper) if isinstance(state, Mapping) else None
        if isinstance(inner, Mapping):
            state = inner
            break
    if not isinstance(state, Mapping):
        raise TypeError(f"Expected a state dict, got {type(state).__name__}.")
    return state


def _to_encoder_key(key: str) -> str | None:
    """Map a torchvision (old or new) or MONAI densenet key to this encoder's key; ``None`` for classifier keys."""
    for prefix in ("module.", "features."):
        if key.startswith(prefix):
            key = key[len(prefix) :]
    if key.startswith(_IGNORED_PREFIXES):
        return None
    match = _DENSE_LAYER_KEY.match(key)
    if match is not None:
        block_layer, kind, index, tensor = match.groups()
        key = f"{block_layer}.layers.{kind}{index}.{tensor}"
    return f"features.{key}"


def _adapt_input_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Adapt an RGB first-conv weight to ``in_channels`` as timm's ``adapt_input_conv`` does.

    1 channel: sum over RGB. Otherwise: repeat RGB cyclically and scale by ``3 / in_channels`` so the response to a
    constant image keeps its magnitude.
    """
    if weight.shape[1] != 3:
        raise RuntimeError(f"conv0 weight adaptation expects 3 input channels, got shape {tuple(weight.shape)}.")
    dtype = weight.dtype
    weight = weight.float()
    if in_channels == 1:
        weight = weight.sum(dim=1, keepdim=True)
    elif in_channels != 3:
        repeat = int(math.ceil(in_channels / 3))
        weight = weight.repeat(1, repeat, *([1] * (weight.ndim - 2)))[:, :in_channels] * (3.0 / in_channels)
    return weight.to(dtype)


def load_imagenet_weights(encoder: nn.Module, source: str | os.PathLike | Mapping[str, Any]) -> None:
    """Load torchvision densenet121 weights into ``encoder`` (a :class:`DenseNet121Encoder`), strictly.

    Accepts a path or a state dict in torchvision's old (``norm.1``) or new (``norm1``) key format, with or without
    the ``features.`` prefix, optionally wrapped in ``{"state_dict": ...}`` or ``{"model": ...}``; ``classifier.*``
    is ignored. ``conv0`` is adapted when ``encoder`` has ``in_channels != 3``. Raises ``FileNotFoundError`` for a
    missing file and ``RuntimeError`` on missing, unexpected or mis-shaped tensors, so nothing loads partially.
    """
    state = _read_state_dict(source)
    target = encoder.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    mismatched: list[str] = []
    for src_key, value in state.items():
        key = _to_encoder_key(str(src_key))
        if key is None:
            continue
        if key not in target or not isinstance(value, torch.Tensor):
            unexpected.append(str(src_key))
            continue
        if key == "features.conv0.weight" and value.shape != target[key].shape and value.ndim == target[key].ndim:
            value = _adapt_input_conv(value, int(target[key].shape[1]))
        if value.shape != target[key].shape:
            mismatched.append(f"{src_key}: {tuple(value.shape)} vs {key}: {tuple(target[key].shape)}")
            continue
        mapped[key] = value
    missing = sorted(k for k in target if k not in mapped and not k.endswith("num_batches_tracked"))
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing encoder tensors: {missing}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys: {sorted(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches: {mismatched}")
    if problems:
        raise RuntimeError("Cannot load DenseNet-121 ImageNet weights; " + "; ".join(problems))
    result = encoder.load_state_dict(mapped, strict=False)
    assert not result.unexpected_keys and all(k.endswith("num_batches_tracked") for k in result.missing_keys)
    where = "state dict" if isinstance(source, Mapping) else os.fspath(source)
    logger.info("Loaded %d DenseNet-121 ImageNet tensors from %s.", len(mapped), where)


def pad_to_multiple(x: torch.Tensor, multiple: int = 32, mode: str = "replicate") -> tuple[torch.Tensor, list[int]]:
    """Pad the spatial dims of ``x`` (N, C, *spatial) at their end up to a multiple of ``multiple``.

    Returns the padded tensor and the original spatial size (for cropping back). TorchScript-compatible.
    """
    spatial = x.shape[2:]
    size: list[int] = []
    pad: list[int] = []
    for i in range(len(spatial)):
        size.append(int(spatial[i]))
    for i in range(len(size) - 1, -1, -1):  # F.pad wants the last dim first
        pad.append(0)
        pad.append((multiple - size[i] % multiple) % multiple)
    if max(pad) == 0:
        return x, size
    return F.pad(x, pad, mode=mode), size


class PaddedFlexibleUNet(FlexibleUNet):
    """``FlexibleUNet`` that pads the input to a multiple of ``pad_multiple`` and crops the output back.

    Plain ``FlexibleUNet`` with this encoder returns the input size only when every spatial size is a multiple of 4
    (an odd size gives size + 1, and ``ceil(H/2)`` odd makes the decoder's concatenation fail). Padding to 32 makes
    every stage divide evenly. Same parameters and state dict as ``FlexibleUNet``; scriptable.

    Args:
        pad_multiple: spatial sizes are padded up to a multiple of this (32 = the encoder's total stride).
        pad_mode: ``torch.nn.functional.pad`` mode ("replicate", "constant", "reflect", ...).
        args, kwargs: passed to ``monai.networks.nets.FlexibleUNet``.
    """

    def __init__(self, *args: Any, pad_multiple: int = 32, pad_mode: str = "replicate", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if pad_multiple < 1:
            raise ValueError(f"pad_multiple must be >= 1, got {pad_multiple}.")
        self.pad_multiple = pad_multiple
        self.pad_mode = pad_mode

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Pad, run ``FlexibleUNet``, crop the prediction to the input's spatial size."""
        x, size = pad_to_multiple(inputs, self.pad_multiple, self.pad_mode)
        # FlexibleUNet.forward spelled out: TorchScript does not compile super() calls
        out = self.segmentation_head(self.decoder(self.encoder(x), self.skip_connect))
        for i in range(len(size)):
            out = out.narrow(i + 2, 0, size[i])
        return out
