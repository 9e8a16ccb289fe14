"""The fine-tune guard: fine-tuning must never leave a segmentation model worse than its start.

With one or a few annotated images, fine-tuning can lower the score of a good start (the calibrated ISL network:
docs/results/real_nucleus_cpu400, where the start scored 0.474 and the fine-tuned network 0.35). The guard is three
parts of the segmentation configs: the start is validated before the first step (``ValidationHandler`` with
``exec_at_start``), ``model.pt`` is the best validated network, the start included (the key-metric checkpointer),
and, when no datalist validation section exists, a strip of each training image is held out for this
(``monai_isl.data.segmentation_sections``). :class:`FineTuneGuard` is the part the user sees: it records the step-0
score and, when training ends, says which model ``model.pt`` is, with a plain warning when fine-tuning did not beat
the start.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from ignite.engine import Engine, Events

__all__ = ["FineTuneGuard"]

logger = logging.getLogger(__name__)


class FineTuneGuard:
    """Records the validator's key metric at step 0 and at each later validation; reports at the end of training.

    Args:
        validator: the evaluator the trainer's ``ValidationHandler`` runs (``@validate#evaluator``).
        output_json: where the report is written (``start``, ``best``, ``final``, ``improved``); ``None``: not.
        min_delta: fine-tuning counts as better only when it beats the start by more than this.
    """

    def __init__(self, validator: Any, output_json: str | os.PathLike | None = None, min_delta: float = 0.0) -> None:
        self.validator = validator
        self.output_json = output_json
        self.min_delta = float(min_delta)
        self.trainer: Engine | None = None
        self.scores: list[tuple[int, float]] = []  # (trainer iteration, key metric)

    def attach(self, engine: Engine) -> None:
        """Listen to the validator's results and report when ``engine`` (the trainer) completes."""
        self.trainer = engine
        self.validator.add_event_handler(Events.COMPLETED, self._record)
        engine.add_event_handler(Events.COMPLETED, self._report)

    def _record(self, validator: Engine) -> None:
        name = getattr(validator.state, "key_metric_name", None)
        if name is None or name not in validator.state.metrics or self.trainer is None:
            return
        self.scores.append((int(self.trainer.state.iteration), float(validator.state.metrics[name])))

    def report(self) -> dict[str, Any] | None:
        """``{"start", "best", "best_step", "final", "improved"}`` from the recorded scores; ``None`` before any."""
        if not self.scores:
            return None
        start = next((s for step, s in self.scores if step == 0), None)
        best_step, best = max(self.scores, key=lambda p: p[1])  # first of ties: the earliest, as the checkpointer
        improved = None if start is None else best > start + self.min_delta
        return {
            "start": start,
            "best": best,
            "best_step": best_step,
            "final": self.scores[-1][1],
            "improved": improved,
        }

    def _report(self, engine: Engine) -> None:
        result = self.report()
        if result is None:
            logger.warning("fine-tune guard: no validation score was recorded; model.pt is the final network")
            return
        if result["start"] is None:
            logger.info(
                "fine-tune guard: resumed run, step-0 score not recorded in this process; model.pt is the best "
                "validated network (%.4f at step %d)",
                result["best"],
                result["best_step"],
            )
        elif result["improved"]:
            logger.info(
                "fine-tune guard: fine-tuning beat the start (validation %.4f at step %d vs %.4f at step 0); "
                "model.pt is the step-%d network",
                result["best"],
                result["best_step"],
                result["start"],
                result["best_step"],
            )
        else:
            logger.warning(
                "FINE-TUNING DID NOT BEAT THE START: validation %.4f at step 0, at best %.4f after it (final %.4f). "
                "model.pt is the untrained start. More or larger annotated images, a lower learning rate or a "
                "longer schedule may help; the start itself is kept, so nothing is lost.",
                result["start"],
                max(s for step, s in self.scores if step > 0) if len(self.scores) > 1 else result["start"],
                result["final"],
            )
        if self.output_json:
            with open(self.output_json, "w") as f:
                json.dump(result, f, indent=1)
