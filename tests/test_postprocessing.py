"""h-maxima watershed post-processing: constructed cases, no cap on the number of cells, the fast path against
the float64 scikit-image reference, the plain-Python kernel against its numba build, and the MONAI transform."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from scipy import ndimage as ndi

from monai_isl import postprocessing
from monai_isl.metrics import match_instances
from monai_isl.postprocessing import HMaximaWatershedd, hmaxima_watershed, hmaxima_watershed_reference
from monai_isl.synthetic import touching_cells
from monai_isl.transforms import instance_distance

METHODS = ("fast", "reference")


def _two_discs(gap: float = 30.0) -> np.ndarray:
    yy, xx = np.mgrid[:60, :100]
    labels = np.zeros((60, 100), np.int32)
    labels[np.hypot(yy - 30, xx - 30) < 18] = 1
    labels[(np.hypot(yy - 30, xx - 30 - gap) < 18) & (labels == 0)] = 2
    return labels


def _two_peaks(dip: float) -> tuple[np.ndarray, np.ndarray]:
    """A ridge with peaks of 100 at x = 20 and x = 40 and a saddle ``dip`` below them at x = 30."""
    x = np.arange(60, dtype=np.float64)
    profile = np.interp(x, [0, 20, 30, 40, 59], [0, 100, 100 - dip, 100, 0])
    yy = np.arange(21)[:, None]
    f = profile[None, :] - 0.5 * np.abs(yy - 10)
    return f, np.ones_like(f)


def touching_field(size: int = 384, spacing: float = 40.0, noise: float = 6.0, seed: int = 0):
    """Touching cells (:func:`monai_isl.synthetic.touching_cells`, none left out), their per-instance distance map
    smoothed plus smooth noise (like a network's output), and a soft mask: a small version of
    ``benchmarks/bench_postprocessing.py``."""
    labels = touching_cells(size, spacing, seed=seed, drop=0.0)
    smooth = ndi.gaussian_filter(np.random.default_rng([seed, 1]).standard_normal((size, size)), 3)
    distance = ndi.gaussian_filter(instance_distance(labels), 1.5) + smooth / smooth.std() * noise
    prob = ndi.gaussian_filter((labels > 0).astype(np.float64), 1.5)
    return labels, distance, prob


@pytest.mark.parametrize("method", METHODS)
def test_two_touching_discs_give_two_cells(method: str) -> None:
    truth = _two_discs()
    labels = hmaxima_watershed(instance_distance(truth), truth > 0, method=method)
    assert labels.dtype == np.uint16 and labels.max() == 2
    assert match_instances(truth, labels).ap[0] == 1.0  # both cells found with IoU >= 0.5
    assert (labels[truth == 0] == 0).all()


@pytest.mark.parametrize("method", METHODS)
def test_saddle_below_h_merges_and_above_h_splits(method: str) -> None:
    for dip, expected in ((5.0, 1), (9.5, 1), (10.5, 2), (40.0, 2)):
        f, mask = _two_peaks(dip)
        assert hmaxima_watershed(f, mask, h=10, method=method).max() == expected, (dip, method)
    f, mask = _two_peaks(40.0)
    assert hmaxima_watershed(f, mask, h=50, method=method).max() == 1
    assert hmaxima_watershed(f, mask, h=0, method=method).max() == 2


def test_flat_saddle_plateau_is_shared_like_the_reference() -> None:
    # two cones on a wide flat floor at 50 (a clipped map): the floor is split by distance to the cones,
    # as priority-queue flooding does, not handed to the first cone in raster order
    yy, xx = np.mgrid[:80, :160]
    f = np.maximum(np.maximum(200 - 8 * np.hypot(yy - 40, xx - 30), 200 - 8 * np.hypot(yy - 40, xx - 130)), 50.0)
    ref = hmaxima_watershed_reference(f, np.ones_like(f))
    fast = hmaxima_watershed(f, np.ones_like(f), method="auto")
    assert ref.max() == fast.max() == 2
    assert match_instances(ref, fast).mean_ap == 1.0
    assert abs(int((fast == 1).sum()) - int((fast == 2).sum())) < 400


@pytest.mark.parametrize("method", METHODS)
def test_empty_and_flat_maps(method: str) -> None:
    f = np.random.default_rng(0).random((32, 40)) * 255
    empty = hmaxima_watershed(f, np.zeros((32, 40)), method=method)
    assert empty.shape == (32, 40) and empty.dtype == np.uint16 and not empty.any()
    # a flat map: one instance per 8-connected mask component (two blocks and a diagonal pair)
    mask = np.zeros((32, 40))
    mask[2:10, 2:12] = 0.9
    mask[15:30, 20:38] = 0.7
    mask[12, 30] = mask[13, 31] = 1.0
    labels = hmaxima_watershed(np.full((32, 40), 7.0), mask, method=method)
    assert labels.max() == 3
    components, n = ndi.label(mask > 0.5, structure=np.ones((3, 3)))
    assert n == 3 and match_instances(components, labels).mean_ap == 1.0
    # mask_threshold is a strict ">": 0.7 is foreground at 0.5, background at 0.7
    assert hmaxima_watershed(np.full((32, 40), 7.0), mask, mask_threshold=0.7, method=method).max() == 2


@pytest.mark.parametrize("method", METHODS)
def test_more_than_255_cells(method: str) -> None:
    truth = np.zeros((200, 200), np.int32)
    yy, xx = np.mgrid[:200, :200]
    blob = np.hypot(yy % 10 - 4.5, xx % 10 - 4.5) < 4
    truth[blob] = (yy // 10 * 20 + xx // 10 + 1)[blob]
    labels = hmaxima_watershed(instance_distance(truth), truth > 0, method=method)
    assert labels.max() == 400 and len(np.unique(labels)) == 401
    assert match_instances(truth, labels).mean_ap == 1.0


def test_more_than_65535_cells_gives_uint32() -> None:
    pytest.importorskip("numba")
    truth = np.zeros((774, 774), np.int64)
    yy, xx = np.mgrid[:774, :774]
    dot = (yy % 3 < 2) & (xx % 3 < 2)
    truth[dot] = (yy // 3 * 258 + xx // 3 + 1)[dot]
    labels = hmaxima_watershed((truth > 0) * 255.0, truth > 0, method="fast")  # 2x2 plateaus, 1 px apart
    assert labels.dtype == np.uint32 and labels.max() == 258 * 258 > 65535


def test_fast_path_agrees_with_the_float64_reference() -> None:
    pytest.importorskip("numba")
    truth, distance, prob = touching_field()
    for h in (10.0, 4.0):
        fast = hmaxima_watershed(distance, prob, h=h, method="fast")
        ref = hmaxima_watershed_reference(distance, prob, h=h)
        assert fast.max() > 50
        assert match_instances(ref, fast).mean_ap >= 0.99, h
    # float32 input (what a network gives) takes the float32 kernel
    fast32 = hmaxima_watershed(distance.astype(np.float32), prob.astype(np.float32), method="fast")
    assert match_instances(hmaxima_watershed_reference(distance, prob), fast32).mean_ap >= 0.99
    assert match_instances(truth, fast32).ap[0] >= 0.9  # and it does segment the cells


def test_plain_python_kernel_equals_numba_build() -> None:
    pytest.importorskip("numba")
    _, distance, prob = touching_field(size=64, spacing=20.0, seed=3)
    prob = prob.astype(np.float32)  # the signature hmaxima_watershed uses: no extra compilation
    py_labels, py_n = postprocessing._flood(distance, prob, 0.5, 10.0)
    nb_labels, nb_n = postprocessing._get_kernel()(distance, prob, 0.5, 10.0)
    assert py_n == nb_n > 3
    np.testing.assert_array_equal(py_labels, nb_labels)


def test_auto_falls_back_to_the_reference_without_numba(monkeypatch: pytest.MonkeyPatch) -> None:
    f, mask = _two_peaks(40.0)
    monkeypatch.setattr(postprocessing, "numba_available", lambda: False)
    monkeypatch.setattr(postprocessing, "_get_kernel", lambda: pytest.fail("numba kernel used"))
    assert hmaxima_watershed(f, mask).max() == 2
    with pytest.raises(ValueError, match="method"):
        hmaxima_watershed(f, mask, method="itk")
    with pytest.raises(ValueError, match="same shape"):
        hmaxima_watershed(f, mask[:, :5], method="reference")


def test_transform_numpy_tensor_and_metatensor() -> None:
    truth = _two_discs()
    out = np.stack([instance_distance(truth), (truth > 0).astype(np.float32)])
    d = HMaximaWatershedd("pred")({"pred": out})
    assert d["pred_inst"].shape == (1, 60, 100) and d["pred_inst"].dtype == np.uint16 and d["pred_inst"].max() == 2
    expected = hmaxima_watershed(out[0], out[1])[None]
    np.testing.assert_array_equal(d["pred_inst"], expected)

    logits = out.copy()
    logits[1] = np.where(truth > 0, 4.0, -4.0)
    meta = MetaTensor(torch.as_tensor(logits), meta={"filename_or_obj": "a.png"})
    t = HMaximaWatershedd("pred", output_key="inst", sigmoid=True)({"pred": meta})
    assert isinstance(t["inst"], MetaTensor) and t["inst"].dtype == torch.int32
    assert t["inst"].meta["filename_or_obj"] == "a.png"
    np.testing.assert_array_equal(t["inst"].numpy(), expected)
    swapped = HMaximaWatershedd("pred", output_key="inst", distance_channel=1, mask_channel=0)
    np.testing.assert_array_equal(swapped({"pred": torch.as_tensor(out[::-1].copy())})["inst"].numpy(), expected)
    with pytest.raises(ValueError, match="output_key"):
        HMaximaWatershedd(["a", "b"], output_key="x")
