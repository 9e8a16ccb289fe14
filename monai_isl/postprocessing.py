"""From the network's distance map and mask probability to an instance label image (paper: h-maxima + watershed).

Definition (what :func:`hmaxima_watershed_reference` computes with scikit-image in float64):

* the domain is the foreground ``mask > mask_threshold``; the distance map ``f`` is only looked at there
  (pixels outside the mask never connect two cells);
* markers are the 8-connected regional maxima of ``HMAX_h(f)``, the reconstruction by dilation of ``f - h``
  under ``f``: one marker per dome whose height above the saddle to any higher dome is more than ``h``
  (domes with a smaller dynamic are absorbed by their neighbour);
* every mask pixel is flooded (8-connected watershed of ``-f``) from those markers. A mask component whose
  whole relief is within ``h`` (a flat map, for instance) is a single marker, hence a single instance.

:func:`hmaxima_watershed` computes the same partition 30-40x faster than scikit-image's float32
``h_maxima`` + ``label`` + ``watershed`` (0.2 s vs 6.5-7.5 s on a 2160 x 2160 field, 2 cores; see
``benchmarks/README.md``). It is the flooding of the mask pixels in decreasing order of ``f`` with a
union-find, where two basins that meet stay apart only when both already rise more than ``h`` above the
meeting level: that rule is exactly the h-maxima marker condition, so markers and flooding come out of one
computation. To keep memory access local it runs on basins rather than pixels: steepest-ascent pointers
(plateaus shared out breadth-first from their exits, as a priority-queue flooding does), then the basin
adjacency edges counting-sorted by level (16-bit bins; the ``h`` test itself uses the float values), then
the union-find over those edges. ``f`` is not quantised. Where basins tie (a pixel with two equally high
neighbours of different basins, equal saddles) the choice can differ from scikit-image's; on network-like
maps the two agree exactly (mAP 1.0), on smoothed white noise to mAP >= 0.99, as the tests and
``benchmarks/bench_postprocessing.py`` check. The kernel needs numba, a runtime dependency: no
scikit-image, SciPy or ITK filter chain comes within 10x (ITK on uint8 takes ~1.5 s); without numba the
scikit-image reference is used.

Distance maps are on a 0..255 scale (see :class:`monai_isl.transforms.InstanceToDistanced`); ``h = 10`` is the
paper's default. Note that the paper's code in effect kept only peaks of dynamic >= ~30, so ``h = 10`` here
splits more readily than the published pipeline did; raise ``h`` to reproduce its behaviour. Unlike the
reference code (uint8 labels, at most 254 cells) the number of instances is not capped: labels are uint16,
or uint32 past 65535 instances.

``h = "auto"``: :class:`HMaximaWatershedd` reads the ``h`` (and Gaussian sigma of the distance map) that
:func:`monai_isl.instance_fit.fit_network_watershed` fitted on annotated fields and stored in the network
(:class:`monai_isl.networks.transfer.CellOutput` buffers), from the network itself or from a ``model.pt`` /
TorchScript file. A trained network's distance map need not reach the target's scale, and ``h = 10`` splits
cells even on the true target (mAP 0.52 at h = 10, 0.87 at h = 60 on Usiigaci), so a fitted ``h`` is the default.

``min_area`` (not in the paper): predicted objects smaller than this many pixels are dropped (set to background)
after the watershed. A trained network leaves specks where its mask probability crosses 0.5 in noise: on Usiigaci
(random init, all 24 training fields) the unmatched objects had a median area of 20-70 px against ~3,500 px per
cell, and dropping objects under 200-800 px raised the training fields' mAP from 0.253 to 0.37-0.40
(``docs/results/real_cell_cpu400/small_objects.py``). ``min_area="auto"`` reads the value fitted next to ``h``;
a model fitted before ``min_area`` existed (or none) keeps every object (0).

``min_area`` relative to the field (the default fit): a pixel count fitted on the training fields fails on a
field whose cells are smaller. On Usiigaci the median cell covers 2,700-4,300 px on most fields and 1,100-1,600 px
on seven; 1,314 px fitted on the former drops 37-67 % of the true cells of the latter
(``docs/results/real_cell_generalisation/``). So the fit stores a *fraction* ``min_area_fraction`` of each field's
own :func:`typical_object_area` (the area-weighted median of its predicted objects, which specks of 20-70 px
barely move) and each field drops the objects below that fraction of its own typical object.
"""

