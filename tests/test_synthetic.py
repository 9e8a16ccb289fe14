"""Tests for the synthetic co-registered microscopy generator (:mod:`monai_isl.synthetic`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy import ndimage

from monai_isl.synthetic import FIELD_FILES, generate_field, split_counts, write_dataset

DATALISTS = ("dapi_isl", "cellmask_isl", "nucleus_seg", "cell_instance_seg")
SEEDS = (0, 1, 2)


@pytest.fixture(scope="module", params=SEEDS)
def field(request: pytest.FixtureRequest) -> dict[str, np.ndarray]:
    return generate_field(np.random.default_rng(request.param), size=256)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("syn") / "data", n_images=5, size=96, seed=3)


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_shapes_and_dtypes(field: dict[str, np.ndarray]) -> None:
    expected = {
        "brightfield": (2, 256, 256),
        "phase": (256, 256),
        "dic": (256, 256),
        "dapi": (3, 256, 256),
        "cellmask": (256, 256),
        "nuclei": (256, 256),
        "cells": (256, 256),
    }
    assert set(field) == set(expected)
    for key, shape in expected.items():
        assert field[key].shape == shape, key
        assert field[key].dtype == np.uint16, key


def test_intensity_range(field: dict[str, np.ndarray]) -> None:
    for key in ("brightfield", "phase", "dic", "dapi", "cellmask"):
        img = field[key]
        assert np.mean(img == 65535) < 0.001, f"{key} saturates"
        assert np.mean(img == 0) < 0.001, f"{key} clips at zero"
        assert 500 < np.percentile(img, 5) < np.percentile(img, 99) < 45000, key


def test_nuclei_inside_cells(field: dict[str, np.ndarray]) -> None:
    nuclei, cells = field["nuclei"], field["cells"]
    assert nuclei.max() > 0 and cells.max() > 0
    assert np.all(cells[nuclei > 0] > 0)
    assert np.array_equal(nuclei[nuclei > 0], cells[nuclei > 0]), "a nucleus carries its cell's id"
    # most cells have a nucleus of sensible size
    cell_ids = np.unique(cells[cells > 0])
    assert np.isin(cell_ids, np.unique(nuclei)).mean() > 0.9
    ratio = np.count_nonzero(nuclei) / np.count_nonzero(cells)
    assert 0.05 < ratio < 0.5


def test_cells_touch_and_vary(field: dict[str, np.ndarray]) -> None:
    cells = field["cells"].astype(np.int64)
    pairs = set()
    for a, b in ((cells[:, :-1], cells[:, 1:]), (cells[:-1, :], cells[1:, :])):
        touch = (a != b) & (a > 0) & (b > 0)
        pairs.update(zip(a[touch].tolist(), b[touch].tolist(), strict=True))
    assert len(pairs) > 0, "no touching cells"
    areas = np.bincount(cells.ravel())[1:]
    areas = areas[areas > 0]
    assert len(areas) >= 10
    assert areas.std() / areas.mean() > 0.15


def test_fluorescence_predictable_not_copied(field: dict[str, np.ndarray]) -> None:
    dapi = field["dapi"].max(axis=0).astype(np.float64)
    label_free = [field["brightfield"][0], field["brightfield"][1], field["phase"], field["dic"]]
    for img in label_free:
        r = np.corrcoef(dapi.ravel(), img.astype(np.float64).ravel())[0, 1]
        assert abs(r) < 0.9
    nuclei = field["nuclei"] > 0
    assert dapi[nuclei].mean() > 2.5 * dapi[~nuclei].mean()
    cellmask = field["cellmask"].astype(np.float64)
    assert cellmask[field["cells"] > 0].mean() > 1.3 * cellmask[field["cells"] == 0].mean()
    # the label-free images do see the cells: local (high-pass) contrast is much higher inside cells than in background
    inside = field["cells"] > 0
    background = ndimage.binary_erosion(~inside, iterations=8)
    for img in label_free:
        img = img.astype(np.float64)
        detail = np.abs(img - ndimage.gaussian_filter(img, 4.0))
        assert detail[inside].mean() > 1.5 * detail[background].mean()


def test_generate_field_deterministic() -> None:
    a = generate_field(np.random.default_rng(7), size=128)
    b = generate_field(np.random.default_rng(7), size=128)
    c = generate_field(np.random.default_rng(8), size=128)
    for key in a:
        assert np.array_equal(a[key], b[key]), key
    assert not np.array_equal(a["phase"], c["phase"])


def test_generate_field_validation() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="size"):
        generate_field(rng, size=32)
    with pytest.raises(ValueError, match="cell_radius"):
        generate_field(rng, size=128, cell_radius=(20.0, 10.0))
    with pytest.raises(ValueError, match="coverage"):
        generate_field(rng, size=128, coverage=1.5)


@pytest.mark.parametrize("n, expected", [(3, (1, 1, 1)), (5, (3, 1, 1)), (12, (9, 1, 2))])
def test_split_counts(n: int, expected: tuple[int, int, int]) -> None:
    assert split_counts(n) == expected


def test_dataset_layout(dataset: Path) -> None:
    for i in range(5):
        folder = dataset / "fields" / f"field_{i:03d}"
        for name in FIELD_FILES:
            img = tifffile.imread(folder / name)
            assert img.shape == (96, 96) and img.dtype == np.uint16, name
    readme = (dataset / "README.md").read_text()
    assert "seed=3" in readme and "96x96" in readme
    first = None
    split_names = ("training", "validation", "test")
    for key in DATALISTS:
        doc = json.loads((dataset / f"{key}.json").read_text())
        assert isinstance(doc["description"], str) and doc["seed"] == 3 and doc["size"] == 96
        split = tuple(len(doc[part]) for part in ("training", "validation", "test"))
        assert split == (3, 1, 1)
        folders = {part: [str(Path(item["image"][0]).parent) for item in doc[part]] for part in split_names}
        first = first or folders
        assert folders == first, "same split in every datalist"
        for part in ("training", "validation", "test"):
            for item in doc[part]:
                assert isinstance(item["image"], list)
                labels = item["label"] if isinstance(item["label"], list) else [item["label"]]
                for rel in item["image"] + labels:
                    assert not Path(rel).is_absolute() and (dataset / rel).is_file(), rel
    dapi = json.loads((dataset / "dapi_isl.json").read_text())["training"][0]
    assert dapi == {
        "image": [
            "fields/field_000/brightfield_z0.tif",
            "fields/field_000/brightfield_z1.tif",
            "fields/field_000/phase.tif",
        ],
        "label": ["fields/field_000/dapi_z0.tif", "fields/field_000/dapi_z1.tif", "fields/field_000/dapi_z2.tif"],
        "name": "field_000",
    }
    cell = json.loads((dataset / "cell_instance_seg.json").read_text())["test"][0]
    assert cell == {"image": ["fields/field_004/dic.tif"], "label": "fields/field_004/cells.tif", "name": "field_004"}
    nuc = json.loads((dataset / "nucleus_seg.json").read_text())["validation"][0]
    assert nuc["label"] == "fields/field_003/nuclei.tif" and len(nuc["image"]) == 3
    cm = json.loads((dataset / "cellmask_isl.json").read_text())["training"][2]
    assert cm == {"image": ["fields/field_002/dic.tif"], "label": "fields/field_002/cellmask.tif", "name": "field_002"}


def test_dataset_deterministic(dataset: Path, tmp_path: Path) -> None:
    again = write_dataset(tmp_path / "again", n_images=5, size=96, seed=3)
    assert again == tmp_path / "again"
    assert _tree_bytes(again) == _tree_bytes(dataset)
    other = write_dataset(tmp_path / "other", n_images=3, size=96, seed=4)
    a, b = _tree_bytes(other), _tree_bytes(dataset)
    assert a["fields/field_000/phase.tif"] != b["fields/field_000/phase.tif"]


def test_dataset_field_independent_of_n(dataset: Path, tmp_path: Path) -> None:
    small = write_dataset(tmp_path / "small", n_images=3, size=96, seed=3)
    for name in FIELD_FILES:
        rel = f"fields/field_001/{name}"
        assert (small / rel).read_bytes() == (dataset / rel).read_bytes()


def test_dataset_split_twelve(tmp_path: Path) -> None:
    out = write_dataset(tmp_path / "twelve", n_images=12, size=64, seed=0)
    doc = json.loads((out / "nucleus_seg.json").read_text())
    assert [len(doc[p]) for p in ("training", "validation", "test")] == [9, 1, 2]
    assert doc["test"][-1]["label"] == "fields/field_011/nuclei.tif"


@pytest.mark.parametrize(
    "kwargs, match",
    [({"n_images": 2}, "n_images"), ({"size": 32}, "size"), ({"seed": -1}, "seed"), ({"n_images": 4.5}, "n_images")],
)
def test_write_dataset_validation(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        write_dataset(tmp_path / "bad", **kwargs)
    assert not (tmp_path / "bad").exists()
