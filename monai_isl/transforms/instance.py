"""Segmentation targets derived from an instance label image: per-cell distance map and foreground mask.

The distance target is each pixel's Euclidean distance to the border of *its own* instance (touching cells are
separated: a pixel next to a neighbouring cell is at distance 1, like one next to the background), rescaled to
the 0..255 scale on which the post-processing's ``h`` (paper: 10) is expressed.

Scaling (``mode``):

* ``"per_instance"`` (default, as in the paper): every cell's distance is divided by its own maximum, so every
  cell peaks at exactly 255 whatever its size. The dome of a cell then rises ~255 above the saddle to any
  neighbour, so ``h = 10`` means "ignore bumps of less than 4 % of a cell's height": a fixed fraction for small
  nuclei and large cells alike, which keeps one ``h`` valid across datasets and magnifications.
* ``"fixed"``: distance in pixels times ``factor`` (no per-cell normalisation, not clipped). Peak heights then
  grow with cell size; a cell whose inscribed radius is below ``h / factor`` pixels can never hold its own
  marker and is merged into a neighbour, so ``h`` turns into a size threshold. Choose ``factor`` so that the
  largest cells reach ~255.

The image border counts as the cell's border (the image is padded with background): a cell cut by the field's
edge still gets a closed dome with its peak inside the field.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from monai.utils import convert_to_dst_type
from scipy import ndimage as ndi

from ..metrics.instance import relabel_sequential

__all__ = ["InstanceToDistanced", "InstanceToMaskd", "instance_distance"]

DISTANCE_SCALE = 255.0


def _labels_2d(x: Any) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(f"expected an instance label image (1, H, W) or (H, W), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        arr = np.rint(arr).astype(np.int64)
    return arr


def instance_distance(labels: np.ndarray, mode: str = "per_instance", factor: float = 1.0) -> np.ndarray:
    """Float32 map of each pixel's Euclidean distance to the border of its own instance, scaled per ``mode``.

    Background is 0; a one-pixel-wide rim of every instance is 1 (times the scaling). See the module docstring
    for ``mode`` (``"per_instance"``: every instance peaks at 255; ``"fixed"``: pixels times ``factor``).
    """
    if mode not in ("per_instance", "fixed"):
        raise ValueError(f"mode must be 'per_instance' or 'fixed', got {mode!r}")
    labels = np.asarray(labels)
    seq, n = relabel_sequential(labels)
    seq = seq.reshape(labels.shape)
    if n == 0:
        return np.zeros(labels.shape, np.float32)
    # pad with background: the image border becomes a cell border, and every box grown by 1 has a zero rim
    padded = np.pad(seq, 1)
    out = np.zeros(padded.shape, np.float32)
    for idx, box in enumerate(ndi.find_objects(padded), start=1):
        if box is None:
            continue
        box = tuple(slice(s.start - 1, s.stop + 1) for s in box)
        inside = padded[box] == idx
        dist = ndi.distance_transform_edt(inside)
        dist *= DISTANCE_SCALE / dist.max() if mode == "per_instance" else factor
        out[box][inside] = dist[inside]
    return out[(slice(1, -1),) * out.ndim]


class InstanceToDistanced(MapTransform):
    """Distance-to-own-border target (float32 ``(1, H, W)``, 0..255 scale) from an instance label image.

    Input ``(1, H, W)`` or ``(H, W)`` numpy array or tensor; the output is the same kind (a MetaTensor keeps its
    metadata) and goes to ``output_key`` (default: overwrite the key). See :func:`instance_distance`.
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_key: str | Sequence[str] | None = None,
        mode: str = "per_instance",
        factor: float = 1.0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_keys = _output_keys(self.keys, output_key)
        if mode not in ("per_instance", "fixed"):
            raise ValueError(f"mode must be 'per_instance' or 'fixed', got {mode!r}")
        self.mode = mode
        self.factor = factor

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key, out_key in self.key_iterator(d, self.output_keys):
            dist = instance_distance(_labels_2d(d[key]), mode=self.mode, factor=self.factor)[None]
            d[out_key] = _like(dist, d[key])
        return d


class InstanceToMaskd(MapTransform):
    """Foreground mask target (``instance > 0`` as float32 0/1, ``(1, H, W)``) from an instance label image."""

    def __init__(
        self, keys: KeysCollection, output_key: str | Sequence[str] | None = None, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_keys = _output_keys(self.keys, output_key)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key, out_key in self.key_iterator(d, self.output_keys):
            mask = (_labels_2d(d[key]) > 0).astype(np.float32)[None]
            d[out_key] = _like(mask, d[key])
        return d


def _output_keys(keys: Sequence[Hashable], output_key: str | Sequence[str] | None) -> list[Hashable]:
    if output_key is None:
        return list(keys)
    out = [output_key] if isinstance(output_key, str) else list(output_key)
    if len(out) != len(keys):
        raise ValueError(f"need one output_key per key, got {out} for {list(keys)}")
    return out


def _like(arr: np.ndarray, template: Any) -> Any:
    """``arr`` as the same kind of container as ``template`` (numpy, tensor, MetaTensor with its metadata)."""
    if isinstance(template, torch.Tensor):
        return convert_to_dst_type(arr, template, dtype=torch.float32)[0]
    return arr