from __future__ import annotations

import math
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from monai.utils import convert_to_dst_type
from scipy import ndimage as ndi

__all__ = [
    "HMaximaWatershedd",
    "check_h",
    "hmaxima_watershed",
    "hmaxima_watershed_reference",
    "numba_available",
    "fitted_instances",
    "remove_relatively_small_instances",
    "remove_small_instances",
    "smooth_distance",
    "stored_watershed_params",
    "typical_object_area",
]

_KERNEL = None


def numba_available() -> bool:
    """Whether the fast kernel can be used (numba importable)."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def check_h(value: Any, name: str = "h") -> float | str:
    """``value`` as a float >= 0 or the string ``"auto"``; a clear ValueError naming ``name`` otherwise."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            return "auto"
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{name} must be a number >= 0 or 'auto', got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number >= 0 or 'auto', got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a number >= 0 or 'auto', got {value!r}")
    return value


def smooth_distance(distance: np.ndarray, sigma: float) -> np.ndarray:
    """The distance map smoothed by a Gaussian of ``sigma`` pixels (unchanged for sigma 0): fewer noise peaks."""
    if sigma <= 0:
        return distance
    return ndi.gaussian_filter(np.asarray(distance, dtype=np.float32), float(sigma))


def remove_small_instances(labels: np.ndarray, min_area: float) -> np.ndarray:
    """``labels`` without the instances of fewer than ``min_area`` pixels (set to 0), the others renumbered 1..n in
    the order of their old ids, same dtype. When nothing is dropped (``min_area`` 0, or no instance that small)
    ``labels`` itself is returned, ids unchanged."""
    min_area = check_h(min_area, "min_area")
    if min_area == "auto":
        raise ValueError("min_area='auto' is resolved by HMaximaWatershedd (stored in the model); pass a number here")
    labels = np.asarray(labels)
    if min_area <= 0 or labels.size == 0:
        return labels
    area = np.bincount(labels.ravel().astype(np.int64))
    keep = area >= min_area
    keep[0] = False
    if keep[1:].all() or area.size == 1:
        return labels
    new_id = np.zeros(area.size, dtype=labels.dtype)
    new_id[keep] = np.arange(1, int(keep.sum()) + 1, dtype=labels.dtype)
    return new_id[labels]


def typical_object_area(labels: np.ndarray) -> float:
    """The area-weighted median object area of an instance label image (0 without objects).

    The area of the object that the median foreground pixel belongs to: the size of the objects that make up the
    field. Specks (tens of pixels among cells of thousands) hold few pixels and barely move it, unlike the plain
    median over objects, which a network's many specks would drag down. The scale a relative ``min_area`` uses.
    """
    labels = np.asarray(labels)
    if labels.size == 0:
        return 0.0
    area = np.bincount(labels.ravel().astype(np.int64))[1:]
    area = np.sort(area[area > 0])
    if area.size == 0:
        return 0.0
    cumulative = np.cumsum(area, dtype=np.float64)
    return float(area[np.searchsorted(cumulative, 0.5 * cumulative[-1])])


def remove_relatively_small_instances(labels: np.ndarray, fraction: float, min_area: float = 0.0) -> np.ndarray:
    """``labels`` without the instances smaller than ``fraction`` x :func:`typical_object_area` of ``labels`` (and
    than ``min_area`` pixels), as :func:`remove_small_instances`: a minimum area that scales with the field."""
    if not (math.isfinite(float(fraction)) and float(fraction) >= 0):
        raise ValueError(f"min_area_fraction must be a number >= 0, got {fraction!r}")
    threshold = float(fraction) * typical_object_area(labels) if fraction > 0 else 0.0
    return remove_small_instances(labels, max(threshold, float(min_area)))


