"""Calibration of the ISL transfer activation: fit ``sigmoid(slope * (x - shift))`` to the annotated images.

The paper (eq. 1) turns the DAPI predicted by the ISL network into a nucleus probability with the fixed
``sigmoid(x - 0.5)``, because its DAPI images divided by 65535 lie in 0..1. Ours are scaled per image (1st
percentile -> 0, 99.9th -> 1), on which the nucleus labels sit near 0.27, not 0.5, and the output scale of two ISL
checkpoints of equal PCC can differ by 1.5x (PCC ignores scale). With slope 1 the probabilities also stay within
0.38-0.62, so the soft Jaccard loss of the very first step pushes the whole prior around. Fine-tuning then
destroys the head start instead of refining it (measured on ``isl_condition_b``: IoU 0.38-0.41 before
fine-tuning, 0.30-0.32 after; ``../shared/FACTS.md``).

:func:`fit_transfer_activation` chooses, before fine-tuning, the ``shift`` that maximises the IoU of
``x > shift`` with the training labels (the threshold the metric applies to ``sigmoid(...) > 0.5``), and the
``slope`` that minimises the soft Jaccard loss at that shift, so fine-tuning starts where the ISL network is
already at its best. :func:`calibrate_transfer` runs the network over the training images and writes the values
into the network's :class:`~monai_isl.networks.transfer.ShiftedSigmoid` buffers, so they are saved in
``model.pt`` and used by evaluation and inference. ``calibrate: false`` keeps the paper's fixed ``0.5 / 1``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

#: slopes tried for ``sigmoid(slope * (x - shift))`` (1 = the paper's eq. 1)
SLOPE_GRID: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0)
#: histogram bins for the threshold search (over the 0.1 .. 99.9 percentile range of the outputs)
N_BINS = 2048


@dataclass(frozen=True)
class TransferCalibration:
    """The fitted activation and what it scores on the training labels (IoU of ``x > shift``)."""

    shift: float
    slope: float
    train_iou: float
    train_iou_paper: float  # IoU of the paper's fixed x > 0.5 on the same pixels, for the log
    foreground_fraction: float

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}


def _flatten(arrays: Iterable[np.ndarray | torch.Tensor]) -> np.ndarray:
    parts = [
        np.asarray(a.detach().cpu() if isinstance(a, torch.Tensor) else a, dtype=np.float32).ravel() for a in arrays
    ]
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def best_threshold(outputs: np.ndarray, labels: np.ndarray, n_bins: int = N_BINS) -> tuple[float, float]:
    """The threshold ``t`` maximising the pooled IoU of ``outputs > t`` with ``labels > 0``, and that IoU.

    Exact up to the bin width: histograms of the foreground and background values give TP and FP of every
    candidate threshold at once (cumulative sums from the top).
    """
    x, y = np.asarray(outputs, np.float32).ravel(), np.asarray(labels).ravel() > 0
    if x.size != y.size:
        raise ValueError(f"outputs ({x.size} pixels) and labels ({y.size} pixels) differ in size")
    if not y.any():
        raise ValueError("the labels have no foreground pixel: nothing to calibrate the transfer activation on")
    lo, hi = np.percentile(x, [0.1, 99.9])
    if not hi > lo:
        return float(lo), float(np.mean(y) if np.all(x >= lo) else 0.0)
    edges = np.linspace(lo, hi, n_bins + 1)
    pos = np.histogram(np.clip(x[y], lo, hi), bins=edges)[0]
    neg = np.histogram(np.clip(x[~y], lo, hi), bins=edges)[0]
    tp = np.cumsum(pos[::-1])[::-1]  # pixels >= edges[k]
    fp = np.cumsum(neg[::-1])[::-1]
    iou = tp / (fp + y.sum())  # TP / (TP + FP + FN) with FN = P - TP
    # several thresholds can tie (a gap between the classes): take the middle of the best plateau, the choice
    # that stays right when new images move both classes a little
    k = int(np.argmax(iou))
    end = k
    while end + 1 < len(iou) and iou[end + 1] >= iou[k] - 1e-12:
        end += 1
    return float((edges[k] + edges[end]) / 2), float(iou[k])


def soft_jaccard(prob: np.ndarray, labels: np.ndarray, smooth: float = 1.0) -> float:
    """``1 - (sum(p*y) + s) / (sum(p) + sum(y) - sum(p*y) + s)``: the loss nucleus_seg trains with."""
    y = (np.asarray(labels).ravel() > 0).astype(np.float64)
    p = np.asarray(prob, np.float64).ravel()
    inter = float(np.dot(p, y))
    return 1.0 - (inter + smooth) / (p.sum() + y.sum() - inter + smooth)


def fit_transfer_activation(
    outputs: Sequence[np.ndarray | torch.Tensor],
    labels: Sequence[np.ndarray | torch.Tensor],
    slopes: Sequence[float] = SLOPE_GRID,
    fit_slope: bool = True,
) -> TransferCalibration:
    """Fit ``shift`` (best IoU threshold) and ``slope`` (lowest soft Jaccard loss) to ISL outputs and labels.

    Args:
        outputs: the ISL network's raw outputs (predicted stain) on the annotated training images.
        labels: the matching annotations (anything > 0 is foreground), same shapes.
        slopes: the slopes tried; ``fit_slope=False`` keeps 1 (the paper's).

    Raises:
        ValueError: shapes differ, or the labels hold no foreground.
    """
    if len(outputs) != len(labels):
        raise ValueError(f"{len(outputs)} outputs but {len(labels)} label images")
    for i, (o, lab) in enumerate(zip(outputs, labels)):
        if int(np.prod(o.shape)) != int(np.prod(lab.shape)):
            raise ValueError(f"image {i}: output shape {tuple(o.shape)} and label shape {tuple(lab.shape)} differ")
    x, y = _flatten(outputs), _flatten(labels) > 0
    shift, iou = best_threshold(x, y)
    paper = float(np.sum((x > 0.5) & y) / max(np.sum((x > 0.5) | y), 1))
    slope = 1.0
    if fit_slope:
        losses = {s: soft_jaccard(1.0 / (1.0 + np.exp(-s * (x - shift))), y) for s in slopes}
        slope = float(min(losses, key=losses.get))
    return TransferCalibration(shift, slope, iou, paper, float(y.mean()))


def _activation(network: nn.Module) -> nn.Module:
    """The network's :class:`ShiftedSigmoid` (its last module with ``shift`` and ``slope`` buffers)."""
    found = [m for m in network.modules() if hasattr(m, "shift") and hasattr(m, "slope")]
    if not found:
        raise TypeError(f"{type(network).__name__} has no ShiftedSigmoid activation (shift/slope buffers)")
    return found[-1]


def calibrate_transfer(
    network: nn.Module,
    dataset: Iterable[dict[str, Any]],
    inferer: Callable[..., torch.Tensor],
    device: torch.device | str = "cpu",
    enabled: bool = True,
    fit_slope: bool = True,
) -> dict[str, float] | None:
    """Fit the transfer activation of ``network`` on ``dataset`` (whole annotated fields) and store it in place.

    ``network`` is ``Sequential(unet, ShiftedSigmoid)`` (``monai_isl.networks.nucleus_network``); ``dataset`` items
    hold ``image`` (C, H, W) and ``label`` tensors, as the validation pipeline makes them. The unet runs in eval
    mode through ``inferer`` (the sliding window of validation); the values go into the activation's buffers, so
    ``model.pt`` carries them. Returns the fit (also logged), or None when disabled (the paper's fixed 0.5 / 1).
    """
    from .bundle import as_bool

    if not as_bool(enabled):
        act = _activation(network)
        logger.info("transfer activation: fixed shift %.3f, slope %.3f (calibrate false)", act.shift, act.slope)
        return None
    unet = network.module[0] if hasattr(network, "module") else network[0]
    outputs, labels = [], []
    was_training = unet.training
    unet.eval()
    with torch.no_grad():
        for item in dataset:
            items = item if isinstance(item, list) else [item]
            for d in items:
                image = torch.as_tensor(d["image"], dtype=torch.float32)[None].to(device)
                outputs.append(inferer(image, unet).float().cpu().numpy()[0, 0])
                labels.append(np.asarray(d["label"]).reshape(outputs[-1].shape))
    unet.train(was_training)
    fit = fit_transfer_activation(outputs, labels, fit_slope=fit_slope)
    if fit.foreground_fraction < 0.005:
        logger.warning(
            "the training labels mark only %.2f %% of the pixels as objects: the transfer activation is fitted to "
            "very few pixels; annotate an image that shows objects",
            100 * fit.foreground_fraction,
        )
    act = _activation(network)
    act.shift.fill_(fit.shift)
    act.slope.fill_(fit.slope)
    logger.info(
        "transfer activation calibrated on %d training image(s): sigmoid(%.2f * (x - %.3f)); training IoU %.3f "
        "(paper's fixed x > 0.5: %.3f; foreground %.1f %% of the pixels)",
        len(outputs),
        fit.slope,
        fit.shift,
        fit.train_iou,
        fit.train_iou_paper,
        100 * fit.foreground_fraction,
    )
    return fit.as_dict()
