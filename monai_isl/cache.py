"""A disk cache of decoded fields, memory-mapped on read, so hundreds of large fields train in little RAM.

MONAI's ``CacheDataset`` keeps the output of a transform chain's deterministic head (here: the decoded field in
its native dtype plus its percentiles) in RAM: ~37 MB per 2160 x 2160 field with 3 uint16 channels and a label,
~18 GB for 500 fields. :class:`DiskCacheDataset` computes the same head once per item, stores each large array as
an uncompressed ``.npy`` file and opens it with ``np.load(mmap_mode="r")`` on every access; the random tail
(``RandCropSamplesd`` first) then reads only the pages of its crops, which it copies. Memory stays at a few crops
per worker whatever the number of fields, and the cache persists across runs: a second training run on the same
data starts at once.

Cache layout: ``<cache_dir>/<sha256>/`` per item, with ``meta.pkl`` (the small values: names, percentiles) and
one ``.npy`` per array. The key hashes the item, each listed file's size and modification time, and the
parameters of the cached transforms, so editing a file or a percentile setting makes a new entry (old entries are
left; delete the folder to reclaim the space). Settings that are not plain values (a function, an object) enter
the key by their type only: after changing such a transform, delete the cache folder. Entries are written to a
temporary folder and renamed, so an interrupted run never leaves a half-written entry behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import shutil
import tempfile
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from multiprocessing.pool import ThreadPool
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import Dataset
from monai.transforms import Compose, RandomizableTrait, Transform

__all__ = ["DiskCacheDataset", "cached_nbytes", "first_random_index", "transform_signature"]

logger = logging.getLogger(__name__)

CACHE_VERSION = 1
META_FILE = "meta.pkl"
# arrays at least this large are stored as .npy and memory-mapped; smaller values go into meta.pkl
MIN_MMAP_BYTES = 1 << 16


def first_random_index(transform: Compose) -> int | None:
    """Index of the first random (or non-MONAI) transform of ``transform``: the cache holds what comes before."""
    return transform.get_index_of_first(lambda t: isinstance(t, RandomizableTrait) or not isinstance(t, Transform))


def _plain(value: Any) -> Any:
    """A JSON-able stand-in for a transform attribute (sets sorted, arrays listed, other objects by class name)."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (set, frozenset)):
        return sorted(_plain(v) for v in value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, np.ndarray) and value.size <= 64:
        return value.tolist()
    if isinstance(value, (np.generic, torch.dtype, np.dtype)):
        return str(value)
    return type(value).__qualname__


def transform_signature(transforms: Sequence[Callable]) -> list[Any]:
    """Class and public settings of each transform: part of the cache key, so changed settings miss the cache."""
    return [
        [f"{type(t).__module__}.{type(t).__qualname__}"]
        + [[k, _plain(v)] for k, v in sorted(vars(t).items()) if not k.startswith("_") and k != "R"]
        for t in transforms
    ]


def _files_of(value: Any) -> list[str]:
    values = value if isinstance(value, (list, tuple)) else [value]
    return [str(v) for v in values if isinstance(v, (str, os.PathLike)) and os.path.isfile(v)]


