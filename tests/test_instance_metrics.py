"""Instance matching / mAP and semantic IoU: rules, MONAI metrics, Ignite handlers, and cross-checks of the
TP/FP/FN counts against StarDist's ``matching`` and Cellpose's ``average_precision`` on real hand-drawn labels
with perturbed predictions (eroded, dilated, shifted, merged, split, dropped, spurious objects)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from scipy import ndimage as ndi
from skimage.segmentation import relabel_sequential

import monai_isl.metrics.instance as instance_module
from monai_isl.handlers import IoU, MeanAveragePrecision
from monai_isl.metrics import (
    DEFAULT_THRESHOLDS,
    IoUMetric,
    MeanAveragePrecisionMetric,
    iou_score,
    match_instances,
    mean_average_precision,
)

USIIGACI_SETS = ("set01", "set04")


def _read_labels(path: Path) -> np.ndarray:
    if path.suffix == ".png":
        from PIL import Image

        return np.asarray(Image.open(path))
    import tifffile

    return tifffile.imread(path)


# ---------------------------------------------------------------- perturbations of a true label image


def _erode(y: np.ndarray, r: int = 2) -> np.ndarray:
    footprint = np.hypot(*np.mgrid[-r : r + 1, -r : r + 1]) <= r
    keep = ndi.grey_erosion(y, footprint=footprint) == ndi.grey_dilation(y, footprint=footprint)
    return np.where(keep, y, 0)


def _dilate(y: np.ndarray, r: int = 2) -> np.ndarray:
    from skimage.segmentation import expand_labels

    return expand_labels(y, r)


def _merge(y: np.ndarray, n: int = 8) -> np.ndarray:
    """Merge ``n`` pairs of horizontally touching objects."""
    a, b = y[:, :-1].ravel(), y[:, 1:].ravel()
    pairs = np.unique(np.stack([a, b], 1)[(a > 0) & (b > 0) & (a != b)], axis=0)
    lut = np.arange(int(y.max()) + 1)
    used: set[int] = set()
    for i, j in pairs:
        if len(used) >= 2 * n or i in used or j in used:
            continue
        lut[j] = i
        used |= {int(i), int(j)}
    return lut[y]


def _split(y: np.ndarray, rng: np.random.Generator, fraction: float = 0.2) -> np.ndarray:
    """Cut a fraction of the objects in two at their centroid column (the right half gets a new id)."""
    out = y.astype(np.int64).copy()
    ids = np.unique(y)[1:]
    chosen = rng.choice(ids, max(1, int(fraction * len(ids))), replace=False)
    cols = np.broadcast_to(np.arange(y.shape[1]), y.shape)
    centroids = ndi.center_of_mass(np.ones_like(y), y, chosen)
    next_id = int(y.max()) + 1
    for k, (_, cx) in zip(chosen, centroids, strict=True):
        out[(y == k) & (cols > cx)] = next_id
        next_id += 1
    return out


def _drop(y: np.ndarray, rng: np.random.Generator, fraction: float = 0.15) -> np.ndarray:
    ids = np.unique(y)[1:]
    gone = rng.choice(ids, max(1, int(fraction * len(ids))), replace=False)
    return np.where(np.isin(y, gone), 0, y)


def _spurious(y: np.ndarray, rng: np.random.Generator, n: int = 15) -> np.ndarray:
    out = y.astype(np.int64).copy()
    yy, xx = np.mgrid[: y.shape[0], : y.shape[1]]
    next_id = int(y.max()) + 1
    for _ in range(n):
        cy, cx, r = rng.integers(0, y.shape[0]), rng.integers(0, y.shape[1]), rng.integers(3, 9)
        disc = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & (out == 0)
        out[disc] = next_id
        next_id += 1
    return out


def _perturbations(y: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mixed = _spurious(_drop(_split(_merge(_dilate(np.roll(y, (2, -1), (0, 1)), 1)), rng), rng), rng)
    # non-consecutive, large uint32 ids: the metric must not assume 1..n
    ids = np.unique(mixed)[1:]
    lut = np.zeros(int(mixed.max()) + 1, np.uint32)
    lut[ids] = 4_000_000_000 - 7 * rng.permutation(len(ids)).astype(np.uint32)
    return {
        "identical": y,
        "eroded": _erode(y),
        "dilated": _dilate(y, 3),
        "shifted": np.roll(y, (4, 3), (0, 1)),
        "merged": _merge(y),
        "split": _split(y, rng),
        "dropped": _drop(y, rng),
        "spurious": _spurious(y, rng),
        "mixed_big_ids": lut[mixed],
        "empty": np.zeros_like(y),
    }


# ---------------------------------------------------------------- rules


def test_default_thresholds() -> None:
    np.testing.assert_allclose(DEFAULT_THRESHOLDS, [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95])


def test_empty_image_rules() -> None:
    empty = np.zeros((8, 8), np.uint16)
    one = empty.copy()
    one[2:5, 2:5] = 3
    both = match_instances(empty, empty)
    np.testing.assert_array_equal(both.ap, np.ones(10))
    assert (both.tp.sum(), both.fp.sum(), both.fn.sum(), both.n_true, both.n_pred) == (0, 0, 0, 0, 0)
    assert mean_average_precision(empty, empty) == 1.0
    assert mean_average_precision(one, empty) == 0.0
    assert mean_average_precision(empty, one) == 0.0
    missed = match_instances(one, empty)
    np.testing.assert_array_equal(missed.fn, np.ones(10))
    assert mean_average_precision(one, one * 5) == 1.0  # ids need not agree


def test_known_counts_and_exact_tie_at_half() -> None:
    y_true = np.zeros((10, 12), np.int64)
    y_true[0:2, 0:4] = 1  # 8 px, split exactly in two halves by the prediction: IoU 0.5 with each
    y_true[5:10, 5:10] = 2  # 25 px, predicted 20 px inside: IoU 0.8
    y_pred = np.zeros_like(y_true)
    y_pred[0:2, 0:2] = 10
    y_pred[0:2, 2:4] = 11
    y_pred[5:10, 5:9] = 12
    r = match_instances(y_true, y_pred, thresholds=[0.5, 0.8, 0.81])
    np.testing.assert_array_equal(r.tp, [2, 1, 0])  # one-to-one: only one half of object 1 counts at 0.5
    np.testing.assert_array_equal(r.fp, [1, 2, 3])
    np.testing.assert_array_equal(r.fn, [0, 1, 2])
    np.testing.assert_allclose(r.ap, [2 / 3, 1 / 4, 0.0])
    assert (r.n_true, r.n_pred) == (2, 3)


def test_conflicts_below_half_use_an_optimal_assignment() -> None:
    # at t = 0.2, greedy "best IoU first" pairs true 1 with pred 20 (IoU 0.67) and leaves true 2 unmatched;
    # the maximum matching pairs true 1 with pred 21 (0.2) and true 2 with pred 20 (0.2)
    y_true = np.zeros((4, 12), np.int64)
    y_true[:, 0:10] = 1
    y_true[:, 10:12] = 2
    y_pred = np.zeros_like(y_true)
    y_pred[:, 2:12] = 20
    y_pred[:, 0:2] = 21
    r = match_instances(y_true, y_pred, thresholds=[0.2, 0.5])
    np.testing.assert_array_equal(r.tp, [2, 1])


def test_dtypes_floats_and_errors() -> None:
    y = np.zeros((6, 6), np.int64)
    y[1:3, 1:3], y[3:6, 3:6] = 1, 2
    for dtype in (np.uint8, np.uint16, np.uint32, np.uint64, np.int32, np.int64, np.float32):
        assert mean_average_precision(y.astype(dtype), y.astype(np.uint16)) == 1.0
    assert mean_average_precision(torch.as_tensor(y), torch.as_tensor(y)) == 1.0
    with pytest.raises(ValueError, match="same shape"):
        match_instances(y, y[:5])
    with pytest.raises(ValueError, match="non-negative"):
        match_instances(-y, y)
    with pytest.raises(ValueError, match="integer"):
        match_instances(y + 0.5, y)


def test_iou_score_rule() -> None:
    a = np.zeros((4, 4))
    b = np.zeros((4, 4))
    assert iou_score(a, b) == 1.0  # both empty: perfect
    b[0, :] = 1
    assert iou_score(a, b) == 0.0
    a[0, :2] = 0.9
    a[1, :2] = 0.6
    a[2, :2] = 0.4  # below the 0.5 threshold: not foreground
    assert iou_score(a, b) == pytest.approx(2 / 6)
    assert iou_score(torch.as_tensor(a), torch.as_tensor(b), threshold=0.7) == pytest.approx(2 / 4)


def _touching_cells(size: int = 160, n: int = 60, seed: int = 0) -> np.ndarray:
    """Voronoi cells of random seeds cut at radius 9: touching objects with non-consecutive ids."""
    rng = np.random.default_rng(seed)
    seeds = np.zeros((size, size), np.int64)
    seeds[tuple(rng.integers(0, size, (2, n)))] = np.arange(1, n + 1)
    dist, (iy, ix) = ndi.distance_transform_edt(seeds == 0, return_indices=True)
    return np.where(dist <= 9, seeds[iy, ix], 0)


@pytest.mark.parametrize("seed", [0, 1])
def test_raw_relabelled_and_sorted_paths_agree(monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    """Small ids are counted as they are (one bincount), huge ids relabelled first, and with the dense table
    forbidden the pairs are sorted: all give the counts of a full assignment at every threshold."""
    y_true = _touching_cells(seed=seed)
    big_true = np.where(y_true > 0, 3_000_000_000 + 7 * y_true, 0).astype(np.uint32)
    thresholds = [0.1, 0.3, 0.5, 0.55, 0.75, 0.95]
    calls = []
    relabel = instance_module.relabel_sequential
    monkeypatch.setattr(instance_module, "relabel_sequential", lambda y: calls.append(1) or relabel(y))
    for kind, y_pred in _perturbations(y_true, seed).items():
        calls.clear()
        raw = match_instances(y_true, y_pred, thresholds)
        assert len(calls) == (2 if kind == "mixed_big_ids" else 0), kind
        ti, pj, iou, n_true, n_pred = instance_module._overlap_pairs(y_true, y_pred)
        assignment = [instance_module._max_matching(ti[iou >= t], pj[iou >= t], iou[iou >= t]) for t in thresholds]
        np.testing.assert_array_equal(raw.tp, assignment if n_true and n_pred else 0, err_msg=kind)
        calls.clear()
        results = [match_instances(big_true, y_pred, thresholds)]
        assert len(calls) == 2, kind
        with monkeypatch.context() as m:
            m.setattr(instance_module, "_DENSE_LIMIT", 0)
            results += [match_instances(y_true, y_pred, thresholds), match_instances(big_true, y_pred, thresholds)]
        for r in results:
            np.testing.assert_array_equal(r.tp, raw.tp, err_msg=kind)
            np.testing.assert_array_equal(r.ap, raw.ap, err_msg=kind)
            assert (r.n_true, r.n_pred) == (raw.n_true, raw.n_pred), kind
    empty = match_instances(np.zeros((0, 4), np.int32), np.zeros((0, 4), np.uint8))
    np.testing.assert_array_equal(empty.ap, np.ones(10))


# ---------------------------------------------------------------- cross-checks against StarDist and Cellpose


def _real_label_images(shared_data: Path) -> dict[str, np.ndarray]:
    images = {"dsb2018": _read_labels(shared_data / "dsb2018_nuclei" / "instances.tif")}
    for name in USIIGACI_SETS:
        path = shared_data / "usiigaci" / name / "cells.png"
        if path.exists():
            images[name] = _read_labels(path)
    return images


def test_counts_match_stardist_and_cellpose_on_real_labels(shared_data: Path) -> None:
    stardist_matching = pytest.importorskip("stardist.matching")
    cellpose_metrics = pytest.importorskip("cellpose.metrics")
    thresholds = list(DEFAULT_THRESHOLDS)
    for image_name, y_true in _real_label_images(shared_data).items():
        assert y_true.max() > 0
        for kind, y_pred in _perturbations(y_true).items():
            ours = match_instances(y_true, y_pred)
            label = f"{image_name}/{kind}"
            if kind == "mixed_big_ids":  # both references allocate tables of size max id: give them 1..n
                y_pred = relabel_sequential(y_pred)[0]
            y_t, y_p = y_true.astype(np.int32), y_pred.astype(np.int32)  # one dtype: one numba compile in StarDist
            sd = stardist_matching.matching(y_t, y_p, thresh=thresholds)
            np.testing.assert_array_equal(ours.tp, [s.tp for s in sd], err_msg=label)
            np.testing.assert_array_equal(ours.fp, [s.fp for s in sd], err_msg=label)
            np.testing.assert_array_equal(ours.fn, [s.fn for s in sd], err_msg=label)
            if kind != "empty":  # StarDist's accuracy is our AP whenever something exists on either side
                np.testing.assert_allclose(ours.ap, [s.accuracy for s in sd], atol=1e-12, err_msg=label)
            with np.errstate(invalid="ignore", divide="ignore"):  # Cellpose divides 0 / 0 for an empty prediction
                ap, tp, fp, fn = cellpose_metrics.average_precision(y_t, y_p, threshold=thresholds)
            np.testing.assert_array_equal(ours.tp, tp, err_msg=label)
            np.testing.assert_array_equal(ours.fp, fp, err_msg=label)
            np.testing.assert_array_equal(ours.fn, fn, err_msg=label)
            np.testing.assert_allclose(ours.ap, np.nan_to_num(ap, nan=1.0), atol=1e-6, err_msg=label)


def test_conflicting_low_thresholds_match_stardist(shared_data: Path) -> None:
    """At IoU thresholds below 0.5 one object can overlap several: the assignment must agree with StarDist."""
    stardist_matching = pytest.importorskip("stardist.matching")
    y_true = _read_labels(shared_data / "dsb2018_nuclei" / "instances.tif")
    rng = np.random.default_rng(3)
    y_pred = _split(_merge(_dilate(y_true, 2), 20), rng, 0.5)
    thresholds = [0.1, 0.2, 0.3, 0.4, 0.5]
    ours = match_instances(y_true, y_pred, thresholds)
    sd = [s.tp for s in stardist_matching.matching(y_true.astype(np.int32), y_pred.astype(np.int32), thresh=thresholds)]
    np.testing.assert_array_equal(ours.tp, sd)


# ---------------------------------------------------------------- MONAI metrics and Ignite handlers


def _batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Two batches of (pred, label) instance label images (B, 1, H, W) with known per-image mAP."""
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[:48, :48]
    batches = []
    for b in range(2):
        preds, labels = [], []
        for i in range(2 if b == 0 else 1):
            y = np.zeros((48, 48), np.int64)
            for k in range(1, 6):
                cy, cx = rng.integers(6, 42, 2)
                y[((yy - cy) ** 2 + (xx - cx) ** 2 <= 25) & (y == 0)] = k
            p = np.roll(y, i + b, axis=1)
            p[p == 2] = 0
            labels.append(y[None])
            preds.append(p[None])
        batches.append((torch.as_tensor(np.stack(preds)), torch.as_tensor(np.stack(labels)).float()))
    return batches


