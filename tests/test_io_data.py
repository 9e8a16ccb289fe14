"""Image reading and datalists: real files, round trips, and every kind of bad input named in the error."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile
from PIL import Image

from monai_isl.data import find_datalist, load_datalist
from monai_isl.io import read_image, write_image


def test_reads_real_16bit_png_and_tiff(shared_data: Path) -> None:
    dapi = read_image(shared_data / "isl_condition_b" / "dapi.png")
    assert dapi.shape == (1, 1024, 1024) and dapi.dtype == np.uint16
    # independent decode with PIL keeps the same orientation (no axis swap)
    with Image.open(shared_data / "isl_condition_b" / "dapi.png") as img:
        np.testing.assert_array_equal(dapi[0], np.asarray(img))
    phase = read_image(shared_data / "usiigaci" / "set01" / "phase.tif")
    assert phase.shape == (1, 1022, 1024) and phase.dtype == np.uint16
    np.testing.assert_array_equal(phase[0], tifffile.imread(shared_data / "usiigaci" / "set01" / "phase.tif"))
    cells = read_image(shared_data / "usiigaci" / "set01" / "cells.png")
    assert cells.dtype == np.uint8 and cells.max() > 50


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("suffix", [".tif", ".png", ".nii.gz"])
def test_round_trip_dtypes(tmp_path: Path, dtype: type, suffix: str) -> None:
    rng = np.random.default_rng(0)
    array = (rng.random((40, 56)) * 200).astype(dtype)
    path = tmp_path / f"img{suffix}"
    if suffix == ".nii.gz":
        nib.save(nib.Nifti1Image(array, np.eye(4)), str(path))
    elif suffix == ".png" and dtype == np.float32:
        pytest.skip("PNG holds integers only")
    else:
        write_image(path, array)
    back = read_image(path)
    assert back.shape == (1, 40, 56) and back.dtype == dtype
    np.testing.assert_array_equal(back[0], array)


def test_multichannel_file_channels_last_and_first(tmp_path: Path) -> None:
    rgbish = np.arange(30 * 20 * 3, dtype=np.uint16).reshape(30, 20, 3)
    tifffile.imwrite(tmp_path / "hwc.tif", rgbish)
    assert read_image(tmp_path / "hwc.tif").shape == (3, 30, 20)
    np.testing.assert_array_equal(read_image(tmp_path / "hwc.tif")[2], rgbish[..., 2])
    tifffile.imwrite(tmp_path / "chw.tif", np.moveaxis(rgbish, -1, 0))
    np.testing.assert_array_equal(read_image(tmp_path / "chw.tif"), np.moveaxis(rgbish, -1, 0))


def test_missing_corrupt_and_nan_images_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.tif"):
        read_image(tmp_path / "nope.tif")
    (tmp_path / "broken.tif").write_bytes(b"II*\x00garbage" * 3)
    with pytest.raises(ValueError, match=r"could not read image .*broken\.tif"):
        read_image(tmp_path / "broken.tif")
    good = tmp_path / "good.png"
    write_image(good, np.ones((16, 16), np.uint16))
    (tmp_path / "truncated.png").write_bytes(good.read_bytes()[:40])
    with pytest.raises(ValueError, match="truncated.png"):
        read_image(tmp_path / "truncated.png")
    nan = np.ones((8, 8), np.float32)
    nan[3, 3] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", nan)
    with pytest.raises(ValueError, match=r"nan\.tif' contains NaN or infinite"):
        read_image(tmp_path / "nan.tif")
    inf = np.ones((8, 8), np.float32)
    inf[0, 0] = np.inf
    tifffile.imwrite(tmp_path / "inf.tif", inf)
    with pytest.raises(ValueError, match="inf.tif"):
        read_image(tmp_path / "inf.tif")
    (tmp_path / "x.jpg").write_bytes(b"0")
    with pytest.raises(ValueError, match="unsupported file type '.jpg'"):
        read_image(tmp_path / "x.jpg")
    tifffile.imwrite(tmp_path / "c64.tif", np.ones((4, 4), np.complex64))
    with pytest.raises(ValueError, match="unsupported dtype complex64"):
        read_image(tmp_path / "c64.tif")


def test_write_image_is_atomic_and_leaves_no_temp(tmp_path: Path) -> None:
    out = write_image(tmp_path / "sub" / "pred.tif", np.zeros((1, 8, 8), np.float32))
    assert out.is_file() and [p.name for p in out.parent.iterdir()] == ["pred.tif"]
    with pytest.raises(ValueError, match="must be uint8 or uint16"):
        write_image(tmp_path / "bad.png", np.zeros((4, 4), np.float32))
    assert not any(p.name.startswith(".bad.png") for p in tmp_path.iterdir())


def _datalist(tmp_path: Path, content: dict) -> Path:
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps(content))
    return path


def test_load_datalist_resolves_paths_and_names(synth_dir: Path) -> None:
    items = load_datalist(synth_dir / "dapi_isl.json", "training")
    assert len(items) >= 1
    first = items[0]
    assert len(first["image"]) == 3 and all(Path(f).is_absolute() and Path(f).is_file() for f in first["image"])
    assert isinstance(first["name"], str) and not Path(first["name"]).is_absolute()
    assert find_datalist(synth_dir, "dapi_isl").endswith("dapi_isl.json")


def test_datalist_errors(tmp_path: Path) -> None:
    write_image(tmp_path / "a.tif", np.zeros((8, 8), np.uint16))
    with pytest.raises(ValueError, match="section 'training' is empty"):
        load_datalist(_datalist(tmp_path, {"training": []}), "training")
    with pytest.raises(ValueError, match="has no 'test' section"):
        load_datalist(_datalist(tmp_path, {"training": [{"image": "a.tif", "label": "a.tif"}]}), "test")
    with pytest.raises(ValueError, match=r"training\[0\]: missing key\(s\) \['label'\]"):
        load_datalist(_datalist(tmp_path, {"training": [{"image": "a.tif"}]}), "training")
    with pytest.raises(FileNotFoundError, match=r"training\[1\]: file for key 'label' not found: .*missing\.tif"):
        load_datalist(
            _datalist(
                tmp_path,
                {"training": [{"image": "a.tif", "label": "a.tif"}, {"image": "a.tif", "label": "missing.tif"}]},
            ),
            "training",
        )
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json' is not valid JSON"):
        load_datalist(tmp_path / "bad.json", "training")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="expected 'dapi_isl.json' or 'datalist.json'"):
        find_datalist(tmp_path / "empty", "dapi_isl")
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        find_datalist(tmp_path / "nothing_here", "dapi_isl")
