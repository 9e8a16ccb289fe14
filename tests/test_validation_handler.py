"""The bundles' ValidationHandler validates before the first step, every interval, and after the last epoch when
that epoch was not a validation epoch: the final model always competes for model.pt."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine, Events
from monai.engines import SupervisedEvaluator

from monai_isl.handlers import ValidationHandler


def _validated_epochs(max_epochs: int, interval: int, exec_at_end: bool = True) -> list[int]:
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=[{"image": torch.zeros(1, 1, 4, 4), "label": torch.zeros(1, 1, 4, 4)}],
        network=torch.nn.Identity(),
    )
    trainer = Engine(lambda engine, batch: None)
    seen: list[int] = []
    evaluator.add_event_handler(Events.COMPLETED, lambda _: seen.append(trainer.state.epoch))
    handler = ValidationHandler(interval=interval, validator=evaluator, exec_at_start=True, exec_at_end=exec_at_end)
    handler.attach(trainer)
    trainer.run(range(2), max_epochs=max_epochs)
    return seen


@pytest.mark.parametrize(
    "max_epochs, interval, expected",
    [
        (5, 2, [0, 2, 4, 5]),  # the last epoch is not a multiple of the interval: validated once more
        (4, 2, [0, 2, 4]),  # it is: not twice
        (3, 10, [0, 3]),  # an interval beyond the run (the sweep's old setting): the final model is still scored
    ],
)
def test_final_epoch_is_validated(max_epochs: int, interval: int, expected: list[int]) -> None:
    assert _validated_epochs(max_epochs, interval) == expected


def test_without_exec_at_end_it_is_monai_s_handler() -> None:
    assert _validated_epochs(3, 10, exec_at_end=False) == [0]
