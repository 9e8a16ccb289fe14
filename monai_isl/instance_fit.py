"""``h: auto``: the h-maxima depth (and distance smoothing) that maximise mAP on annotated fields, for *this* model.

The post-processing's ``h`` is on the distance map's scale. The target peaks at 255 in every cell, but a trained
network's prediction need not: early or small runs predict a scaled-down copy (a model at today's defaults scored
mAP 0.137 at h = 10 but 0.063 at h = 30), and even on the true target h = 10 splits cells (Usiigaci: mAP 0.52 at
h = 10, 0.79 at 30, 0.87 at 60). :func:`fit_watershed_params` therefore searches ``h`` on a grid made of fractions
of the predicted distance's own scale (99th percentile inside the predicted mask) plus absolute values, and
optionally a Gaussian sigma for the predicted distance, keeping a sigma > 0 only when it beats no smoothing by
``min_sigma_gain``, and jointly a minimum object area relative to each field (:data:`DEFAULT_MIN_AREA_FRACTIONS`
of the field's own typical predicted object; objects below it are dropped: a trained network's extra objects are
mostly specks, and a pixel count carried from fields of large cells deletes the cells of a field of small ones,
see :mod:`monai_isl.postprocessing`). :func:`fit_network_watershed` runs a network over datalist items (whole fields
through a sliding-window inferer), fits, and stores the result in the network's
:class:`~monai_isl.networks.transfer.CellOutput` buffers (and in ``model.pt``), where
``HMaximaWatershedd(h="auto")`` finds it.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .metrics.instance import map_by_min_area, mean_average_precision
from .postprocessing import fitted_instances, hmaxima_watershed, smooth_distance, typical_object_area
from .transforms.instance import instance_distance

__all__ = [
    "DEFAULT_H_ABSOLUTE",
    "DEFAULT_H_FRACTIONS",
    "DEFAULT_MIN_AREA_FRACTIONS",
    "DEFAULT_SIGMAS",
    "fit_network_watershed",
    "fit_watershed_params",
    "fixed_or_fitted",
    "h_grid_for",
    "min_area_grid_for",
    "predict_fields",
    "store_watershed_params",
    "trained_area_range",
]

logger = logging.getLogger(__name__)

#: fractions of the predicted distance's scale (99th percentile inside the predicted mask)
DEFAULT_H_FRACTIONS = (0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.12, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)
#: absolute depths on the 0..255 target scale (the paper's 10 among them)
DEFAULT_H_ABSOLUTE = (2.0, 5.0, 10.0, 20.0, 30.0, 45.0, 60.0, 90.0)
#: Gaussian sigmas (pixels) tried for the predicted distance. Smoothing did not help in
#: benchmarks/bench_cell_head.py (sigma 1 and 2 never beat sigma 0 by 0.005 on any variant), so none by default;
#: pass e.g. ``sigmas=(0.0, 1.0, 2.0)`` to search it.
DEFAULT_SIGMAS = (0.0,)
#: minimum object areas tried, as fractions of each field's typical predicted object
#: (:func:`~monai_isl.postprocessing.typical_object_area`; 0: keep every object). The grid was first set as
#: fractions of the annotated cells' median area, in pixels, where on Usiigaci (random init, all 24 training
#: fields) the model's unmatched objects had a median area of 20-70 px
#: (``docs/results/real_cell_cpu400/small_objects.py``); fitted on those 24 fields (median cell 2,459 px) the mAP
#: rose from 0.222 (every object) to 0.307 / 0.338 / 0.342 / 0.339 / 0.328 / 0.294 at 0.05 / 0.2 / 0.3 / 0.4 /
#: 0.5 / 0.7 x the median: a broad optimum, which this grid spans, stopping at half a cell.
DEFAULT_MIN_AREA_FRACTIONS = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5)


def _prob(mask: np.ndarray) -> np.ndarray:
    return np.asarray(mask, dtype=np.float32)


def h_grid_for(
    distances: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    mask_threshold: float = 0.5,
    fractions: Sequence[float] = DEFAULT_H_FRACTIONS,
    absolute: Sequence[float] = DEFAULT_H_ABSOLUTE,
) -> tuple[np.ndarray, float]:
    """The h grid for these predictions and their scale: ``fractions * p99`` (99th percentile of the distance in
    the predicted mask, all images pooled) plus the ``absolute`` values up to that scale, sorted, with 0."""
    inside = [np.asarray(d)[_prob(m) > mask_threshold] for d, m in zip(distances, masks)]
    pooled = np.concatenate([v.ravel() for v in inside]) if inside else np.zeros(0)
    scale = float(np.percentile(pooled, 99)) if pooled.size else 0.0
    grid = {0.0}
    if scale > 0 and math.isfinite(scale):
        grid.update(float(f) * scale for f in fractions)
        grid.update(float(a) for a in absolute if a <= scale)
    return np.array(sorted(grid)), scale


def fixed_or_fitted(setting: Any) -> list[float] | None:
    """A bundle setting as a search grid: None for ``"auto"`` (search the default grid), else ``[the number]``
    (fit the other parameters with this one fixed)."""
    if isinstance(setting, str) and setting.strip().lower() == "auto":
        return None
    return [float(setting)]


def min_area_grid_for(
    labels: Sequence[np.ndarray], fractions: Sequence[float] = DEFAULT_MIN_AREA_FRACTIONS
) -> tuple[np.ndarray, float]:
    """The minimum-area grid ``fractions * median`` (median pixel area of the annotated objects, all images
    pooled; 0 always included), and that median (0 without any object)."""
    areas = [np.bincount(np.asarray(y).ravel().astype(np.int64))[1:] for y in labels]
    pooled = np.concatenate(areas) if areas else np.zeros(0)
    pooled = pooled[pooled > 0]
    median = float(np.median(pooled)) if pooled.size else 0.0
    return np.array(sorted({0.0} | {round(float(f) * median, 1) for f in fractions})), median


def _mean_map(
    distances: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    h: float,
    mask_threshold: float,
    method: str,
) -> float:
    scores = [
        mean_average_precision(y, hmaxima_watershed(d, m, h=h, mask_threshold=mask_threshold, method=method))
        for d, m, y in zip(distances, masks, labels)
    ]
    return float(np.mean(scores))


def fit_watershed_params(
    distances: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    h_grid: Sequence[float] | None = None,
    sigmas: Sequence[float] = DEFAULT_SIGMAS,
    mask_threshold: float = 0.5,
    min_sigma_gain: float = 0.005,
    target_distances: Sequence[np.ndarray] | None = None,
    method: str = "auto",
    min_areas: Sequence[float] | None = None,
    min_area_fractions: Sequence[float] = DEFAULT_MIN_AREA_FRACTIONS,
) -> dict[str, Any]:
    """The ``h``, ``sigma`` and ``min_area`` maximising mean mAP@0.5:0.95 of ``hmaxima_watershed`` against ``labels``.

    Args:
        distances: the model's predicted distance maps (2D), one per annotated image.
        masks: its mask probabilities (2D, same shapes).
        labels: the true instance labels.
        h_grid: the h values to try; None: :func:`h_grid_for` (relative to the prediction's own scale, so a
            scaled-down prediction gets a scaled-down h).
        sigmas: Gaussian sigmas (pixels) for the predicted distance; a sigma > 0 is kept only when its best mAP
            exceeds the best without smoothing by ``min_sigma_gain``.
        target_distances: the true distance maps (e.g. :func:`~monai_isl.transforms.instance_distance`); if
            given, the h that is best on the perfect target (with the true mask) is reported as a reference.
        min_areas: minimum object areas in pixels to try, jointly with h (``(0,)``: keep every object, the
            paper); None (default): a minimum relative to each field, ``min_area_fractions`` of its own
            :func:`~monai_isl.postprocessing.typical_object_area`, so that a field of smaller cells keeps them.
        min_area_fractions: the fractions tried when ``min_areas`` is None (0 always included).

    Returns:
        ``{"h", "sigma", "min_area", "min_area_fraction", "map", "map_all_objects", "scale", "median_area",
        "map_h10", "table"}``: relative fit: ``min_area`` 0 and the fraction; pixel fit: ``min_area`` and
        ``min_area_fraction`` None. ``map_all_objects``: the best mAP with every object kept; ``table``:
        ``(sigma, h, min_area or fraction, mAP)`` rows; ``map_h10``: mAP at sigma 0, h 10, every object kept; with
        targets also ``"target": {"h", "map", "map_h10"}``. Ties go to the smaller sigma, h, then minimum area.
    """
    if not (len(distances) == len(masks) == len(labels)) or not distances:
        raise ValueError("need as many distances, masks and labels, at least one")
    distances = [np.asarray(d, dtype=np.float32) for d in distances]
    masks = [_prob(m) for m in masks]
    labels = [np.asarray(y) for y in labels]
    grid, scale = h_grid_for(distances, masks, mask_threshold)
    if h_grid is not None:
        grid = np.array(sorted({float(h) for h in h_grid}))
    _, median_area = min_area_grid_for(labels)
    relative = min_areas is None
    if relative:  # fractions of each field's own typical predicted object (postprocessing.typical_object_area)
        area_grid = np.array(sorted({0.0} | {float(f) for f in min_area_fractions}))
    else:
        area_grid = np.array(sorted({float(a) for a in min_areas}))
    if area_grid.size == 0 or area_grid.min() < 0 or not np.isfinite(area_grid).all():
        raise ValueError(f"min_areas / min_area_fractions must be numbers >= 0, got {list(area_grid)}")
    table: list[tuple[float, float, float, float]] = []
    best_by_sigma: dict[float, tuple[float, float, float]] = {}
    best_all_objects = -1.0
    for sigma in sorted({float(s) for s in sigmas} | {0.0}):
        smoothed = [smooth_distance(d, sigma) for d in distances]
        for h in grid:
            per_image = []
            for d, m, y in zip(smoothed, masks, labels):
                pred = hmaxima_watershed(d, m, h=float(h), mask_threshold=mask_threshold, method=method)
                pixels = area_grid * typical_object_area(pred) if relative else area_grid
                per_image.append(map_by_min_area(y, pred, pixels))
            scores = np.mean(per_image, axis=0)
            for a, score in zip(area_grid, scores):
                table.append((sigma, float(h), float(a), float(score)))
                if sigma not in best_by_sigma or score > best_by_sigma[sigma][2]:
                    best_by_sigma[sigma] = (float(h), float(a), float(score))
            if sigma == 0.0 and area_grid[0] == 0.0:
                best_all_objects = max(best_all_objects, float(scores[0]))
    sigma, (h, min_area, score) = 0.0, best_by_sigma[0.0]
    for s, (hs, a_s, sc) in sorted(best_by_sigma.items()):
        if s > 0 and sc > score + min_sigma_gain:
            sigma, h, min_area, score = s, hs, a_s, sc
    result: dict[str, Any] = {
        "h": h,
        "sigma": sigma,
        "min_area": 0.0 if relative else min_area,
        "min_area_fraction": min_area if relative else None,
        "map": score,
        "map_all_objects": best_all_objects if best_all_objects >= 0 else None,
        "scale": scale,
        "median_area": median_area,
        "map_h10": _mean_map(distances, masks, labels, 10.0, mask_threshold, method),
        "table": table,
    }
    if target_distances is not None:
        truth = [np.asarray(t, dtype=np.float32) for t in target_distances]
        true_masks = [(y > 0).astype(np.float32) for y in labels]
        t_grid, _ = h_grid_for(truth, true_masks, 0.5)
        t_scores = [(_mean_map(truth, true_masks, labels, float(t), 0.5, method), -float(t)) for t in t_grid]
        t_score, t_h = max(t_scores)
        result["target"] = {
            "h": -t_h,
            "map": t_score,
            "map_h10": _mean_map(truth, true_masks, labels, 10.0, 0.5, method),
        }
    return result


def store_watershed_params(
    network: nn.Module,
    h: float,
    sigma: float = 0.0,
    min_area: float = 0.0,
    min_area_fraction: float | None = None,
    area_range: tuple[float, float] | None = None,
) -> int:
    """Write ``h``, ``sigma``, ``min_area`` (pixels), ``min_area_fraction`` and ``area_range`` (the typical object
    areas the network segments, :mod:`monai_isl.scale`; None: none) into every ``CellOutput`` of ``network``;
    returns how many.

    Raises ValueError if the network has none (built before ``CellOutput``: rebuild it with ``cell_network``).
    """
    from .networks.transfer import NOT_FITTED, cell_outputs

    outputs = cell_outputs(network)
    if not outputs:
        raise ValueError("the network has no CellOutput module to store h in; build it with cell_network()")
    with torch.no_grad():
        for module in outputs:
            module.watershed_h.fill_(float(h))
            module.watershed_sigma.fill_(float(sigma))
            module.watershed_min_area.fill_(float(min_area))
            module.watershed_min_area_fraction.fill_(
                NOT_FITTED if min_area_fraction is None else float(min_area_fraction)
            )
            low, high = (NOT_FITTED, NOT_FITTED) if area_range is None else (float(v) for v in area_range)
            module.watershed_area_low.fill_(low)
            module.watershed_area_high.fill_(high)
    return len(outputs)


def predict_fields(
    network: nn.Module,
    items: Sequence[dict],
    preprocessing: Callable[[dict], dict],
    inferer: Callable[..., torch.Tensor],
    device: Any = None,
    label_key: str = "instances",
    distance_channel: int = 0,
    mask_channel: int = 1,
) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Distance maps, mask probabilities (sigmoid of the mask logit) and labels of whole fields.

    Each datalist item goes through ``preprocessing`` (it must give ``image`` ``(C, H, W)`` and the instance
    labels under ``label_key``), then ``inferer(image[None], network)`` in eval mode without gradients.
    """
    first = next(iter(network.parameters()), None)
    device = torch.device(device) if device is not None else (first.device if first is not None else "cpu")
    was_training = network.training
    network.eval()
    distances, masks, labels = [], [], []
    try:
        with torch.no_grad():
            for item in items:
                d = preprocessing(dict(item))
                if isinstance(d, list):
                    raise ValueError("preprocessing must give one whole field per item, not crops")
                image = torch.as_tensor(d["image"]).float()[None].to(device)
                pred = inferer(image, network)[0].float().cpu()
                distances.append(pred[distance_channel].numpy())
                masks.append(torch.sigmoid(pred[mask_channel]).numpy())
                y = d[label_key]
                y = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
                labels.append(y.reshape(y.shape[-2:]))
    finally:
        network.train(was_training)
    return distances, masks, labels