def fitted_instances(
    distance: np.ndarray,
    prob: np.ndarray,
    h: float,
    sigma: float = 0.0,
    min_area: float = 0.0,
    min_area_fraction: float = 0.0,
    mask_threshold: float = 0.5,
    method: str = "auto",
) -> np.ndarray:
    """The whole post-processing of one prediction: the distance smoothed by ``sigma``, :func:`hmaxima_watershed`
    inside ``prob > mask_threshold``, then the objects below ``min_area`` pixels and below ``min_area_fraction`` x
    the field's :func:`typical_object_area` dropped. What :class:`HMaximaWatershedd`, the fit's size range and
    :class:`monai_isl.scale.ObjectScaleInferer` all compute with the fitted values."""
    distance = smooth_distance(distance, sigma)
    labels = hmaxima_watershed(distance, prob, h=h, mask_threshold=mask_threshold, method=method)
    return remove_relatively_small_instances(labels, min_area_fraction, min_area)


#: the watershed parameters a fitted network stores (``CellOutput`` buffers ``watershed_<name>``)
STORED_PARAMS = ("h", "sigma", "min_area", "min_area_fraction", "area_low", "area_high")

_STORED_CACHE: dict[tuple[str, int, int], dict[str, float | None]] = {}


def _params_from_buffers(buffers: Any) -> dict[str, float | None]:
    out: dict[str, float | None] = {key: None for key in STORED_PARAMS}
    for name, value in buffers:
        for key in STORED_PARAMS:
            if str(name).endswith(f"watershed_{key}") and out[key] is None:
                v = float(value)
                out[key] = v if math.isfinite(v) and v >= 0 else None  # negative: not fitted yet
    return out