def test_map_metric_per_image_and_per_threshold() -> None:
    metric = MeanAveragePrecisionMetric()
    expected, expected_ap = [], []
    for pred, label in _batches():
        metric(y_pred=pred, y=label)
        for p, t in zip(pred, label, strict=True):
            r = match_instances(t[0].numpy().astype(np.int64), p[0].numpy())
            expected.append(r.mean_ap)
            expected_ap.append(r.ap)
    np.testing.assert_allclose(metric.get_buffer().squeeze(1).numpy(), expected, atol=1e-12)
    np.testing.assert_allclose(metric.per_threshold.numpy(), np.stack(expected_ap), atol=1e-12)
    assert float(metric.aggregate()) == pytest.approx(np.mean(expected), abs=1e-6)
    # decollated lists of channel-first tensors give the same values
    listed = MeanAveragePrecisionMetric()
    for pred, label in _batches():
        listed(y_pred=list(pred), y=list(label))
    np.testing.assert_allclose(listed.get_buffer().squeeze(1).numpy(), expected, atol=1e-12)
    metric.reset()
    assert metric.per_threshold.shape == (0, 10)
    with pytest.raises(ValueError, match="label images"):
        metric(y_pred=torch.zeros(1, 2, 4, 4), y=torch.zeros(1, 2, 4, 4))