#: the CellOutput buffers a fit writes back into ``model.pt``
_STORED_BUFFERS = (
    "watershed_h",
    "watershed_sigma",
    "watershed_min_area",
    "watershed_min_area_fraction",
    "watershed_area_low",
    "watershed_area_high",
    "distance_gain",
    "distance_offset",
)


def _load_model_state(path: Path) -> tuple[Any, dict]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        return state, state["model"]
    return state, state


def trained_area_range(
    distances: Sequence[np.ndarray], masks: Sequence[np.ndarray], fitted: dict[str, Any], mask_threshold: float = 0.5
) -> tuple[float, float] | None:
    """The cell sizes the network segments: the quartiles over ``distances`` / ``masks`` (the fit fields) of the
    typical object area of their segmentation with the ``fitted`` values (None without objects). Fields whose
    typical object lies outside are resampled at inference (:class:`monai_isl.scale.ObjectScaleInferer`)."""
    areas = []
    for d, m in zip(distances, masks):
        labels = fitted_instances(
            d, m, fitted["h"], fitted["sigma"], fitted["min_area"], fitted["min_area_fraction"] or 0.0, mask_threshold
        )
        area = typical_object_area(labels)
        if area > 0:
            areas.append(area)
    if not areas:
        return None
    return float(np.percentile(areas, 25)), float(np.percentile(areas, 75))