def _is_torchscript(path: Path) -> bool:
    """A TorchScript archive (``torch.jit.save``): a zip holding ``*/code/`` and ``*/constants.pkl``."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") for name in archive.namelist())


def stored_watershed_params(source: Any) -> dict[str, float | None]:
    """The fitted ``{"h", "sigma", "min_area"}`` stored in a network (module or TorchScript module) or a checkpoint.

    ``source``: an ``nn.Module`` (buffers named ``*watershed_h`` / ``*watershed_sigma`` / ``*watershed_min_area``,
    read at each call so that
    a checkpoint loaded into it later counts), or a path to a ``model.pt`` (plain state dict or ``{"model": ...}``)
    or TorchScript file (read once per modification time). A value not stored (or NaN, not fitted) is None.
    """
    if isinstance(source, torch.nn.Module) or hasattr(source, "named_buffers"):
        return _params_from_buffers(source.named_buffers())
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"h='auto': no model file '{path}' to read the fitted h from")
        stat = path.stat()
        key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
        if key not in _STORED_CACHE:
            if _is_torchscript(path):
                state = dict(torch.jit.load(str(path), map_location="cpu").named_buffers())
            else:
                state = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(state, dict) and isinstance(state.get("model"), dict):
                state = state["model"]
            _STORED_CACHE[key] = _params_from_buffers(state.items() if isinstance(state, dict) else [])
        return dict(_STORED_CACHE[key])
    raise TypeError(f"cannot read watershed parameters from {type(source).__name__}")


def _finish_labels(labels: np.ndarray, n: int) -> np.ndarray:
    return labels.astype(np.uint16 if n <= np.iinfo(np.uint16).max else np.uint32, copy=False)


def _as_2d_pair(distance: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """C-contiguous maps for the kernel: distance in float32 (float64 kept), mask in float32 (two signatures)."""
    distance = np.asarray(distance)
    distance = np.ascontiguousarray(distance, dtype=np.float64 if distance.dtype == np.float64 else np.float32)
    mask = np.ascontiguousarray(mask, dtype=np.float32)
    if distance.ndim != 2 or distance.shape != mask.shape:
        raise ValueError(f"distance and mask must be 2D of the same shape, got {distance.shape} and {mask.shape}")
    return distance, mask


def _check_inputs(distance: np.ndarray, mask: np.ndarray, mask_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    distance = np.asarray(distance)
    mask = np.asarray(mask)
    if distance.ndim != 2 or distance.shape != mask.shape:
        raise ValueError(f"distance and mask must be 2D of the same shape, got {distance.shape} and {mask.shape}")
    return distance, mask > mask_threshold


def _flood(distance: np.ndarray, prob: np.ndarray, mask_threshold: float, h: float) -> tuple[np.ndarray, int]:
    """Marker-controlled watershed from h-maxima, 8-connected, in three local passes and one small union-find.

    1. every mask pixel points to its highest strictly higher 8-neighbour; plateau pixels point, breadth-first,
       towards the plateau's exits; pixels of a plateau maximum chain to an earlier pixel of it. Following
       the pointers gives each pixel's basin (about one per regional maximum);
    2. every pair of touching pixels of two basins is an edge at level min(f(p), f(q)); edges are counting-
       sorted by that level (16-bit bins over the range of f in the mask);
    3. going down the edges, two basins merge unless both already rise more than ``h`` above the edge's
       level (both hold an h-maximum: a watershed line); the lower one is absorbed otherwise.

    This is the flooding of the pixels in decreasing order of f (union-find) computed on basins instead of
    pixels, which keeps every pass over the image local in memory. Plain Python so that it reads and runs
    without numba (on small images); :func:`_get_kernel` compiles it. Returns int32 labels and their count.
    """
    height, width = distance.shape
    f = distance.ravel()
    pr = prob.ravel()
    n_pix = f.size
    inside = np.zeros(n_pix, np.bool_)
    low = np.inf
    high = -np.inf
    for i in range(n_pix):
        if pr[i] > mask_threshold:
            inside[i] = True
            v = f[i]
            if not np.isfinite(v):
                raise ValueError("distance must be finite inside the mask")
            low = min(low, v)
            high = max(high, v)
    labels = np.zeros(n_pix, np.int32)
    if not high >= low:  # empty mask
        return labels.reshape(height, width), 0
    dy = (-1, -1, -1, 0, 0, 1, 1, 1)
    dx = (-1, 0, 1, -1, 1, -1, 0, 1)
    # 1. steepest ascent pointers, then each pixel's basin (the root its pointers lead to)
    root = np.empty(n_pix, np.int32)
    queue = np.empty(n_pix, np.int32)  # plateau exits: pixels with a higher neighbour and an equal one
    tail = 0
    for p in range(n_pix):
        if not inside[p]:
            continue
        y = p // width
        x = p - y * width
        best = p
        best_value = f[p]
        has_equal = False
        for j in range(8):
            yy = y + dy[j]
            xx = x + dx[j]
            if 0 <= yy < height and 0 <= xx < width:
                n = yy * width + xx
                if inside[n]:
                    if f[n] > best_value:
                        best = n
                        best_value = f[n]
                    elif f[n] == f[p]:
                        has_equal = True
        root[p] = best
        if best != p and has_equal:
            queue[tail] = p
            tail += 1
    # plateaus: flood breadth-first from their exits, so that a plateau between two basins is shared out by
    # distance as in a priority-queue flooding (the pixels of a plateau have no steepest ascent of their own)
    head = 0
    while head < tail:
        u = queue[head]
        head += 1
        y = u // width
        x = u - y * width
        for j in range(8):
            yy = y + dy[j]
            xx = x + dx[j]
            if 0 <= yy < height and 0 <= xx < width:
                n = yy * width + xx
                if inside[n] and root[n] == n and f[n] == f[u]:
                    root[n] = u
                    queue[tail] = n
                    tail += 1
    # what is left pointing to itself are regional maxima: chain each plateau of them to one pixel
    for p in range(n_pix):
        if inside[p] and root[p] == p:
            y = p // width
            x = p - y * width
            for j in range(4):  # the neighbours before p in raster order
                yy = y + dy[j]
                xx = x + dx[j]
                if 0 <= yy and 0 <= xx < width:
                    n = yy * width + xx
                    if inside[n] and f[n] == f[p]:
                        root[p] = n
                        break
    for p in range(n_pix):
        if not inside[p]:
            continue
        r = p
        while root[r] != r:
            r = root[r]
        q = p
        while root[q] != r:
            nxt = root[q]
            root[q] = r
            q = nxt
    # 2. basin-to-basin edges (forward neighbours only), counting-sorted by decreasing level
    n_bins = 65536
    scale = (n_bins - 1) / (high - low) if high > low else 0.0
    start = np.zeros(n_bins + 1, np.int64)
    fy = (0, 1, 1, 1)
    fx = (1, -1, 0, 1)
    total = 0
    edge_a = np.empty(0, np.int32)
    edge_b = np.empty(0, np.int32)
    edge_level = np.empty(0, f.dtype)
    # two passes over the same edges: the first counts them per level bin, the second files them in order
    for fill in range(2):
        if fill == 1:
            for k in range(n_bins + 1):
                count = start[k]
                start[k] = total
                total += count
            edge_a = np.empty(total, np.int32)
            edge_b = np.empty(total, np.int32)
            edge_level = np.empty(total, f.dtype)
        for p in range(n_pix):
            if not inside[p]:
                continue
            y = p // width
            x = p - y * width
            for j in range(4):
                yy = y + fy[j]
                xx = x + fx[j]
                if yy < height and 0 <= xx < width:
                    n = yy * width + xx
                    if inside[n] and root[n] != root[p]:
                        level = min(f[p], f[n])
                        k = n_bins - 1 - int((level - low) * scale + 0.5)
                        if fill == 1:
                            edge_a[start[k]] = root[p]
                            edge_b[start[k]] = root[n]
                            edge_level[start[k]] = level
                        start[k] += 1
    # 3. merge basins down the edges; a basin is marked once its peak is more than h above the edge level
    parent = root  # basin roots are their own parent already; other entries are never read from here on
    for e in range(total):
        a = edge_a[e]
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        b = edge_b[e]
        while parent[b] != b:
            parent[b] = parent[parent[b]]
            b = parent[b]
        if a == b:
            continue
        level = edge_level[e]
        marked_a = f[a] - level > h
        marked_b = f[b] - level > h
        if marked_a and marked_b:
            continue
        # the root of a merged basin is its highest pixel, so f[root] stays the basin's peak
        if marked_b or (not marked_a and f[b] > f[a]):
            parent[a] = b
        else:
            parent[b] = a
    n_labels = 0
    for p in range(n_pix):
        if inside[p] and parent[p] == p:
            n_labels += 1
            labels[p] = n_labels
    for p in range(n_pix):
        if inside[p] and labels[p] == 0:
            r = root[p]
            while parent[r] != r:
                r = parent[r]
            labels[p] = labels[r]
    return labels.reshape(height, width), n_labels


def _get_kernel():
    """``_flood`` compiled by numba (once per process; cached on disk where the package is writable)."""
    global _KERNEL
    if _KERNEL is None:
        import numba

        _KERNEL = numba.njit(cache=True, nogil=True)(_flood)
    return _KERNEL


def hmaxima_watershed(
    distance: np.ndarray,
    mask: np.ndarray,
    h: float = 10.0,
    mask_threshold: float = 0.5,
    method: str = "auto",
    min_area: float = 0.0,
) -> np.ndarray:
    """Instance labels (uint16, uint32 past 65535 cells) from a distance map and a mask probability map.

    ``method``: ``"fast"`` (numba union-find, see the module docstring), ``"reference"`` (scikit-image,
    float64) or ``"auto"`` (fast when numba is installed). An empty mask gives all zeros. ``min_area``: drop
    the objects of fewer pixels afterwards (:func:`remove_small_instances`; 0 keeps all, the paper's pipeline).
    """
    if method not in ("auto", "fast", "reference"):
        raise ValueError(f"method must be 'auto', 'fast' or 'reference', got {method!r}")
    if check_h(h) == "auto":
        raise ValueError("h='auto' is resolved by HMaximaWatershedd (stored in the model); pass a number here")
    if check_h(min_area, "min_area") == "auto":
        raise ValueError("min_area='auto' is resolved by HMaximaWatershedd (stored in the model); pass a number here")
    if method == "reference" or (method == "auto" and not numba_available()):
        labels = hmaxima_watershed_reference(distance, mask, h=h, mask_threshold=mask_threshold)
    else:
        distance, mask = _as_2d_pair(distance, mask)
        labels, n = _get_kernel()(distance, mask, float(mask_threshold), float(h))
        labels = _finish_labels(labels, n)
    return remove_small_instances(labels, min_area)


def hmaxima_watershed_reference(
    distance: np.ndarray, mask: np.ndarray, h: float = 10.0, mask_threshold: float = 0.5
) -> np.ndarray:
    """The definition, in float64 with scikit-image: ``local_maxima(reconstruction(f - h, f))`` markers and an
    8-connected ``watershed(-f)`` in the mask. Slow (seconds on 2160 x 2160); the yardstick for the fast path."""
    from skimage.morphology import local_maxima, reconstruction
    from skimage.segmentation import watershed

    distance, inside = _check_inputs(distance, mask, mask_threshold)
    if not inside.any():
        return np.zeros(distance.shape, np.uint16)
    f = distance.astype(np.float64)
    # outside the mask: low enough that no level set at or above (min - h) reaches it
    f = np.where(inside, f, f[inside].min() - 2 * abs(float(h)) - 1.0)
    hmax = reconstruction(f - h, f, method="dilation", footprint=np.ones((3, 3), bool))
    eight = np.ones((3, 3), bool)
    markers, _ = ndi.label(local_maxima(hmax, connectivity=2) & inside, structure=eight)
    labels = watershed(-f, markers, mask=inside, connectivity=2)
    missing = inside & (labels == 0)  # mask pixels no marker reached: one instance per component
    if missing.any():
        extra, n_extra = ndi.label(missing, structure=eight)
        labels = np.where(missing, extra + labels.max(), labels)
    n = int(labels.max())
    return _finish_labels(labels, n)


class HMaximaWatershedd(MapTransform):
    """Instance labels ``(1, H, W)`` from a 2-channel network output (distance, mask probability).

    For each key the output ``(C, H, W)`` (numpy or tensor) gives ``distance = x[distance_channel]`` and
    ``mask = x[mask_channel]`` (a probability; ``sigmoid=True`` if that channel holds logits). The labels are
    written to ``output_key`` (one per key; default ``"<key>_inst"``) as the same kind of array as the input:
    uint16/uint32 numpy, or an int32 (int64 past 2**31 - 1 cells) tensor keeping a MetaTensor's metadata.

    ``h``, ``sigma`` (Gaussian smoothing of the distance map before the h-maxima, in pixels; 0 = none) and
    ``min_area`` (objects of fewer pixels are dropped; 0 = none) are
    numbers or ``"auto"``: the values fitted after training (:mod:`monai_isl.instance_fit`), read from
    ``params`` (the network, read at every call so that a checkpoint loaded into it later counts, or a
    ``model.pt`` / TorchScript path) via :func:`stored_watershed_params`. Where nothing is stored, ``h="auto"``
    falls back to ``fallback_h`` (e.g. validation during training, before the fit) or raises if that is None;
    ``sigma="auto"`` and ``min_area="auto"`` fall back to 0 (a model fitted before ``min_area`` existed keeps
    every object, as it did then). ``min_area="auto"`` also applies a stored ``min_area_fraction``: objects
    below that fraction of the field's own :func:`typical_object_area` are dropped (the default fit).
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_key: str | Sequence[str] | None = None,
        h: float | str = 10.0,
        mask_threshold: float = 0.5,
        distance_channel: int = 0,
        mask_channel: int = 1,
        sigmoid: bool = False,
        method: str = "auto",
        sigma: float | str = 0.0,
        params: Any = None,
        fallback_h: float | None = None,
        allow_missing_keys: bool = False,
        min_area: float | str = 0.0,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if output_key is None:
            self.output_keys = [f"{k}_inst" for k in self.keys]
        elif isinstance(output_key, str):
            self.output_keys = [output_key]
        else:
            self.output_keys = list(output_key)
        if len(self.output_keys) != len(self.keys):
            raise ValueError(f"need one output_key per key, got {self.output_keys} for {list(self.keys)}")
        self.h = check_h(h, "h")
        self.sigma = check_h(sigma, "sigma")
        self.min_area = check_h(min_area, "min_area")
        self.fallback_h = None if fallback_h is None else check_h(fallback_h, "fallback_h")
        if self.fallback_h == "auto":
            raise ValueError("fallback_h must be a number >= 0 (the h used while none is stored), got 'auto'")
        if "auto" in (self.h, self.sigma, self.min_area) and params is None and self.fallback_h is None:
            raise ValueError(
                "h='auto' needs params: the network (or model.pt path) holding the fitted h, or a fallback_h"
            )
        self.params = params
        self.mask_threshold = mask_threshold
        self.distance_channel = distance_channel
        self.mask_channel = mask_channel
        self.sigmoid = sigmoid
        self.method = method

    def resolved(self) -> tuple[float, float, float]:
        """The ``(h, sigma, min_area)`` used now: the numbers given, or the stored values for ``"auto"``."""
        stored: dict[str, float | None] = {key: None for key in STORED_PARAMS}
        if "auto" in (self.h, self.sigma, self.min_area) and self.params is not None:
            stored = stored_watershed_params(self.params)
        h, sigma = self.h, self.sigma
        if h == "auto":
            h = stored["h"] if stored["h"] is not None else self.fallback_h
            if h is None:
                raise ValueError(
                    "h='auto' but the model stores no fitted h: run monai_isl.instance_fit.fit_network_watershed "
                    "after training (the train config does), or give h as a number"
                )
        if sigma == "auto":
            sigma = stored["sigma"] if stored["sigma"] is not None else 0.0
        min_area = self.min_area
        if min_area == "auto":
            min_area = stored["min_area"] if stored["min_area"] is not None else 0.0
        return float(h), float(sigma), float(min_area)

    def resolved_min_area_fraction(self) -> float:
        """The relative minimum area used now: with ``min_area="auto"`` the stored ``min_area_fraction`` (objects
        below it x the field's :func:`typical_object_area` are dropped), else 0 (a number given is in pixels)."""
        if self.min_area != "auto" or self.params is None:
            return 0.0
        fraction = stored_watershed_params(self.params).get("min_area_fraction")
        return float(fraction) if fraction is not None else 0.0

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        h, sigma, min_area = self.resolved()
        fraction = self.resolved_min_area_fraction()
        for key, out_key in self.key_iterator(d, self.output_keys):
            x = d[key]
            arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
            if arr.ndim != 3:
                raise ValueError(f"{key}: expected a (C, H, W) network output, got shape {arr.shape}")
            mask = arr[self.mask_channel].astype(np.float64)
            if self.sigmoid:
                mask = 1.0 / (1.0 + np.exp(-mask))
            labels = fitted_instances(
                arr[self.distance_channel], mask, h, sigma, min_area, fraction, self.mask_threshold, self.method
            )[None]
            if isinstance(x, torch.Tensor):
                dtype = torch.int32 if labels.max(initial=0) < 2**31 else torch.int64
                d[out_key] = convert_to_dst_type(labels.astype(np.int64), x, dtype=dtype)[0]
            else:
                d[out_key] = labels
        return d
