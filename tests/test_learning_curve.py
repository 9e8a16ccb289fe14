"""The learning-curve handler: the test metric at step 0 and every interval, each followed by the mean training
loss of the steps since the previous row (what the sweep's convergence table and figure read)."""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from ignite.engine import Engine

from monai_isl.handlers import LearningCurve
from monai_isl.handlers.curve import TRAIN_LOSS


class _Evaluator:
    """Stands in for a SupervisedEvaluator: its metric is the number of times it has been run."""

    def __init__(self) -> None:
        self.state = SimpleNamespace(key_metric_name="score", metrics={})
        self.calls = 0

    def run(self) -> None:
        self.calls += 1
        self.state.metrics["score"] = float(self.calls)


def _trainer() -> Engine:
    # MONAI's decollated trainer output: a list of per-sample dicts, each with the batch loss; here loss = step
    return Engine(lambda engine, batch: [{"loss": torch.tensor(float(engine.state.iteration))}])


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_metric_and_mean_loss_rows(tmp_path: Path) -> None:
    out = tmp_path / "learning_curve.csv"
    trainer = _trainer()
    LearningCurve(_Evaluator(), interval=2, output_csv=out, crops_per_step=5).attach(trainer)
    trainer.run(range(3), max_epochs=5)  # 3 steps per epoch; scored at start and after epochs 2, 4, 5
    rows = _rows(out)
    scores = [(int(r["step"]), int(r["crops"]), float(r["value"])) for r in rows if r["metric"] == "score"]
    assert scores == [(0, 0, 1.0), (6, 30, 2.0), (12, 60, 3.0), (15, 75, 4.0)]
    losses = [(int(r["step"]), float(r["value"])) for r in rows if r["metric"] == TRAIN_LOSS]
    # mean of the step numbers 1..6, 7..12, 13..15
    assert losses == [(6, pytest.approx(3.5)), (12, pytest.approx(9.5)), (15, pytest.approx(14.0))]
    # each loss row follows its step's score row
    assert [r["metric"] for r in rows] == ["score"] + ["score", TRAIN_LOSS] * 3


def test_resumed_run_does_not_score_a_step_twice(tmp_path: Path) -> None:
    out = tmp_path / "learning_curve.csv"
    evaluator = _Evaluator()
    trainer = _trainer()
    curve = LearningCurve(evaluator, interval=1, output_csv=out)
    curve.attach(trainer)
    trainer.run(range(2), max_epochs=1)
    calls = evaluator.calls
    curve(trainer)  # the same step again (a resume restarting at a scored step)
    assert evaluator.calls == calls and len(_rows(out)) == 3
