"""Validation that always scores the final model, so that ``model.pt`` (the best validated network) can be it.

MONAI's ``ValidationHandler`` validates every ``interval`` epochs (and, with ``exec_at_start``, before the first
step). When ``max_epochs`` is not a multiple of ``interval`` (or ``interval`` exceeds it), the last epochs are never
validated: ``model.pt`` can then only be an earlier network, down to the untrained step-0 start, however much
training improved it. The bundles therefore use :class:`ValidationHandler`, which also validates once after the
last epoch when that epoch was not a validation epoch.
"""

from __future__ import annotations

from ignite.engine import Engine, Events
from monai.handlers import ValidationHandler as _MonaiValidationHandler

__all__ = ["ValidationHandler"]


class ValidationHandler(_MonaiValidationHandler):
    """``monai.handlers.ValidationHandler`` (same arguments) plus ``exec_at_end``: validate after the last epoch (or
    iteration) of a run unless the regular interval just did."""

    def __init__(self, *args, exec_at_end: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.exec_at_end = bool(exec_at_end)

    def attach(self, engine: Engine) -> None:
        super().attach(engine)
        if self.exec_at_end:
            engine.add_event_handler(Events.COMPLETED, self._at_end)

    def _at_end(self, engine: Engine) -> None:
        done = engine.state.epoch if self.epoch_level else engine.state.iteration
        if done > 0 and done % self.interval != 0:
            self(engine)
