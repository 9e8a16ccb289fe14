"""Per-image instance-segmentation report: TP/FP/FN and AP at every IoU threshold, written as CSV tables."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

from ..metrics.instance import DEFAULT_THRESHOLDS, match_instances


def _numpy_labels(x: Any) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return arr[0] if arr.ndim == 3 else arr


class InstanceReport:
    """Write ``<output_dir>/<prefix>_per_threshold.csv`` (one row per image and threshold: TP, FP, FN, AP) and
    ``<prefix>_ap_table.csv`` (one row per image: AP at each threshold and mAP, then mean and std rows).

    Reads ``pred_key`` (predicted instance labels) and ``label_key`` (true instance labels) from every decollated
    item of ``engine.state.output``; the ``name`` of the matching ``engine.state.batch`` item identifies the image.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        pred_key: str = "pred_instances",
        label_key: str = "instances",
        thresholds: np.ndarray | list[float] = DEFAULT_THRESHOLDS,
        prefix: str = "test",
    ) -> None:
        self.output_dir = Path(output_dir)
        self.pred_key, self.label_key, self.prefix = pred_key, label_key, prefix
        self.thresholds = np.asarray(thresholds, dtype=np.float64)
        self.rows: list[tuple[str, Any]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, lambda _: self.rows.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.write)

    def collect(self, engine: Engine) -> None:
        output, batch = engine.state.output, engine.state.batch
        outputs = output if isinstance(output, list) else [output]
        batches = batch if isinstance(batch, list) else [batch] * len(outputs)
        for item, source in zip(outputs, batches):
            true, pred = _numpy_labels(item[self.label_key]), _numpy_labels(item[self.pred_key])
            name = item.get("name", source.get("name", len(self.rows)) if isinstance(source, dict) else len(self.rows))
            self.rows.append((str(name), match_instances(true, pred, self.thresholds)))

    def write(self, engine: Engine | None = None) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        names = [f"AP@{t:.2f}" for t in self.thresholds]
        with open(self.output_dir / f"{self.prefix}_per_threshold.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["filename", "threshold", "n_true", "n_pred", "tp", "fp", "fn", "ap"])
            for name, r in self.rows:
                for i, t in enumerate(self.thresholds):
                    writer.writerow([name, f"{t:.2f}", r.n_true, r.n_pred, r.tp[i], r.fp[i], r.fn[i], f"{r.ap[i]:.4f}"])
        table = np.array([np.append(r.ap, r.ap.mean()) for _, r in self.rows]).reshape(-1, len(names) + 1)
        with open(self.output_dir / f"{self.prefix}_ap_table.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["filename", *names, "mAP"])
            for (name, _), values in zip(self.rows, table):
                writer.writerow([name, *(f"{v:.4f}" for v in values)])
            if len(table):
                writer.writerow(["mean", *(f"{v:.4f}" for v in table.mean(0))])
                writer.writerow(["std", *(f"{v:.4f}" for v in table.std(0))])
