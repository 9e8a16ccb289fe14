"""Instance matching and average precision (AP = TP / (TP + FP + FN)), the paper's instance segmentation score.

A true and a predicted object match when their IoU reaches the threshold; matches are one-to-one and, at
every threshold, as many as possible (a maximum bipartite matching on the pairs with IoU >= t). Above
t = 0.5 a pair with IoU > 0.5 is unique for both objects, so counting such pairs is already the maximum
matching; at or below 0.5 conflicting pairs are resolved with ``scipy.optimize.linear_sum_assignment``,
tie-broken by IoU, exactly as StarDist's ``matching`` and Cellpose's ``average_precision`` do. The counts are
the same as theirs (tested); the overlap matrix comes from one ``np.bincount`` over label pairs instead of a
Python or numba loop over pixels, and IoU is computed in float64 (StarDist uses float32, which can flip a pair
whose IoU equals a threshold exactly).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = [
    "DEFAULT_THRESHOLDS",
    "MatchResult",
    "map_by_min_area",
    "match_instances",
    "mean_average_precision",
    "relabel_sequential",
]

#: IoU thresholds 0.50, 0.55, ..., 0.95 (the Data Science Bowl 2018 / paper convention).
DEFAULT_THRESHOLDS = np.round(np.arange(0.5, 1.0, 0.05), 2)

# the joint histogram of id pairs is dense (one np.bincount over all pixels) while it has at most
# min(2 * pixels + _DENSE_SLACK, _DENSE_LIMIT) cells: about one more pass over the image, 256 MB of int64 at most
_DENSE_LIMIT = 1 << 25
_DENSE_SLACK = 1 << 16


@dataclass(frozen=True)
class MatchResult:
    """Per-threshold matching counts between a true and a predicted instance label image."""

    thresholds: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    ap: np.ndarray
    n_true: int
    n_pred: int

    @property
    def mean_ap(self) -> float:
        """Mean of ``ap`` over the thresholds (the paper's mAP)."""
        return float(np.mean(self.ap))


def _as_label_array(labels: np.ndarray, name: str) -> np.ndarray:
    """Integer numpy view of a label image (torch tensors and integral floats accepted)."""
    if hasattr(labels, "detach"):  # torch tensor, without importing torch here
        labels = labels.detach().cpu().numpy()
    labels = np.asarray(labels)
    if labels.dtype == bool:
        return labels.astype(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        rounded = np.rint(labels)
        if not np.array_equal(rounded, labels):
            raise ValueError(f"{name} must hold integer instance labels, got non-integral {labels.dtype} values")
        labels = rounded.astype(np.int64)
    if labels.size and labels.min() < 0:
        raise ValueError(f"{name} must hold non-negative instance labels")
    return labels


def relabel_sequential(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Flattened labels renumbered 1..n in order of their id (0 stays background), and n.

    Uses a lookup table (O(pixels + max id)) when the ids are not much larger than the image, else
    ``np.unique`` (a sort), so ids such as 4_000_000_000 in uint32 images still work.
    """
    flat = np.ravel(labels)
    if flat.size == 0:
        return flat.astype(np.int64), 0
    max_id = int(flat.max())
    if max_id <= 2 * flat.size + 1024:
        present = np.bincount(flat, minlength=max_id + 1) > 0
        present[0] = False
        lut = np.cumsum(present, dtype=np.int64)
        lut[~present] = 0
        return lut[flat], int(present.sum())
    ids, inverse = np.unique(flat, return_inverse=True)
    inverse = inverse.astype(np.int64).ravel()
    if ids[0] != 0:
        return inverse + 1, len(ids)
    return inverse, len(ids) - 1


def _dense_ok(n_cells: int, n_pixels: int) -> bool:
    """Whether a dense joint histogram of ``n_cells`` cells is cheap next to a pass over ``n_pixels`` pixels."""
    return n_cells <= min(2 * n_pixels + _DENSE_SLACK, _DENSE_LIMIT)


def _pair_counts(
    true_ids: np.ndarray, true_range: int, pred_ids: np.ndarray, pred_range: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(true id, pred id, overlap) of every overlapping foreground pair, and the areas indexed by id.

    Ids must lie in ``[0, true_range)`` and ``[0, pred_range)``. While the ``true_range x pred_range`` table is
    small (:func:`_dense_ok`) one ``np.bincount`` over ``true * pred_range + pred`` counts every pair, background
    included, and the areas are its row and column sums; otherwise the foreground pairs are counted by sorting.
    """
    n_pixels = true_ids.size
    if _dense_ok(true_range * pred_range, n_pixels):
        key = np.multiply(true_ids, pred_range, dtype=np.intp, casting="unsafe")
        np.add(key, pred_ids, out=key, dtype=np.intp, casting="unsafe")
        counts = np.bincount(key.ravel(), minlength=true_range * pred_range)
        table = counts.reshape(true_range, pred_range)
        area_true, area_pred = table.sum(axis=1), table.sum(axis=0)
        key = np.flatnonzero(counts)
        inter = counts[key]
    else:
        true_ids, pred_ids = np.ravel(true_ids), np.ravel(pred_ids)
        area_true = np.bincount(true_ids, minlength=true_range)
        area_pred = np.bincount(pred_ids, minlength=pred_range)
        fg = (true_ids > 0) & (pred_ids > 0)
        key = true_ids[fg].astype(np.intp) * pred_range + pred_ids[fg]
        key, inter = np.unique(key, return_counts=True)
    ti, pj = np.divmod(key, pred_range)
    fg = (ti > 0) & (pj > 0)
    return ti[fg], pj[fg], inter[fg], area_true, area_pred


def _overlap_pairs(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """(true id, pred id, IoU) of every pair of foreground objects that overlap, n_true and n_pred.

    Label ids are used as they are when the table of id pairs is small (one counting pass, no relabelling);
    large or sparse ids (e.g. 4_000_000_000 in uint32) are renumbered 1..n first (:func:`relabel_sequential`).
    """
    if y_true.size == 0:
        return *(np.zeros(0, np.intp),) * 2, np.zeros(0), 0, 0
    true_range, pred_range = int(y_true.max()) + 1, int(y_pred.max()) + 1
    if not _dense_ok(true_range * pred_range, y_true.size):
        y_true, n_true = relabel_sequential(y_true)
        y_pred, n_pred = relabel_sequential(y_pred)
        true_range, pred_range = n_true + 1, n_pred + 1
    ti, pj, inter, area_true, area_pred = _pair_counts(y_true, true_range, y_pred, pred_range)
    n_true, n_pred = int(np.count_nonzero(area_true[1:])), int(np.count_nonzero(area_pred[1:]))
    iou = inter / (area_true[ti] + area_pred[pj] - inter).astype(np.float64)
    return ti, pj, iou, n_true, n_pred


def _max_matching(ti: np.ndarray, pj: np.ndarray, iou: np.ndarray) -> int:
    """Size of a maximum one-to-one matching among the given candidate pairs."""
    if ti.size == 0:
        return 0
    _, row_inv, row_cnt = np.unique(ti, return_inverse=True, return_counts=True)
    _, col_inv, col_cnt = np.unique(pj, return_inverse=True, return_counts=True)
    alone = (row_cnt[row_inv] == 1) & (col_cnt[col_inv] == 1)
    n_alone = int(alone.sum())
    if n_alone == ti.size:
        return n_alone
    # the conflicting pairs: solve the assignment on their rows and columns only (StarDist's cost and tie-break)
    conflict = ~alone
    r_ids, r_idx = np.unique(row_inv[conflict], return_inverse=True)
    c_ids, c_idx = np.unique(col_inv[conflict], return_inverse=True)
    n_min = min(len(r_ids), len(c_ids))
    costs = np.zeros((len(r_ids), len(c_ids)))
    costs[r_idx, c_idx] = -1.0 - iou[conflict] / (2 * n_min)
    r, c = linear_sum_assignment(costs)
    return n_alone + int(np.count_nonzero(costs[r, c] < 0))


def match_instances(
    y_true: np.ndarray, y_pred: np.ndarray, thresholds: np.ndarray | list[float] | float = DEFAULT_THRESHOLDS
) -> MatchResult:
    """Match the objects of two instance label images (2D or 3D, any integer dtype, ids need not be consecutive).

    For each IoU threshold ``t``: ``tp`` = size of a maximum one-to-one matching among pairs with IoU >= t,
    ``fp = n_pred - tp``, ``fn = n_true - tp``, ``ap = tp / (tp + fp + fn)``.

    Empty images: both empty gives ``ap = 1`` at every threshold, exactly one empty gives ``ap = 0``. This is the
    paper's IoU rule (nothing to find and nothing found is a perfect answer). StarDist returns 0 (its
    ``accuracy`` is 0 whenever tp = 0) and Cellpose NaN (0 / 0) for two empty images; 0 would punish a correct
    "no cell here" on an empty crop, NaN would silently drop that image from a mean. With any object on either
    side the three agree.
    """
    y_true = _as_label_array(y_true, "y_true")
    y_pred = _as_label_array(y_pred, "y_pred")
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred must have the same shape, got {y_true.shape} and {y_pred.shape}")
    thr = np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
    ti, pj, iou, n_true, n_pred = _overlap_pairs(y_true, y_pred)
    return _result(ti, pj, iou, n_true, n_pred, thr)


def _result(ti: np.ndarray, pj: np.ndarray, iou: np.ndarray, n_true: int, n_pred: int, thr: np.ndarray) -> MatchResult:
    tp = np.zeros(len(thr), dtype=np.int64)
    if n_true and n_pred:
        for k, t in enumerate(thr):
            sel = iou >= t
            # above 0.5 every such pair is unique for both of its objects: the count is the maximum matching
            tp[k] = np.count_nonzero(sel) if t > 0.5 else _max_matching(ti[sel], pj[sel], iou[sel])
    fp = n_pred - tp
    fn = n_true - tp
    denominator = tp + fp + fn
    ap = np.where(denominator > 0, tp / np.maximum(denominator, 1), 1.0).astype(np.float64)
    return MatchResult(thresholds=thr, tp=tp, fp=fp, fn=fn, ap=ap, n_true=n_true, n_pred=n_pred)


def map_by_min_area(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    min_areas: np.ndarray | list[float],
    thresholds: np.ndarray | list[float] | float = DEFAULT_THRESHOLDS,
) -> np.ndarray:
    """mAP of ``y_pred`` without its objects of fewer than ``a`` pixels, for each ``a`` in ``min_areas``.

    The same numbers as ``mean_average_precision(y_true, remove_small_instances(y_pred, a))`` for each ``a``
    (:func:`monai_isl.postprocessing.remove_small_instances`), from one overlap table: dropping a predicted
    object changes no other pair's IoU, so each ``a`` only filters the candidate pairs and the count of
    predictions. For fitting a minimum object area (:mod:`monai_isl.instance_fit`).
    """
    y_true = _as_label_array(y_true, "y_true")
    y_pred = _as_label_array(y_pred, "y_pred")
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred must have the same shape, got {y_true.shape} and {y_pred.shape}")
    thr = np.atleast_1d(np.asarray(thresholds, dtype=np.float64))
    flat, n_pred = relabel_sequential(y_pred)
    y_pred = flat.reshape(y_pred.shape)
    area = np.bincount(flat, minlength=n_pred + 1)
    ti, pj, iou, n_true, _ = _overlap_pairs(y_true, y_pred)
    out = []
    for a in np.atleast_1d(np.asarray(min_areas, dtype=np.float64)):
        kept = area >= a
        kept[0] = False
        sel = kept[pj]
        out.append(_result(ti[sel], pj[sel], iou[sel], n_true, int(kept.sum()), thr).mean_ap)
    return np.array(out)


def mean_average_precision(
    y_true: np.ndarray, y_pred: np.ndarray, thresholds: np.ndarray | list[float] | float = DEFAULT_THRESHOLDS
) -> float:
    """Mean over ``thresholds`` of AP = TP / (TP + FP + FN); see :func:`match_instances` for the rules."""
    return match_instances(y_true, y_pred, thresholds).mean_ap
