"""Targets derived from instance labels: per-instance distance to the own border (0..255) and the mask."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from scipy import ndimage as ndi

from monai_isl.transforms import InstanceToDistanced, InstanceToMaskd, instance_distance


def test_square_distance_in_pixels_and_per_instance() -> None:
    labels = np.zeros((9, 9), np.uint16)
    labels[2:7, 2:7] = 4  # a 5x5 square: rims at 1, 2, and the centre at 3
    expected = np.zeros((9, 9))
    for d in (1, 2, 3):
        expected[1 + d : 8 - d, 1 + d : 8 - d] = d
    np.testing.assert_allclose(instance_distance(labels, mode="fixed"), expected)
    np.testing.assert_allclose(instance_distance(labels, mode="fixed", factor=2.5), expected * 2.5)
    np.testing.assert_allclose(instance_distance(labels), expected * 255 / 3, rtol=1e-6)


def test_touching_rectangles_are_separated() -> None:
    labels = np.zeros((7, 12), np.int64)
    labels[1:6, 1:5] = 1  # 5 x 4
    labels[1:6, 5:11] = 2  # 5 x 6, touching the first along a column
    dist = instance_distance(labels, mode="fixed")
    # the shared border is at distance 1 on both sides, as a border to the background would be
    np.testing.assert_allclose(dist[3, 4], 1.0)
    np.testing.assert_allclose(dist[3, 5], 1.0)
    np.testing.assert_allclose(dist[3, 1:5], [1, 2, 2, 1])
    np.testing.assert_allclose(dist[3, 5:11], [1, 2, 3, 3, 2, 1])
    # each rectangle is the EDT of its own mask
    for k in (1, 2):
        own = np.pad(labels == k, 1)
        np.testing.assert_allclose(dist[labels == k], ndi.distance_transform_edt(own)[1:-1, 1:-1][labels == k])
    per = instance_distance(labels)
    assert per[labels == 1].max() == pytest.approx(255) and per[labels == 2].max() == pytest.approx(255)
    assert (per[labels == 0] == 0).all()


def test_image_border_counts_as_cell_border_and_ids_are_free() -> None:
    labels = np.zeros((4, 6), np.uint32)
    labels[:, :3] = 4_000_000_000
    dist = instance_distance(labels, mode="fixed")
    np.testing.assert_allclose(dist[:, :3], [[1, 1, 1], [1, 2, 1], [1, 2, 1], [1, 1, 1]])
    assert instance_distance(np.zeros((3, 3), np.uint8)).sum() == 0
    with pytest.raises(ValueError, match="mode"):
        instance_distance(labels, mode="global")


def test_dictionary_transforms_keep_the_container(shared_data: Path) -> None:
    import tifffile

    labels = tifffile.imread(shared_data / "dsb2018_nuclei" / "instances.tif")[None]
    data = {"label": labels}
    out = InstanceToMaskd("label", output_key="mask")(InstanceToDistanced("label", output_key="dist")(data))
    assert out["label"] is labels
    assert out["dist"].shape == labels.shape and out["dist"].dtype == np.float32
    assert out["mask"].dtype == np.float32 and set(np.unique(out["mask"])) == {0.0, 1.0}
    np.testing.assert_array_equal(out["mask"] > 0, labels > 0)
    np.testing.assert_array_equal(out["dist"] > 0, labels > 0)
    # every nucleus peaks at 255 with per-instance scaling
    peaks = ndi.maximum(out["dist"][0], labels[0], np.unique(labels)[1:])
    np.testing.assert_allclose(peaks, 255, rtol=1e-6)

    meta = MetaTensor(torch.as_tensor(labels.astype(np.int32)), meta={"filename_or_obj": "x.tif"})
    t_out = InstanceToDistanced("label", mode="fixed")(InstanceToMaskd("label", output_key="mask")({"label": meta}))
    assert isinstance(t_out["label"], MetaTensor) and t_out["label"].dtype == torch.float32
    assert t_out["label"].meta["filename_or_obj"] == "x.tif"
    np.testing.assert_allclose(t_out["label"].numpy(), instance_distance(labels[0], mode="fixed")[None])
    assert isinstance(t_out["mask"], torch.Tensor) and t_out["mask"].dtype == torch.float32
