"""Dictionary transforms for whole microscopy fields: load channels, normalise by percentiles, crop, write.

The order used by every bundle::

    LoadFieldd -> PercentileStatsd -> [RandCropSamplesd] -> ApplyPercentilesd -> EnsureTyped

Everything up to the first random transform is deterministic, so MONAI's ``CacheDataset`` keeps the decoded
fields in their native dtype (2 bytes per uint16 pixel) plus a few percentiles; crops are cut and scaled to
float32 on the fly. Percentiles are per image and per channel, computed on the whole field, so a crop is scaled
exactly as the full field is at inference time.
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable
from monai.utils import ensure_tuple_rep

from ..errors import DataError
from ..io import describe_planes, read_image, write_image

STATS_SUFFIX = "_percentiles"


def scale_by_percentiles(array: np.ndarray, stats: np.ndarray) -> np.ndarray:
    """``(x - low) / (high - low)`` per channel in float64, with ``stats`` the ``(C, 2)`` stored percentiles.

    A flat channel (high == low) becomes ``x - low`` instead of a division by zero.
    """
    stats = np.asarray(stats, dtype=np.float64)
    low = stats[:, 0].reshape(-1, *([1] * (np.ndim(array) - 1)))
    span = (stats[:, 1] - stats[:, 0]).reshape(low.shape)
    return (np.asarray(array, dtype=np.float64) - low) / np.where(span > 0, span, 1.0)


# integer images whose value range is at most this many levels get exact percentiles from a histogram
_HISTOGRAM_MAX_LEVELS = 1 << 17


def channel_percentiles(flat: np.ndarray, q: Sequence[float]) -> np.ndarray:
    """Percentiles ``q`` (0..100) of each row of ``flat`` ``(C, N)``, as ``(C, len(q))`` float64.

    The same values, bit for bit, as ``np.percentile(flat.astype(float64), q, axis=1).T`` (numpy's default
    ``linear`` method; numpy on int16 itself can overflow), but 8/16-bit integer images take a histogram instead
    of a partial sort: ~3x faster on a 2160 x 2160 uint16 channel (~30 vs ~90 ms), which adds up when hundreds
    of fields are cached.
    """
    flat = np.asarray(flat)
    q = np.asarray(q, dtype=np.float64)
    if flat.ndim != 2 or flat.shape[1] == 0:
        raise ValueError(f"expected a non-empty (C, N) array, got shape {flat.shape}")
    if not (np.issubdtype(flat.dtype, np.integer) and flat.dtype.itemsize <= 2):
        return np.percentile(flat, q, axis=1).T.astype(np.float64)
    n = flat.shape[1]
    # numpy's "linear" method: virtual index (n - 1) * q / 100 between the order statistics floor() and floor() + 1
    virtual = (n - 1) * np.true_divide(q, 100)
    below = np.floor(virtual)
    above = np.minimum(below + 1, n - 1).astype(np.int64)
    gamma = virtual - below
    out = np.empty((flat.shape[0], len(q)), np.float64)
    for c, row in enumerate(flat):
        low = int(row.min())
        if int(row.max()) - low >= _HISTOGRAM_MAX_LEVELS:  # not reached for 8/16-bit data; kept for safety
            out[c] = np.percentile(row, q)
            continue
        cumulative = np.cumsum(np.bincount((row.astype(np.int64) - low) if low else row, minlength=1))
        # the k-th smallest value (0-based) is the first level whose cumulative count exceeds k
        a = np.searchsorted(cumulative, below.astype(np.int64), side="right").astype(np.float64) + low
        b = np.searchsorted(cumulative, above, side="right").astype(np.float64) + low
        diff = b - a
        out[c] = np.where(gamma >= 0.5, b - diff * (1 - gamma), a + diff * gamma)  # numpy's _lerp, bit for bit
    return out


def output_path(output_dir: str | Path, name: str, suffix: str) -> Path:
    """Where the prediction for input ``name`` goes: ``output_dir/<name><suffix>``, a relative name's folders
    flattened with ``_`` and an absolute one reduced to its file name, image extensions dropped."""
    stem = Path(name)
    for ext in (".gz", ".nii", ".tiff", ".tif", ".png"):
        stem = stem.with_suffix("") if stem.name.lower().endswith(ext) else stem
    parts = [stem.name] if stem.is_absolute() else [p for p in stem.parts if p not in ("..", ".")]
    return Path(output_dir) / f"{'_'.join(parts)}{suffix}"


def _files(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]


def _spatial(array: np.ndarray | torch.Tensor) -> tuple[int, ...]:
    return tuple(int(s) for s in array.shape[1:])


class LoadFieldd(MapTransform):
    """Read each key's file(s) and stack them as channels ``(C, H, W)``, in the files' native dtype.

    A key listing several files gets one channel per file (e.g. two bright-field planes and a phase-contrast
    image). Keys in ``max_project`` are reduced to one channel by a maximum over their files/channels, as the
    paper does for its DAPI z-stacks. Checks, with the offending file or key in the message: all files of an item
    share one spatial shape, channel counts match ``expected_channels`` (the network's ``in_channels``), no NaN/inf.

    Args:
        keys: item keys holding file paths.
        max_project: keys whose channels are max-projected to one.
        expected_channels: ``{key: n}`` channel counts to enforce after projection.
        require_foreground: keys (annotations) that must hold at least one pixel > 0, as training labels must.
        require_contrast: keys (ISL targets: stain images) whose every channel must hold more than one value; an
            all-zero or constant target teaches nothing (and its percentile scaling divides by zero).

    An item with a ``region`` (:data:`REGION_KEY`) is cut to it after loading (:func:`crop_region`).
    """

    def __init__(
        self,
        keys: KeysCollection,
        max_project: KeysCollection = (),
        expected_channels: Mapping[str, int] | None = None,
        require_foreground: KeysCollection = (),
        require_contrast: KeysCollection = (),
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.max_project = {max_project} if isinstance(max_project, str) else set(max_project)
        self.require_contrast = {require_contrast} if isinstance(require_contrast, str) else set(require_contrast)
        self.expected_channels = dict(expected_channels or {})
        self.require_foreground = (
            {require_foreground} if isinstance(require_foreground, str) else set(require_foreground)
        )

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        reference: tuple[tuple[int, ...], str] | None = None
        for key in self.key_iterator(d):
            files = _files(d[key])
            channels = []
            for f in files:
                array = read_image(f)
                if reference is None:
                    reference = (_spatial(array), f)
                elif _spatial(array) != reference[0]:
                    raise ValueError(
                        f"key '{key}': image '{f}' has spatial shape {_spatial(array)}, but '{reference[1]}' of the "
                        f"same item has {reference[0]}; all inputs and targets of an item must be the same size "
                        "(register or crop them first)"
                    )
                channels.append(array)
            planes = [int(c.shape[0]) for c in channels]
            dtype = np.result_type(*[c.dtype for c in channels])
            stacked = np.concatenate([c.astype(dtype, copy=False) for c in channels], axis=0)
            if key in self.max_project:
                stacked = stacked.max(axis=0, keepdims=True)
            expected = self.expected_channels.get(str(key))
            if expected is not None and stacked.shape[0] != int(expected):
                planes = [] if key in self.max_project else planes  # projected: no per-file count to name
                raise DataError(_channel_message(str(key), int(expected), int(stacked.shape[0]), files, planes))
            if key in self.require_contrast:
                _check_contrast(str(key), stacked, files)
            if key in self.require_foreground and not np.any(stacked):
                raise DataError(
                    f"key '{key}': annotation {files} is empty (no pixel > 0); a training image needs at least one "
                    "annotated object: check the file or remove the item"
                )
            d[key] = crop_region(stacked, d.get(REGION_KEY), str(key))
        return d


#: item key of a sub-field: ``[[start, stop], ...]`` fractions per spatial axis (``monai_isl.data.holdout_split``)
REGION_KEY = "region"


def crop_region(array: np.ndarray, region: Sequence[Sequence[float]] | None, key: str = "image") -> np.ndarray:
    """``array`` (C, H, W...) cut to ``region``: per spatial axis a ``[start, stop]`` fraction of its length.

    A region lets one annotated image serve two purposes, training on one part and validation (the step-0 score of
    the fine-tune guard) on the other, without writing cropped copies of the user's files. ``None``: unchanged.
    """
    if region is None:
        return array
    spatial = array.shape[1:]
    if len(region) != len(spatial):
        raise DataError(f"key '{key}': region {region} needs one [start, stop] per spatial axis of {spatial}")
    window = [slice(None)]
    for (start, stop), size in zip(region, spatial):
        lo, hi = int(round(float(start) * size)), int(round(float(stop) * size))
        if not 0 <= lo < hi <= size:
            raise DataError(f"key '{key}': region {region} is empty or outside the field of shape {spatial}")
        window.append(slice(lo, hi))
    return np.ascontiguousarray(array[tuple(window)])


def _channel_message(key: str, expected: int, got: int, files: list[str], planes: list[int]) -> str:
    """The wrong-channel-count message, naming each multi-plane file and whether it is an RGB image or a stack."""
    per_file = expected // len(files) if expected % len(files) == 0 else None
    odd = [(f, n) for f, n in zip(files, planes) if per_file is None or n != per_file]
    if per_file is None or not odd:
        return (
            f"key '{key}': expected {expected} channel(s) for the network, got {got} from {files}; list one file "
            "per channel, or set --in_channels to match"
        )
    described = "; ".join(
        f"'{f}' holds {n} plane(s) ({describe_planes(f)})" if n > 1 else f"'{f}' holds {n} plane" for f, n in odd
    )
    return (
        f"{described} where {per_file} channel(s) per file was expected: key '{key}': expected {expected} "
        f"channel(s) for the network, got {got} from {len(files)} file(s). Save each channel as a grey-scale file "
        "(an RGB export of a grey image: keep one colour channel; a z-stack: max-project it), or set "
        "--in_channels to match"
    )


def _check_contrast(key: str, stacked: np.ndarray, files: list[str]) -> None:
    """Raise a :class:`DataError` naming the file(s) when a channel of ``stacked`` is constant (e.g. all zeros)."""
    for c, channel in enumerate(stacked):
        low, high = channel.min(), channel.max()
        if low == high:
            sources = [files[c]] if len(files) == stacked.shape[0] else files
            source = ", ".join(f"'{f}'" for f in sources) + (" (projected)" if len(sources) > 1 else "")
            value = low.item() if hasattr(low, "item") else low
            raise DataError(
                f"target {source} is constant (all pixels = {value}): a stain image is expected (key '{key}'); "
                "check the file (an empty export? a mask instead of a fluorescence image?) or remove the item"
            )


class PercentileStatsd(MapTransform):
    """Store per-channel ``(low, high)`` percentiles of each key's whole field as ``<key>_percentiles``.

    Deterministic and tiny, so it is cached with the decoded field; ``ApplyPercentilesd`` uses it after cropping.
    """

    def __init__(
        self,
        keys: KeysCollection,
        lower: float = 1.0,
        upper: float = 99.8,
        channel_wise: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if not 0.0 <= lower < upper <= 100.0:
            raise ValueError(f"percentiles must satisfy 0 <= lower < upper <= 100, got lower={lower}, upper={upper}")
        self.lower, self.upper, self.channel_wise = float(lower), float(upper), channel_wise

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            array = np.asarray(d[key])
            flat = array.reshape(array.shape[0], -1) if self.channel_wise else array.reshape(1, -1)
            stats = channel_percentiles(flat, [self.lower, self.upper])
            if not self.channel_wise:
                stats = np.repeat(stats, array.shape[0], axis=0)
            d[f"{key}{STATS_SUFFIX}"] = stats
        return d


class ApplyPercentilesd(MapTransform):
    """Scale each channel to ``(x - low) / (high - low)`` with the stored percentiles, as float32.

    The low percentile maps to 0 and the high one to 1 (values beyond are kept unless ``clip``). A flat channel
    (high == low) becomes ``x - low``, i.e. zeros, instead of dividing by zero.
    """

    def __init__(self, keys: KeysCollection, clip: bool = False, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.clip = clip

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            stats_key = f"{key}{STATS_SUFFIX}"
            if stats_key not in d:
                raise KeyError(f"key '{key}': no '{stats_key}' in the item; put PercentileStatsd before this")
            out = scale_by_percentiles(d[key], d[stats_key]).astype(np.float32)
            d[key] = np.clip(out, 0.0, 1.0) if self.clip else out
        return d


def _pad_reflect(crop: np.ndarray | torch.Tensor, size: tuple[int, ...]) -> np.ndarray | torch.Tensor:
    """Pad the spatial axes of a (C, H, W) crop by reflection, centred, to ``size`` (any amount: numpy repeats)."""
    widths = [(0, 0)] + [((r - s) // 2, r - s - (r - s) // 2) for s, r in zip(crop.shape[1:], size)]
    if isinstance(crop, np.ndarray):
        return np.pad(crop, widths, mode="reflect")
    return torch.as_tensor(np.pad(crop.cpu().numpy(), widths, mode="reflect"), dtype=crop.dtype)


class RandCropSamplesd(Randomizable, MapTransform):
    """Cut ``num_samples`` random ``roi_size`` crops per field (the paper: 5 crops of 512x512 per image).

    With ``min_signal_fraction`` set, a crop is redrawn (up to ``max_tries`` times) unless at least that fraction
    of its ``signal_key`` pixels is "signal", as the reference code skips crops with an empty target. Signal is
    ``value > signal_threshold`` after percentile scaling when ``<signal_key>_percentiles`` is present (fluorescence)
    and ``value > 0`` otherwise (masks and instance labels). A field smaller than ``roi_size`` along an axis is
    taken whole along that axis and padded by reflection to ``roi_size`` (with a warning): every crop has the shape
    ``roi_size``, so the 90-degree rotations and a batch of fields of different sizes still stack (a 496x1024 field
    under the paper's 512x512 crops gave 496x512 and 512x496 crops, which did not). Image and labels are padded alike
    (an instance cut by the field's border and its mirror image share an id: one object across the border).
    Returns a list of items, one per crop, as MONAI's ``RandSpatialCropSamplesd`` does.
    """

    def __init__(
        self,
        keys: KeysCollection,
        roi_size: Sequence[int] | int,
        num_samples: int = 5,
        signal_key: str | None = None,
        min_signal_fraction: float | None = None,
        signal_threshold: float = 0.5,
        max_tries: int = 20,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.roi_size = tuple(int(r) for r in ensure_tuple_rep(roi_size, 2))
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        self.num_samples = int(num_samples)
        self.signal_key = signal_key
        self.min_signal_fraction = min_signal_fraction
        self.signal_threshold = signal_threshold
        self.max_tries = max(1, int(max_tries))
        self._warned = False

    def randomize(self, data: Any = None) -> None:  # crops are drawn in __call__
        pass

    def _has_signal(self, d: Mapping[Hashable, Any], window: tuple[slice, ...]) -> bool:
        if self.min_signal_fraction is None or self.signal_key is None:
            return True
        crop = np.asarray(d[self.signal_key])[(slice(None), *window)]
        stats = d.get(f"{self.signal_key}{STATS_SUFFIX}")
        if stats is not None:
            signal = scale_by_percentiles(crop, stats) > self.signal_threshold
        else:
            signal = crop > 0
        return float(signal.mean()) >= self.min_signal_fraction

    def __call__(self, data: Mapping[Hashable, Any]) -> list[dict[Hashable, Any]]:
        d = dict(data)
        first = next(iter(self.key_iterator(d)))
        shape = _spatial(d[first])
        roi = tuple(min(s, r) for s, r in zip(shape, self.roi_size))
        if roi != self.roi_size and not self._warned:
            warnings.warn(
                f"field '{d.get('name', '?')}' {shape} is smaller than roi_size {self.roi_size}: cropping {roi}, "
                f"padded by reflection to {self.roi_size}",
                stacklevel=2,
            )
            self._warned = True
        samples = []
        for _ in range(self.num_samples):
            for _ in range(self.max_tries):
                start = [int(self.R.randint(0, s - r + 1)) for s, r in zip(shape, roi)]
                window = tuple(slice(b, b + r) for b, r in zip(start, roi))
                if self._has_signal(d, window):
                    break
            sample = dict(d)
            for key in self.key_iterator(d):
                crop = d[key][(slice(None), *window)]
                # a copy of the crop only: the sample must not keep a memory-mapped or cached field alive
                crop = np.array(crop) if isinstance(crop, np.ndarray) else crop.clone()
                sample[key] = _pad_reflect(crop, self.roi_size) if roi != self.roi_size else crop
            sample["crop_start"] = np.asarray(start)
            samples.append(sample)
        return samples


class WriteFieldd(MapTransform):
    """Write each key's prediction for a whole field to ``output_dir/<name stem><suffix>`` (TIFF or PNG).

    ``name`` is the item's id set by :func:`monai_isl.data.load_datalist` (its first input file). The array is
    squeezed to ``(H, W)`` when it has one channel and cast to ``dtype`` (``"label"``: uint16, or uint32 past
    65535 instances); the write is atomic.
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str,
        suffix: str = "_pred.tif",
        dtype: str | None = "float32",
        name_key: str = "name",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_dir, self.suffix, self.dtype, self.name_key = Path(output_dir), suffix, dtype, name_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            value = d[key]
            array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
            if self.dtype == "label":  # instance labels: the smallest of uint16 / uint32 that holds every id
                array = array.astype(np.uint16 if array.max(initial=0) <= np.iinfo(np.uint16).max else np.uint32)
            elif self.dtype is not None:
                array = array.astype(self.dtype)
            path = output_path(self.output_dir, str(d[self.name_key]), self.suffix)
            d[f"{key}_file"] = str(write_image(path, array))
        return d


# saturated colours that stand out on a grey microscopy image
_OVERLAY_COLOURS = np.array(
    [[255, 64, 64], [64, 255, 64], [64, 160, 255], [255, 220, 0], [255, 64, 255], [0, 255, 255], [255, 140, 0]],
    dtype=np.uint8,
)


class WriteOverlayd(MapTransform):
    """Write a PNG of the first input channel with the contours of each key's instances drawn in colour.

    For a quick visual check of an instance segmentation next to the label TIFF; off unless ``enabled``.
    """

    def __init__(
        self,
        keys: KeysCollection,
        image_key: str,
        output_dir: str,
        suffix: str = "_overlay.png",
        enabled: bool = True,
        name_key: str = "name",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.image_key, self.enabled = image_key, enabled
        self.output_dir, self.suffix, self.name_key = Path(output_dir), suffix, name_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if not self.enabled:
            return d
        from skimage.segmentation import find_boundaries

        image = d[self.image_key]
        image = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
        gray = image[0].astype(np.float64)
        lo, hi = np.percentile(gray, [1.0, 99.8])
        gray = (np.clip((gray - lo) / max(hi - lo, 1e-12), 0, 1) * 255).astype(np.uint8)
        for key in self.key_iterator(d):
            labels = d[key]
            labels = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
            labels = labels.reshape(labels.shape[-2:])
            rgb = np.repeat(gray[None], 3, axis=0)
            edges = find_boundaries(labels, mode="inner")
            colour = _OVERLAY_COLOURS[labels[edges].astype(np.int64) % len(_OVERLAY_COLOURS)]  # cycles over cells
            for c in range(3):
                rgb[c][edges] = colour[:, c]
            path = output_path(self.output_dir, str(d[self.name_key]), self.suffix)
            d[f"{key}_overlay"] = str(write_image(path, rgb))
        return d
