"""Plain warnings on implausible segmentations: an empty prediction, or one object covering most of the field.

A model that learnt nothing (too few epochs, a wrong ``--h``, inputs scaled differently from training) still
writes files and scores; an all-background mask or one giant "cell" is easy to miss in a folder of TIFFs.
:class:`SegmentationSanity` looks at every predicted field of an evaluation or inference run and logs a warning
naming it, and at the end of the run prints one summary line on stderr. It never stops the run. With labels
(evaluation) a field is flagged only where the labels say otherwise (a truly empty field predicted empty is fine);
without labels (inference) an empty or giant prediction is always called suspicious.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine

from .run import RunHandler

logger = logging.getLogger(__name__)

__all__ = ["SegmentationSanity", "field_problem"]


def _numpy(x: Any) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return arr.reshape(arr.shape[-2:]) if arr.ndim > 2 and int(np.prod(arr.shape[:-2])) == 1 else arr


def _stats(array: np.ndarray, kind: str, threshold: float) -> tuple[bool, float]:
    """(empty, the largest object's share of the field): the whole foreground for a mask, one id for instances."""
    if kind == "mask":
        foreground = array > threshold
        return not foreground.any(), float(foreground.mean()) if foreground.size else 0.0
    ids = array.astype(np.int64, copy=False).ravel()
    ids = ids[ids > 0]
    if ids.size == 0:
        return True, 0.0
    return False, float(np.bincount(ids).max() / array.size)


def field_problem(
    pred: Any,
    label: Any | None = None,
    kind: str = "mask",
    threshold: float = 0.5,
    max_fraction: float | None = None,
) -> str | None:
    """What looks wrong with one predicted field, or None.

    Args:
        pred: the prediction, ``(H, W)`` or ``(1, H, W)``: probabilities / a 0-1 mask (``kind="mask"``) or
            instance labels (``kind="instances"``, 0 = background).
        label: the true mask or labels of the field, or None (inference).
        kind: ``mask`` or ``instances``.
        threshold: foreground of a mask (and of a mask label): ``value > threshold``.
        max_fraction: share of the field above which one object is suspicious; default 0.8 for a mask (all
            nuclei together), 0.5 for one instance.
    """
    if kind not in ("mask", "instances"):
        raise ValueError(f"kind {kind!r}: expected 'mask' or 'instances'")
    limit = (0.8 if kind == "mask" else 0.5) if max_fraction is None else float(max_fraction)
    empty, largest = _stats(_numpy(pred), kind, threshold)
    true_empty, true_largest = (None, None) if label is None else _stats(_numpy(label), kind, threshold)
    what = "the nucleus mask" if kind == "mask" else "one object"
    if empty and not true_empty:
        return "empty prediction (no object found)" + ("" if label is None else ", while the labels hold objects")
    if not empty and largest > limit and (true_largest is None or true_largest <= limit):
        return f"{what} covers {largest:.0%} of the field" + ("" if label is None else f" (labels: {true_largest:.0%})")
    return None


class SegmentationSanity(RunHandler):
    """Ignite handler: warn about empty or giant predictions of each field, and summarise them at the end.

    Reads ``pred_key`` (and ``label_key`` when set and present) from every decollated item of
    ``engine.state.output``; the item's or batch item's ``name`` identifies the field.

    Args:
        pred_key: the predicted mask (``kind="mask"``) or instance labels (``kind="instances"``).
        label_key: the true mask or labels (evaluation); None for inference.
        kind: ``mask`` or ``instances``.
        threshold: foreground of a mask: ``value > threshold``.
        max_fraction: see :func:`field_problem`.
    """

    def __init__(
        self,
        pred_key: str = "pred",
        label_key: str | None = None,
        kind: str = "mask",
        threshold: float = 0.5,
        max_fraction: float | None = None,
    ) -> None:
        if kind not in ("mask", "instances"):
            raise ValueError(f"kind {kind!r}: expected 'mask' or 'instances'")
        self.pred_key, self.label_key, self.kind = pred_key, label_key, kind
        self.threshold, self.max_fraction = float(threshold), max_fraction
        self.flagged: list[tuple[str, str]] = []
        self.seen = 0

    def started(self, engine: Engine | None = None) -> None:
        self.flagged, self.seen = [], 0

    def iteration_completed(self, engine: Engine) -> None:
        """Check every field of the iteration's output; log a warning for each suspicious one."""
        output, batch = engine.state.output, engine.state.batch
        outputs = output if isinstance(output, list) else [output]
        batches = batch if isinstance(batch, list) else [batch] * len(outputs)
        for item, source in zip(outputs, batches):
            if not isinstance(item, dict) or self.pred_key not in item:
                continue
            self.seen += 1
            label = item.get(self.label_key) if self.label_key else None
            problem = field_problem(item[self.pred_key], label, self.kind, self.threshold, self.max_fraction)
            if problem is None:
                continue
            name = item.get("name", source.get("name") if isinstance(source, dict) else None)
            name = str(name if name is not None else f"field {self.seen}")
            self.flagged.append((name, problem))
            logger.warning(f"suspicious result for '{name}': {problem}; {self._advice()}")

    def _advice(self) -> str:
        if self.label_key is None:
            return "check the image and the model (trained enough? the same kind of images and channels?)"
        return "check the model (trained enough?) and the inputs (the same channels and scale as in training)"

    def completed(self, engine: Engine | None = None) -> None:
        """Print one line on stderr when some fields were flagged (the warnings above name them)."""
        if not self.flagged:
            return
        names = ", ".join(name for name, _ in self.flagged[:5]) + (", ..." if len(self.flagged) > 5 else "")
        print(
            f"monai-isl: warning: {len(self.flagged)} of {self.seen} field(s) look suspicious (empty, or one object "
            f"covering most of the field): {names}; see the warnings above",
            file=sys.stderr,
            flush=True,
        )