def test_iou_metric_per_image_with_empty_rule() -> None:
    probs = torch.zeros(3, 1, 4, 4)
    target = torch.zeros(3, 1, 4, 4)
    probs[0, 0, :2] = 0.8
    target[0, 0, :1] = 1  # IoU 4 / 8
    target[1, 0, 0, 0] = 1  # nothing predicted: 0
    metric = IoUMetric()  # image 2: both empty, 1
    values = metric(y_pred=probs, y=target)
    np.testing.assert_allclose(values.squeeze(1).numpy(), [0.5, 0.0, 1.0])
    for p, t, v in zip(probs, target, values, strict=True):
        assert iou_score(p, t) == pytest.approx(float(v))
    assert float(metric.aggregate()) == pytest.approx(0.5)


def _run_engine(batches: list, handlers: dict) -> Engine:
    def step(engine: Engine, batch: tuple) -> dict:
        pred, label = batch
        return {"pred": pred, "label": label}

    engine = Engine(step)
    for name, handler in handlers.items():
        handler.attach(engine, name)
    engine.run(batches, max_epochs=1)
    return engine


def test_handlers_on_an_engine_run_equal_the_functions() -> None:
    batches = _batches()
    transform = lambda out: (out["pred"], out["label"])  # noqa: E731
    prob_batches = [((p > 0).float() * 0.9, (t > 0).float()) for p, t in batches]
    engine = _run_engine(batches, {"map": MeanAveragePrecision(output_transform=transform)})
    expected = [mean_average_precision(t[0], p[0]) for pred, label in batches for p, t in zip(pred, label, strict=True)]
    assert engine.state.metrics["map"] == pytest.approx(np.mean(expected), abs=1e-6)
    np.testing.assert_allclose(engine.state.metric_details["map"].squeeze(1).numpy(), expected, atol=1e-12)

    engine = _run_engine(prob_batches, {"iou": IoU(output_transform=transform, save_details=False)})
    expected_iou = [iou_score(p, t) for pred, label in prob_batches for p, t in zip(pred, label, strict=True)]
    assert engine.state.metrics["iou"] == pytest.approx(np.mean(expected_iou), abs=1e-6)


