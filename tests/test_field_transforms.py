"""Field transforms on real files from ../shared/data and on synthetic ones; bad inputs named in errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from monai.data import CacheDataset, list_data_collate
from monai.transforms import Compose, RandRotate90d

from monai_isl.data import load_datalist
from monai_isl.io import read_image, write_image
from monai_isl.transforms import ApplyPercentilesd, LoadFieldd, PercentileStatsd, RandCropSamplesd, WriteFieldd


def test_load_real_isl_field_stacks_channels_and_max_projects(shared_data: Path) -> None:
    folder = shared_data / "isl_condition_b"
    planes = [str(folder / f"phase_z{z:02d}.png") for z in (0, 6, 12)]
    targets = [str(folder / "dapi.png"), str(folder / "map2.png")]
    item = LoadFieldd(keys=["image", "label"], max_project=["label"], expected_channels={"image": 3})(
        {"image": planes, "label": targets}
    )
    assert item["image"].shape == (3, 1024, 1024) and item["image"].dtype == np.uint16
    np.testing.assert_array_equal(item["image"][1], read_image(planes[1])[0])
    expected = np.maximum(read_image(targets[0])[0], read_image(targets[1])[0])
    np.testing.assert_array_equal(item["label"][0], expected)


def test_load_synthetic_dapi_stack(synth_dir: Path) -> None:
    item = load_datalist(synth_dir / "dapi_isl.json", "training")[0]
    out = LoadFieldd(keys=["image", "label"], max_project="label")(item)
    stack = np.stack([tifffile.imread(f) for f in item["label"]])
    np.testing.assert_array_equal(out["label"][0], stack.max(0))
    assert out["image"].shape == (3, 96, 96)


def test_load_errors_name_the_file_and_key(tmp_path: Path) -> None:
    a = write_image(tmp_path / "a.tif", np.ones((32, 32), np.uint16))
    b = write_image(tmp_path / "b.tif", np.ones((32, 40), np.uint16))
    with pytest.raises(ValueError, match=r"key 'image': image '.*b\.tif' has spatial shape \(32, 40\)"):
        LoadFieldd(keys="image")({"image": [str(a), str(b)]})
    with pytest.raises(ValueError, match=r"key 'label': image '.*b\.tif' has spatial shape \(32, 40\), but '.*a\.tif'"):
        LoadFieldd(keys=["image", "label"])({"image": [str(a)], "label": str(b)})
    with pytest.raises(ValueError, match=r"key 'image': expected 3 channel\(s\) for the network, got 2"):
        LoadFieldd(keys="image", expected_channels={"image": 3})({"image": [str(a), str(a)]})
    with pytest.raises(FileNotFoundError, match="gone.tif"):
        LoadFieldd(keys="image")({"image": [str(tmp_path / "gone.tif")]})


def test_percentiles_match_numpy_and_are_cached_compactly(synth_dir: Path) -> None:
    items = load_datalist(synth_dir / "dapi_isl.json", "training")
    load = LoadFieldd(keys=["image", "label"], max_project="label")
    stats = PercentileStatsd(keys="image", lower=2.0, upper=98.0)
    apply = ApplyPercentilesd(keys="image")
    raw = load(items[0])
    scaled = apply(stats(raw))["image"]
    assert scaled.dtype == np.float32
    for c in range(3):
        lo, hi = np.percentile(raw["image"][c], [2.0, 98.0])
        np.testing.assert_allclose(scaled[c], (raw["image"][c] - lo) / (hi - lo), rtol=1e-5, atol=1e-6)
    # CacheDataset keeps the deterministic head: decoded uint16 fields, not float64 crops
    crop = RandCropSamplesd(keys=["image", "label"], roi_size=32, num_samples=5)
    dataset = CacheDataset(items, Compose([load, stats, crop, apply]), progress=False)
    cached = dataset._cache[0]
    assert cached["image"].dtype == np.uint16 and "image_percentiles" in cached
    samples = dataset[0]
    assert len(samples) == 5 and all(s["image"].shape == (3, 32, 32) for s in samples)


def test_flat_channel_does_not_divide_by_zero() -> None:
    d = PercentileStatsd(keys="x")({"x": np.full((1, 8, 8), 7, np.uint16)})
    out = ApplyPercentilesd(keys="x")(d)["x"]
    assert np.isfinite(out).all() and np.all(out == 0)
    with pytest.raises(KeyError, match="put PercentileStatsd before this"):
        ApplyPercentilesd(keys="x")({"x": np.zeros((1, 4, 4))})
    with pytest.raises(ValueError, match="0 <= lower < upper <= 100"):
        PercentileStatsd(keys="x", lower=50, upper=10)


def test_crops_skip_empty_targets_and_are_seeded() -> None:
    label = np.zeros((1, 128, 128), np.uint16)
    label[0, 100:110, 100:110] = 5000  # signal only in one corner
    image = np.arange(128 * 128, dtype=np.uint16).reshape(1, 128, 128)
    item = PercentileStatsd(keys="label", lower=0.0, upper=100.0)({"image": image, "label": label})
    crop = RandCropSamplesd(
        ["image", "label"], roi_size=32, num_samples=5, signal_key="label", min_signal_fraction=0.01, max_tries=200
    )
    crop.set_random_state(seed=3)
    samples = crop(item)
    assert all((s["label"] > 2500).mean() >= 0.01 for s in samples)
    for s in samples:  # crops are windows of the same field
        y, x = s["crop_start"]
        np.testing.assert_array_equal(s["image"], image[:, y : y + 32, x : x + 32])
    no_skip = RandCropSamplesd(["image", "label"], roi_size=32, num_samples=20)
    no_skip.set_random_state(seed=3)
    assert any((s["label"] > 0).mean() == 0 for s in no_skip(item))
    again = RandCropSamplesd(
        ["image", "label"], roi_size=32, num_samples=5, signal_key="label", min_signal_fraction=0.01, max_tries=200
    )
    again.set_random_state(seed=3)
    assert [tuple(s["crop_start"]) for s in again(item)] == [tuple(s["crop_start"]) for s in samples]


def test_crop_larger_than_field_takes_whole_field_padded_to_roi() -> None:
    # a field of 20 rows under 32x32 crops: the 20 rows whole, mirrored 6 rows up and 6 down, the label alike
    image = np.arange(20 * 64, dtype=np.float32).reshape(1, 20, 64)
    item = {"image": image, "label": image.copy()}
    with pytest.warns(UserWarning, match="smaller than roi_size"):
        samples = RandCropSamplesd(["image", "label"], roi_size=32, num_samples=4)(item)
    for s in samples:
        assert s["image"].shape == s["label"].shape == (1, 32, 32)
        y, x = s["crop_start"]
        assert y == 0
        np.testing.assert_array_equal(s["image"][:, 6:26], image[:, :, x : x + 32])
        np.testing.assert_array_equal(s["image"][:, 5], s["image"][:, 7])  # reflection about the first row
        np.testing.assert_array_equal(s["image"][:, 26], s["image"][:, 24])
        np.testing.assert_array_equal(s["label"], s["image"])
    # the reason: rotated and unrotated crops of one field must stack into one batch (they did not: 20x32 vs 32x20)
    rotate = RandRotate90d(keys=["image", "label"], prob=1.0)
    batch = list_data_collate([rotate(s) if i % 2 else s for i, s in enumerate(samples)])
    assert tuple(batch["image"].shape) == (4, 1, 32, 32)


def test_write_field_names_outputs_after_the_input(tmp_path: Path) -> None:
    writer = WriteFieldd(keys="pred", output_dir=str(tmp_path), suffix="_dapi.tif")
    pred = np.random.default_rng(0).random((1, 24, 30)).astype(np.float64)
    out = writer({"pred": pred, "name": "plate1/well A/bf_z0.tif"})
    path = Path(out["pred_file"])
    assert path.name == "plate1_well A_bf_z0_dapi.tif"
    back = tifffile.imread(path)
    assert back.dtype == np.float32 and back.shape == (24, 30)
    np.testing.assert_allclose(back, pred[0].astype(np.float32))


def test_empty_training_annotation_is_refused(tmp_path: Path) -> None:
    image = write_image(tmp_path / "img.tif", np.ones((16, 16), np.uint16))
    empty = write_image(tmp_path / "empty_mask.png", np.zeros((16, 16), np.uint8))
    load = LoadFieldd(["image", "label"], require_foreground="label")
    with pytest.raises(ValueError, match=r"key 'label': annotation \[.*empty_mask\.png'\] is empty"):
        load({"image": [str(image)], "label": str(empty)})
    # evaluation may see empty fields: only keys listed in require_foreground are checked
    assert LoadFieldd(["image", "label"])({"image": [str(image)], "label": str(empty)})["label"].max() == 0
