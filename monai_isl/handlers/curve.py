"""Learning curve: a second evaluator scored before training and at regular steps, written to a CSV.

The head start of an ISL initialisation shows at the start of training, and can vanish by the end when both inits
have converged. The N-sweep therefore records the test metric against training steps: :class:`LearningCurve` runs
an evaluator on a fixed image set (the test section) at step 0 and every ``interval`` epochs, and appends
``epoch, step, crops, <metric>`` rows to ``output_csv``, each followed (after step 0) by a ``train_loss`` row: the
mean training loss over the steps since the previous row. Both together show whether a schedule has converged (the
loss and the test metric flatten before the budget ends). It never influences model selection (that is the
validation evaluator's job); it only measures.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events
from monai.handlers import from_engine

logger = logging.getLogger(__name__)

#: the ``metric`` name of the rows holding the mean training loss since the previous row
TRAIN_LOSS = "train_loss"


class LearningCurve:
    """Score ``evaluator`` at the start of training and every ``interval`` epochs; one CSV row per score.

    Args:
        evaluator: a MONAI ``SupervisedEvaluator`` with a ``key_val_metric`` (its network is the trainer's).
        interval: epochs between scores (>= 1); the last epoch is always scored.
        output_csv: the file rows are appended to (created with a header; a resumed run continues it).
        crops_per_step: training crops per optimiser step (batch size x crops per image), for the ``crops`` column.
    """

    FIELDS = ("epoch", "step", "crops", "metric", "value")

    def __init__(self, evaluator: Any, interval: int, output_csv: str | Path, crops_per_step: int = 1) -> None:
        self.evaluator, self.interval = evaluator, max(1, int(interval))
        self.output_csv, self.crops_per_step = Path(output_csv), int(crops_per_step)
        self._losses: list[float] = []

    def attach(self, trainer: Engine) -> None:
        trainer.add_event_handler(Events.STARTED, self)
        trainer.add_event_handler(Events.ITERATION_COMPLETED, self._collect_loss)
        trainer.add_event_handler(Events.EPOCH_COMPLETED, self._maybe)

    def _collect_loss(self, trainer: Engine) -> None:
        """Keep each step's training loss (MONAI trainers put it under ``loss`` in their output)."""
        try:
            loss = from_engine(["loss"], first=True)(trainer.state.output)
        except (KeyError, TypeError, IndexError):
            return
        self._losses.append(float(loss[0] if isinstance(loss, (list, tuple)) else loss))

    def _maybe(self, trainer: Engine) -> None:
        epoch = trainer.state.epoch
        if epoch % self.interval == 0 or epoch == trainer.state.max_epochs:
            self(trainer)

    def __call__(self, trainer: Engine) -> None:
        step = int(trainer.state.iteration)
        if step > 0 and self._scored(step):
            return
        self.evaluator.run()
        name = self.evaluator.state.key_metric_name
        value = float(self.evaluator.state.metrics[name])
        new = not self.output_csv.is_file()
        self.output_csv.parent.mkdir(parents=True, exist_ok=True)
        crops = step * self.crops_per_step
        with open(self.output_csv, "a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(self.FIELDS)
            writer.writerow([trainer.state.epoch, step, crops, name, f"{value:.6g}"])
            if self._losses:
                loss = sum(self._losses) / len(self._losses)
                writer.writerow([trainer.state.epoch, step, crops, TRAIN_LOSS, f"{loss:.6g}"])
        self._losses = []
        logger.info("learning curve: step %d (%d crops): %s %.4f", step, crops, name, value)

    def _scored(self, step: int) -> bool:
        """A resumed run does not score the same step twice."""
        if not self.output_csv.is_file():
            return False
        with open(self.output_csv, newline="") as f:
            return any(int(row["step"]) == step for row in csv.DictReader(f))
