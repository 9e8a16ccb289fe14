"""Datasets as a folder plus a MONAI datalist JSON, validated up front so a bad entry fails before training.

A datalist holds ``training`` / ``validation`` / ``test`` lists. Each item lists its input channels under
``image`` (one file per channel, or one multi-channel file) and its target under ``label`` (one file, or
several files such as a z-stack that the loader max-projects). Paths are relative to the dataset folder::

    {"training": [{"image": ["bf_z0.tif", "bf_z1.tif", "phase.tif"], "label": ["dapi_z0.tif", "dapi_z1.tif"]}]}
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from monai.data import CacheDataset, Dataset

SECTIONS = ("training", "validation", "test")

logger = logging.getLogger(__name__)


def find_datalist(dataset_dir: str | os.PathLike, task: str) -> str:
    """Return ``<dataset_dir>/<task>.json`` if it exists (as written by ``monai_isl synth``), else ``datalist.json``.

    Raises:
        FileNotFoundError: neither file exists; the message names both.
    """
    root = Path(dataset_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset_dir '{root}' is not a folder")
    for candidate in (root / f"{task}.json", root / "datalist.json"):
        if candidate.is_file():
            return str(candidate)
    raise FileNotFoundError(f"no datalist in '{root}': expected '{task}.json' or 'datalist.json'")


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def load_datalist(
    datalist: str | os.PathLike,
    section: str,
    keys: Sequence[str] = ("image", "label"),
    base_dir: str | os.PathLike | None = None,
    check_files: bool = True,
    optional: bool = False,
) -> list[dict[str, Any]]:
    """Read one section of a datalist, resolve paths against ``base_dir`` and check every file exists.

    Args:
        datalist: the JSON file.
        section: ``training``, ``validation``, ``test``, or any other list in the file.
        keys: item keys that hold file paths and must be present.
        base_dir: folder the paths are relative to (default: the datalist's folder).
        check_files: raise on the first missing file instead of failing later inside a worker.
        optional: a missing or empty section gives ``[]`` instead of an error (``validation`` is optional).

    Returns:
        Items with absolute paths, plus ``name`` (a readable id: the first input file relative to base_dir).

    Raises:
        FileNotFoundError: the datalist or a listed file is missing (the message names the item and key).
        ValueError: invalid JSON, a missing or empty section, or an item without a required key.
    """
    datalist = Path(datalist)
    if not datalist.is_file():
        raise FileNotFoundError(f"datalist not found: '{datalist}'")
    try:
        content = json.loads(datalist.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"datalist '{datalist}' is not valid JSON: {err}") from err
    if optional and not content.get(section):
        return []
    if section not in content:
        raise ValueError(f"datalist '{datalist}' has no '{section}' section (found: {sorted(content)})")
    items = content[section]
    if not isinstance(items, list) or len(items) == 0:
        raise ValueError(f"datalist '{datalist}': section '{section}' is empty, expected a list of items")
    root = Path(base_dir) if base_dir is not None else datalist.parent
    resolved = []
    for index, item in enumerate(items):
        where = f"datalist '{datalist}', {section}[{index}]"
        if isinstance(item, str):
            item = {keys[0]: item}
        if not isinstance(item, dict):
            raise ValueError(f"{where}: expected an object with keys {list(keys)}, got {type(item).__name__}")
        missing = [k for k in keys if k not in item]
        if missing:
            raise ValueError(f"{where}: missing key(s) {missing}, expected {list(keys)}")
        out = dict(item)
        for key in keys:
            files = [str(root / f) for f in _as_list(item[key])]
            if not files:
                raise ValueError(f"{where}: key '{key}' lists no file")
            if check_files:
                for f in files:
                    if not Path(f).is_file():
                        raise FileNotFoundError(f"{where}: file for key '{key}' not found: '{f}'")
            out[key] = files if isinstance(item[key], (list, tuple)) else files[0]
        out.setdefault("name", str(_as_list(item[keys[0]])[0]))
        resolved.append(out)
    return resolved


CACHE_MODES = ("auto", "ram", "disk", "none")


def make_dataset(
    data: list[dict[str, Any]],
    transform: Any,
    cache_rate: float = 1.0,
    num_workers: int = 0,
    cache: str = "auto",
    cache_dir: str | os.PathLike | None = None,
    ram_limit_gb: float = 2.0,
) -> Dataset:
    """A dataset that caches the deterministic head of ``transform`` (decoded images in their native dtype).

    With the loading and percentile statistics cached, each epoch only crops and normalises, and a
    uint16 field costs 2 bytes per pixel and channel instead of the 8 of the reference's float64 crops.

    Args:
        data: the items.
        transform: a ``Compose``; what comes before its first random transform is cached.
        cache_rate: fraction of the items kept in RAM (``cache="ram"``); ``<= 0`` loads lazily (no cache at all).
        num_workers: threads that fill the cache (0: MONAI's / one per CPU).
        cache: ``ram`` (MONAI ``CacheDataset``: fastest, costs the decoded size in RAM), ``disk``
            (:class:`monai_isl.cache.DiskCacheDataset`: ``.npy`` files in ``cache_dir``, memory-mapped, crops read
            on the fly: RAM stays flat whatever the number of fields), ``none`` (decode every time), or ``auto``:
            ``ram`` when the decoded dataset (first item's size x number of items) fits in ``ram_limit_gb``,
            else ``disk``.
        cache_dir: folder for ``disk`` (default: ``monai_isl_cache`` in the system's temporary folder).
        ram_limit_gb: the ``auto`` threshold.

    Raises:
        ValueError: an unknown ``cache`` mode.
    """
    mode = str(cache).lower()
    if mode not in CACHE_MODES:
        raise ValueError(f"cache must be one of {CACHE_MODES}, got {cache!r}")
    if mode == "none" or cache_rate <= 0:
        return Dataset(data=data, transform=transform)
    precomputed = {}
    if mode == "auto":
        from .cache import cached_nbytes, first_random_index

        head = transform(data[0], end=first_random_index(transform), threading=True) if data else {}
        estimate = cached_nbytes(head) * len(data) * min(1.0, float(cache_rate))
        mode = "ram" if estimate <= float(ram_limit_gb) * 2**30 else "disk"
        precomputed = {0: head}
        logger.info("cache=auto: decoded dataset ~%.2f GB -> %s cache", estimate / 2**30, mode)
    if mode == "disk":
        from .cache import DiskCacheDataset

        folder = Path(cache_dir) if cache_dir else Path(tempfile.gettempdir()) / "monai_isl_cache"
        return DiskCacheDataset(data, transform, folder, num_workers=num_workers, precomputed=precomputed)
    # copy_cache=False: the transforms after the cache never write into the cached arrays (RandCropSamplesd copies
    # its crops), so MONAI's deep copy of the whole field on every access would be wasted time and memory
    return CacheDataset(
        data=data,
        transform=transform,
        cache_rate=cache_rate,
        num_workers=num_workers or None,
        progress=False,
        copy_cache=False,
    )


# ---- inference over long folders: list the images, skip the unreadable ones -------------------------------------

SKIPPED_KEY = "skipped"


def list_images(folder: str | os.PathLike, pattern: str = "*.tif", key: str = "image") -> list[dict[str, Any]]:
    """One item per file in ``folder`` matching the glob ``pattern`` (``**/*.tif`` searches sub-folders), sorted.

    Each file is one field holding all input channels (``(C, H, W)`` or ``(H, W, C)`` for several). ``name`` is the
    path relative to ``folder``, so predictions are named after the input file. Hidden files are ignored.

    Raises:
        FileNotFoundError: ``folder`` is not a folder, or nothing in it matches ``pattern``.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"input_dir '{root}' is not a folder")
    files = sorted(p for p in root.glob(pattern) if p.is_file() and not p.name.startswith("."))
    if not files:
        raise FileNotFoundError(f"no file in input_dir '{root}' matches the pattern '{pattern}' (--input_pattern)")
    return [{key: str(p), "name": p.relative_to(root).as_posix()} for p in files]


def failure_reason(err: BaseException) -> str:
    """``"Type: message"`` of the first exception of a chain that is not MONAI's ``applying transform ...`` wrapper
    (so a file read by :func:`monai_isl.io.read_image` is named together with what went wrong)."""
    current: BaseException | None = err
    while current is not None:
        if not str(current).startswith("applying transform"):
            return f"{type(current).__name__}: {current}"
        current = current.__cause__ or current.__context__
    return f"{type(err).__name__}: {err}"


class SkipUnreadable(Dataset):
    """A MONAI ``Dataset`` whose items that fail to load or transform become a marker instead of an exception.

    A corrupt, truncated, missing or wrongly shaped field in the middle of a long inference run then costs that field
    only: the item comes back as ``{"skipped": {"name", "files", "reason"}}``, :func:`collate_skipping` sets it
    aside and ``monai_isl.handlers.SkippedFieldsReport`` logs it, leaves it out of the run and lists it at the end.
    """

    def __init__(self, data: Sequence, transform: Any = None, file_keys: Sequence[str] = ("image",)) -> None:
        super().__init__(data=data, transform=transform)
        self.file_keys = tuple(file_keys)

    def _transform(self, index: int) -> Any:
        try:
            return super()._transform(index)
        except Exception as err:  # any failure of this one item; KeyboardInterrupt etc. still stop the run
            item = self.data[index]
            item = item if isinstance(item, dict) else {}
            files = [str(f) for k in self.file_keys if k in item for f in _as_list(item[k])]
            name = str(item.get("name", files[0] if files else index))
            return {SKIPPED_KEY: {"name": name, "files": files, "reason": failure_reason(err)}}


def collate_skipping(batch: Sequence[Any]) -> Any:
    """``DataLoader`` collate: the readable items collated as MONAI does, the skipped ones (if any) under ``"skipped"``.

    A batch of skipped items only is ``{"skipped": [...]}``; ``SkippedFieldsReport`` takes the list out of every
    batch and drops batches left empty.
    """
    from monai.data import list_data_collate

    good = [item for item in batch if not (isinstance(item, dict) and SKIPPED_KEY in item)]
    skipped = [item[SKIPPED_KEY] for item in batch if isinstance(item, dict) and SKIPPED_KEY in item]
    collated = list_data_collate(good) if good else {}
    if not isinstance(collated, dict):
        raise TypeError(f"collate_skipping expects dictionary items, got {type(good[0]).__name__}")
    if skipped:
        collated[SKIPPED_KEY] = skipped
    return collated


def curve_items(
    section: str | None, datalist: str | os.PathLike | None, dataset_dir: str | os.PathLike, task: str
) -> list[dict[str, Any]]:
    """The items of the learning curve's ``section`` (none without one), from ``datalist`` or else the one
    :func:`find_datalist` finds in ``dataset_dir``.

    A function rather than a config expression on ``@datalist``: MONAI resolves every reference of an expression
    before evaluating it, and a training whose data come from elsewhere (MONAI Label) has no datalist to find.
    """
    if not section:
        return []
    return load_datalist(datalist or find_datalist(dataset_dir, task), section)


#: the share of each training image held out as the fine-tune guard's validation strip when a datalist has no
#: ``validation`` section (the bottom rows; ``holdout_fraction`` in the segmentation configs)
DEFAULT_HOLDOUT_FRACTION = 0.2


def holdout_split(
    items: Sequence[Mapping[str, Any]], fraction: float = DEFAULT_HOLDOUT_FRACTION
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Each training item cut in two along its rows: the top ``1 - fraction`` to train on, the bottom ``fraction``
    to validate on (``region`` keys, read by ``monai_isl.transforms.LoadFieldd``).

    Why: the fine-tune guard must score the start (step 0) and every later model on annotated pixels the network is
    not trained on, and a user with one annotated image has no other. A strip of every image (rather than whole
    images) works from N = 1 on and keeps every image's cells in training.

    Raises:
        ValueError: ``fraction`` outside (0, 0.5], or an item that already has a region.
    """
    fraction = float(fraction)
    if not 0.0 < fraction <= 0.5:
        raise ValueError(f"holdout_fraction {fraction}: expected a share of each training image in (0, 0.5]")
    train, held = [], []
    for item in items:
        if item.get("region") is not None:
            raise ValueError(f"training item '{item.get('name')}' already has a region; give a validation section")
        cut = round(1.0 - fraction, 6)
        train.append({**item, "region": [[0.0, cut], [0.0, 1.0]]})
        held.append({**item, "region": [[cut, 1.0], [0.0, 1.0]], "name": f"{item.get('name')} (held-out rows)"})
    return train, held


def segmentation_sections(
    datalist: str | os.PathLike, holdout_fraction: float | None = DEFAULT_HOLDOUT_FRACTION
) -> dict[str, list[dict[str, Any]]]:
    """``training`` and ``validation`` items of a segmentation datalist, with the fine-tune guard's hold-out.

    With a ``validation`` section both are returned as they are. Without one, the bottom ``holdout_fraction`` of
    every training image becomes the validation set (:func:`holdout_split`), so that the start is scored at step 0
    and ``model.pt`` is the better of the start and the fine-tuned network. ``holdout_fraction`` 0 or ``None``:
    no hold-out (the final model is kept, with a warning).
    """
    training = load_datalist(datalist, "training")
    validation = load_datalist(datalist, "validation", optional=True)
    if validation or not holdout_fraction:
        return {"training": training, "validation": validation}
    training, validation = holdout_split(training, float(holdout_fraction))
    logger.warning(
        "datalist '%s' has no validation section: the bottom %.0f %% of each of the %d training image(s) is held out "
        "to score the start (step 0) and select model.pt (holdout_fraction)",
        datalist,
        100 * float(holdout_fraction),
        len(training),
    )
    return {"training": training, "validation": validation}