def _min_area_text(result: dict[str, Any]) -> str:
    fraction = result.get("min_area_fraction")
    if fraction is None:
        return f"{result['min_area']:g} px"
    return f"{fraction:g} x each field's typical object"


def fit_network_watershed(
    network: nn.Module,
    items: Sequence[dict],
    preprocessing: Callable[[dict], dict],
    inferer: Callable[..., torch.Tensor],
    checkpoint: str | os.PathLike | None = None,
    device: Any = None,
    label_key: str = "instances",
    sigmas: Sequence[float] = DEFAULT_SIGMAS,
    mask_threshold: float = 0.5,
    reference: bool = True,
    distance_mode: str = "per_instance",
    distance_factor: float = 1.0,
    min_areas: Sequence[float] | None = None,
    h_grid: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Fit ``h`` / ``sigma`` / ``min_area`` for ``network`` on annotated ``items``; store them in it and ``checkpoint``.

    For the train config, after ``trainer.run()``: ``checkpoint`` (the best model, ``models/model.pt``) is
    loaded into ``network`` first if it exists, the fields are predicted whole with ``inferer``
    (:func:`predict_fields`), :func:`fit_watershed_params` picks the values, they are written into the
    network's ``CellOutput`` buffers and ``checkpoint`` is rewritten (atomically, same layout) with them, so that
    evaluation, inference and a TorchScript export read them back with ``h: auto``. ``reference``: also report
    the best h on the true targets (``distance_mode`` / ``distance_factor`` as in training). ``min_areas`` and
    ``h_grid``: as in :func:`fit_watershed_params` (a number the user gave instead of ``auto``: ``[that number]``,
    see :func:`fixed_or_fitted`).
    Logged and returned.
    """
    network = getattr(network, "module", network)  # DistributedDataParallel: the network it wraps
    path = Path(checkpoint) if checkpoint is not None else None
    if path is not None and path.is_file():
        _, model_state = _load_model_state(path)
        network.load_state_dict(model_state)
    distances, masks, labels = predict_fields(network, items, preprocessing, inferer, device, label_key)
    targets = [instance_distance(y, mode=distance_mode, factor=distance_factor) for y in labels] if reference else None
    result = fit_watershed_params(
        distances,
        masks,
        labels,
        sigmas=sigmas,
        mask_threshold=mask_threshold,
        target_distances=targets,
        min_areas=min_areas,
        h_grid=h_grid,
    )
    result["area_range"] = trained_area_range(distances, masks, result, mask_threshold)
    store_watershed_params(
        network, result["h"], result["sigma"], result["min_area"], result["min_area_fraction"], result["area_range"]
    )
    if path is not None and path.is_file():
        whole, model_state = _load_model_state(path)
        for name, buf in network.state_dict().items():
            if name.endswith(_STORED_BUFFERS):
                model_state[name] = buf.detach().cpu().clone()
        tmp = path.with_name(path.name + ".fit.tmp")
        torch.save(whole, tmp)
        os.replace(tmp, path)
    all_objects = result["map_all_objects"]
    msg = (
        f"h auto: h={result['h']:.3g} sigma={result['sigma']:g} min_area={_min_area_text(result)} "
        f"mAP={result['map']:.3f} (every object kept: {'-' if all_objects is None else f'{all_objects:.3f}'}; "
        f"h=10: {result['map_h10']:.3f}; predicted distance scale p99={result['scale']:.3g}; median annotated "
        f"object {result['median_area']:.0f} px) on {len(items)} fields"
    )
    if result["area_range"] is not None:
        msg += "; typical predicted object {:.0f}-{:.0f} px (quartiles over the fields)".format(*result["area_range"])
    if "target" in result:
        t = result["target"]
        msg += f"; true targets: best h={t['h']:.3g} mAP={t['map']:.3f} (h=10: {t['map_h10']:.3f})"
    logger.info(msg)
    print(msg)
    return result