def test_metrics_saver_writes_per_image_csv(tmp_path: Path) -> None:
    from monai.handlers import MetricsSaver

    batches = _batches()
    names = [[f"img{b}_{i}.tif" for i in range(len(pred))] for b, (pred, _) in enumerate(batches)]

    def step(engine: Engine, batch: tuple) -> dict:
        return {"pred": batch[0], "label": batch[1]}

    engine = Engine(step)
    MeanAveragePrecision(output_transform=lambda o: (o["pred"], o["label"])).attach(engine, "map")
    MetricsSaver(
        save_dir=str(tmp_path),
        metrics="*",
        metric_details="*",
        batch_transform=lambda batch: [{"filename_or_obj": n} for n in batch[2]],
    ).attach(engine)
    engine.run([(p, t, n) for (p, t), n in zip(batches, names, strict=True)], max_epochs=1)
    rows = (tmp_path / "map_raw.csv").read_text().strip().splitlines()
    assert rows[0].startswith("filename") and len(rows) == 1 + 3
    assert rows[1].startswith("img0_0.tif")


# ---------------------------------------------------------------- minimum object area


def test_map_by_min_area_equals_filtering_then_scoring() -> None:
    """One overlap table for every minimum area gives the mAP of the filtered prediction, whose objects are
    dropped by :func:`remove_small_instances` (checked against scikit-image's ``remove_small_objects``)."""
    from skimage.morphology import remove_small_objects

    from monai_isl.metrics import map_by_min_area
    from monai_isl.postprocessing import remove_small_instances

    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:160, :160]
    y = np.zeros((160, 160), np.int32)
    for k, (cy, cx) in enumerate(rng.integers(15, 145, (14, 2)), start=1):
        y[(np.hypot(yy - cy, xx - cx) < rng.integers(6, 14)) & (y == 0)] = k
    pred = _spurious(_split(_dilate(np.roll(y, (1, 2), (0, 1)), 1), rng, 0.3), rng, n=25)
    areas = np.bincount(pred.ravel())[1:]
    grid = [0, 5, 30, float(np.median(areas[areas > 0])), float(areas.max()) + 1]
    for a, fast in zip(grid, map_by_min_area(y, pred, grid), strict=True):
        filtered = remove_small_instances(pred, a)
        reference, _, _ = relabel_sequential(remove_small_objects(pred, min_size=int(np.ceil(a))) if a else pred)
        assert np.array_equal(relabel_sequential(filtered)[0], reference), a
        assert fast == pytest.approx(mean_average_precision(y, filtered), abs=1e-12), a
    assert map_by_min_area(y, pred, [0])[0] == pytest.approx(mean_average_precision(y, pred))
    assert remove_small_instances(pred, 0) is pred
    with pytest.raises(ValueError, match="min_area must be a number >= 0 or 'auto'"):
        remove_small_instances(pred, -3)