def _item_key(item: Any, signature: list[Any]) -> str:
    """sha256 of the item, its files' sizes and modification times, and the cached transforms' signature."""
    files = []
    if isinstance(item, Mapping):
        for value in item.values():
            for f in _files_of(value):
                stat = os.stat(f)
                files.append([os.path.abspath(f), stat.st_size, stat.st_mtime_ns])
    text = json.dumps([CACHE_VERSION, _plain(item), files, signature], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def cached_nbytes(item: Mapping[Hashable, Any]) -> int:
    """Bytes of the arrays and tensors in one cached item: what it costs in RAM."""
    total = 0
    for value in item.values():
        if isinstance(value, np.ndarray):
            total += value.nbytes
        elif isinstance(value, torch.Tensor):
            total += value.element_size() * value.nelement()
    return total


class DiskCacheDataset(Dataset):
    """``Dataset`` that caches the deterministic head of ``transform`` on disk and memory-maps it on access.

    Missing entries are computed when the dataset is built (with ``num_workers`` threads; decoding and the
    percentiles release the GIL), so a bad file fails before training, as with ``CacheDataset``. Arrays come back
    as read-only ``np.memmap``: the transforms after the cache must not write into them (``RandCropSamplesd``
    copies its crops). Tensors in the head's output are stored and returned as numpy arrays.

    Args:
        data: the items (e.g. from :func:`monai_isl.data.load_datalist`).
        transform: a ``Compose`` whose transforms before the first random one are cached.
        cache_dir: folder of the cache (created); may be shared by datasets and bundles.
        num_workers: threads that build missing entries (0: one per CPU, at most 4).
        precomputed: ``{index: head output}`` already computed by the caller (it is written, not recomputed).
        min_mmap_bytes: arrays at least this large become memory-mapped ``.npy`` files; smaller values (names,
            percentiles) are kept in the entry's ``meta.pkl``.
    """

    def __init__(
        self,
        data: Sequence[Any],
        transform: Compose,
        cache_dir: str | os.PathLike,
        num_workers: int = 0,
        precomputed: Mapping[int, Mapping[Hashable, Any]] | None = None,
        min_mmap_bytes: int = MIN_MMAP_BYTES,
    ) -> None:
        if not isinstance(transform, Compose):
            raise TypeError(f"DiskCacheDataset needs a monai.transforms.Compose, got {type(transform).__name__}")
        super().__init__(data=data, transform=transform)
        self.first_random = first_random_index(transform)
        self.min_mmap_bytes = int(min_mmap_bytes)
        head = transform.transforms[: self.first_random] if self.first_random is not None else transform.transforms
        signature = transform_signature(head)
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.entries = [self.cache_dir / _item_key(item, signature) for item in self.data]
        precomputed = dict(precomputed or {})
        missing = [i for i, entry in enumerate(self.entries) if not (entry / META_FILE).is_file()]
        if missing:
            threads = int(num_workers) if num_workers and num_workers > 0 else min(4, os.cpu_count() or 1)
            start = time.perf_counter()
            logger.info("caching %d of %d items in %s (%d threads)", len(missing), len(self.data), cache_dir, threads)

            def build(index: int) -> None:
                out = precomputed.pop(index, None)
                if out is None:
                    out = self.transform(self.data[index], end=self.first_random, threading=True)
                self._write(self.entries[index], out)

            if threads > 1 and len(missing) > 1:
                with ThreadPool(threads) as pool:
                    for _ in pool.imap_unordered(build, missing):
                        pass
            else:
                for index in missing:
                    build(index)
            logger.info("cached %d items in %.1f s", len(missing), time.perf_counter() - start)

    def _write(self, entry: Path, item: Any) -> None:
        if not isinstance(item, Mapping):
            raise TypeError(f"DiskCacheDataset caches dictionary items, the transforms returned {type(item).__name__}")
        tmp = Path(tempfile.mkdtemp(dir=entry.parent, prefix=f".{entry.name}."))
        try:
            small: dict[Hashable, Any] = {}
            arrays: dict[Hashable, str] = {}
            for n, (key, value) in enumerate(item.items()):
                if isinstance(value, torch.Tensor):
                    value = value.detach().cpu().numpy()
                if isinstance(value, np.ndarray) and value.nbytes >= self.min_mmap_bytes and value.dtype != object:
                    arrays[key] = f"{n}.npy"
                    np.save(tmp / arrays[key], np.ascontiguousarray(value), allow_pickle=False)
                else:
                    small[key] = value
            with open(tmp / META_FILE, "wb") as f:
                pickle.dump({"order": list(item), "small": small, "arrays": arrays}, f)
            try:
                os.replace(tmp, entry)
            except OSError:  # another process wrote the same entry meanwhile: keep theirs
                if not (entry / META_FILE).is_file():
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def read(self, index: int) -> dict[Hashable, Any]:
        """The cached head output of item ``index``, its arrays memory-mapped (read-only)."""
        entry = self.entries[index]
        try:
            with open(entry / META_FILE, "rb") as f:
                meta = pickle.load(f)  # written by _write above; the cache folder is ours
            arrays = {k: np.load(entry / name, mmap_mode="r", allow_pickle=False) for k, name in meta["arrays"].items()}
        except (OSError, EOFError, pickle.UnpicklingError, ValueError) as err:
            raise RuntimeError(
                f"cache entry '{entry}' for item {index} is unreadable ({type(err).__name__}: {err}); delete it "
                "(or the whole cache folder) and run again"
            ) from err
        return {k: arrays[k] if k in arrays else meta["small"][k] for k in meta["order"]}

    def _transform(self, index: int) -> Any:
        data = self.read(index)
        if self.first_random is None:
            return data
        return self.transform(data, start=self.first_random)
