"""The memory-mapped disk cache, the cache choice of ``make_dataset``, histogram percentiles and channels_last."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from monai.data import CacheDataset, Dataset
from monai.transforms import Compose, EnsureTyped, RandFlipd

from monai_isl.cache import DiskCacheDataset
from monai_isl.data import make_dataset
from monai_isl.runtime import prepare_network
from monai_isl.transforms import ApplyPercentilesd, LoadFieldd, PercentileStatsd, RandCropSamplesd
from monai_isl.transforms.field import channel_percentiles


@pytest.fixture()
def fields(tmp_path: Path) -> list[dict]:
    """Four 2-channel uint16 fields of 150 x 170 with instance labels (different sizes of content per field)."""
    rng = np.random.default_rng(0)
    items = []
    for i in range(4):
        folder = tmp_path / f"f{i}"
        folder.mkdir()
        for c in range(2):
            tifffile.imwrite(folder / f"c{c}.tif", rng.integers(100, 4000 + 1000 * i, (150, 170), dtype=np.uint16))
        labels = np.zeros((150, 170), np.uint16)
        labels[20:60, 30:90] = 1
        labels[80:140, 100:160] = 2
        tifffile.imwrite(folder / "label.tif", labels)
        items.append({"image": [str(folder / "c0.tif"), str(folder / "c1.tif")], "label": str(folder / "label.tif")})
    return items


def _transform(upper: float = 99.8) -> Compose:
    return Compose(
        [
            LoadFieldd(keys=["image", "label"]),
            PercentileStatsd(keys="image", lower=1.0, upper=upper),
            RandCropSamplesd(keys=["image", "label"], roi_size=64, num_samples=3),
            ApplyPercentilesd(keys="image"),
            RandFlipd(keys=["image", "label"], prob=0.5, spatial_axis=0),
            EnsureTyped(keys=["image", "label"], dtype=torch.float32, track_meta=False),
        ]
    )


def _draw(dataset: Dataset, transform: Compose, seed: int = 3) -> list[list[dict]]:
    transform.set_random_state(seed)
    return [dataset[i] for i in range(len(dataset))]


def _assert_same(a: list[list[dict]], b: list[list[dict]]) -> None:
    assert len(a) == len(b)
    for crops_a, crops_b in zip(a, b):
        assert len(crops_a) == len(crops_b) == 3
        for x, y in zip(crops_a, crops_b):
            assert set(x) == set(y)
            for key in ("image", "label", "crop_start", "image_percentiles"):
                np.testing.assert_array_equal(np.asarray(x[key]), np.asarray(y[key]), err_msg=key)


def test_disk_cache_gives_the_same_crops_as_ram_and_no_cache(fields: list[dict], tmp_path: Path) -> None:
    transform = _transform()
    ram = _draw(CacheDataset(fields, transform, progress=False), transform)
    lazy = _draw(Dataset(fields, transform), transform)
    disk_ds = DiskCacheDataset(fields, transform, tmp_path / "cache", min_mmap_bytes=0)
    disk = _draw(disk_ds, transform)
    _assert_same(ram, lazy)
    _assert_same(ram, disk)
    # the crops were scaled with the whole field's percentiles, read back from the cache
    raw = tifffile.imread(fields[2]["image"][1])
    np.testing.assert_array_equal(disk[2][0]["image_percentiles"][1], np.percentile(raw, [1.0, 99.8]))

    # one entry per field: the arrays as .npy files that come back memory-mapped, the small values in meta.pkl
    entries = sorted(p for p in (tmp_path / "cache").iterdir() if not p.name.startswith("."))
    assert len(entries) == 4
    cached = disk_ds.read(1)
    assert isinstance(cached["image"], np.memmap) and isinstance(cached["label"], np.memmap)
    assert cached["image"].dtype == np.uint16 and cached["image"].shape == (2, 150, 170)
    np.testing.assert_array_equal(cached["image"][0], tifffile.imread(fields[1]["image"][0]))
    assert cached["image_percentiles"].shape == (2, 2)


def test_disk_cache_is_reused_and_invalidated(fields: list[dict], tmp_path: Path) -> None:
    folder = tmp_path / "cache"
    DiskCacheDataset(fields, _transform(), folder)
    meta = {p: p.stat().st_mtime_ns for p in folder.glob("*/meta.pkl")}
    assert len(meta) == 4
    again = DiskCacheDataset(fields, _transform(), folder)  # nothing rewritten
    assert {p: p.stat().st_mtime_ns for p in folder.glob("*/meta.pkl")} == meta
    assert all((e / "meta.pkl") in meta for e in again.entries)
    # another percentile setting is another entry for every field
    other = DiskCacheDataset(fields, _transform(upper=99.0), folder)
    assert not set(other.entries) & set(again.entries)
    assert len(list(folder.glob("*/meta.pkl"))) == 8
    # an edited file is a new entry for that field only
    path = Path(fields[0]["label"])
    os.utime(path, ns=(time.time_ns(), path.stat().st_mtime_ns + 10**9))
    edited = DiskCacheDataset(fields, _transform(), folder)
    assert edited.entries[0] != again.entries[0] and edited.entries[1:] == again.entries[1:]
    assert not list(folder.glob(".*")), "no temporary folder is left behind"


def test_broken_cache_entry_names_the_folder(fields: list[dict], tmp_path: Path) -> None:
    dataset = DiskCacheDataset(fields, _transform(), tmp_path / "cache")
    (dataset.entries[2] / "meta.pkl").write_bytes(b"not a pickle")
    with pytest.raises(RuntimeError, match=dataset.entries[2].name):
        dataset[2]


def test_a_bad_file_fails_while_caching(fields: list[dict], tmp_path: Path) -> None:
    Path(fields[3]["label"]).write_bytes(b"garbage")
    with pytest.raises(RuntimeError) as info:  # MONAI wraps the reader's error, as CacheDataset's is
        DiskCacheDataset(fields, _transform(), tmp_path / "cache")
    chain, err = [], info.value
    while err is not None:
        chain.append(str(err))
        err = err.__cause__
    assert any("could not read image" in m and fields[3]["label"] in m for m in chain), chain


def test_crops_are_copies_of_the_crop_only(fields: list[dict], tmp_path: Path) -> None:
    dataset = DiskCacheDataset(fields, Compose(_transform().transforms[:3]), tmp_path / "cache", min_mmap_bytes=0)
    crops = dataset[0]
    for crop in crops:
        for key in ("image", "label"):
            assert type(crop[key]) is np.ndarray and crop[key].base is None  # owns its 64 x 64 pixels
            assert crop[key].shape[1:] == (64, 64)


def test_make_dataset_chooses_the_cache(fields: list[dict], tmp_path: Path) -> None:
    transform = _transform()
    assert type(make_dataset(fields, transform, cache="auto", cache_dir=tmp_path / "c")) is CacheDataset
    disk = make_dataset(fields, transform, cache="auto", cache_dir=tmp_path / "c", ram_limit_gb=1e-6)
    assert isinstance(disk, DiskCacheDataset) and len(list((tmp_path / "c").glob("*/meta.pkl"))) == 4
    assert isinstance(make_dataset(fields, transform, cache="disk", cache_dir=tmp_path / "c"), DiskCacheDataset)
    assert type(make_dataset(fields, transform, cache="none")) is Dataset
    assert type(make_dataset(fields, transform, cache="ram", cache_rate=0)) is Dataset
    with pytest.raises(ValueError, match="cache must be one of"):
        make_dataset(fields, transform, cache="mmap")


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16])
def test_histogram_percentiles_equal_numpy(dtype: type) -> None:
    rng = np.random.default_rng(1)
    info = np.iinfo(dtype)
    for n in (1, 2, 5, 1001):
        flat = rng.integers(info.min, info.max, (3, n), endpoint=True).astype(dtype)
        flat[2] = flat[2, 0]  # a flat channel
        for q in ([1.0, 99.8], [0.0, 100.0], [50.0], [0.1, 33.3, 99.99]):
            expected = np.percentile(flat.astype(np.float64), q, axis=1).T  # numpy's int16 path can overflow
            np.testing.assert_array_equal(channel_percentiles(flat, q), expected)
            if info.min == 0:
                np.testing.assert_array_equal(channel_percentiles(flat, q), np.percentile(flat, q, axis=1).T)
    floats = rng.normal(size=(2, 100)).astype(np.float32)
    np.testing.assert_array_equal(channel_percentiles(floats, [5, 95]), np.percentile(floats, [5, 95], axis=1).T)


def test_prepare_network_channels_last_same_output() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU()).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        expected = net(x)
        assert prepare_network(net, "cpu", "false") is net and net[0].weight.is_contiguous()
        prepare_network(net, torch.device("cpu"), "true")
        assert net[0].weight.is_contiguous(memory_format=torch.channels_last)
        out = net(x)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
