"""Datasets as a folder plus a MONAI datalist JSON, validated up front so a bad entry fails before training.

A datalist holds ``training`` / ``validation`` / ``test`` lists. Each item lists its input channels under
``image`` (one file per channel, or one multi-channel file) and its target under ``label`` (one file, or
several files such as a z-stack that the loader max-projects). Paths are relative to the dataset folder::

    {"training": [{"image": ["bf_z0.tif", "bf_z1.tif", "phase.tif"], "label": ["dapi_z0.tif", "dapi_z1.tif"]}]}
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai.data import CacheDataset, Dataset

SECTIONS = ("training", "validation", "test")


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
) -> list[dict[str, Any]]:
    """Read one section of a datalist, resolve paths against ``base_dir`` and check every file exists.

    Args:
        datalist: the JSON file.
        section: ``training``, ``validation``, ``test``, or any other list in the file.
        keys: item keys that hold file paths and must be present.
        base_dir: folder the paths are relative to (default: the datalist's folder).
        check_files: raise on the first missing file instead of failing later inside a worker.

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


def make_dataset(data: list[dict[str, Any]], transform: Any, cache_rate: float = 1.0, num_workers: int = 0) -> Dataset:
    """A dataset that caches the deterministic head of ``transform`` (decoded images in their native dtype).

    With the loading and percentile statistics cached, each epoch only crops and normalises, and a
    uint16 field costs 2 bytes per pixel and channel instead of the 8 of the reference's float64 crops.
    ``cache_rate=0`` loads lazily instead.
    """
    if cache_rate <= 0:
        return Dataset(data=data, transform=transform)
    return CacheDataset(
        data=data, transform=transform, cache_rate=cache_rate, num_workers=num_workers or None, progress=False
    )
