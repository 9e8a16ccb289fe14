"""Stop training at the first NaN/inf loss, before the optimiser step and before any checkpoint of it.

A diverged loss makes every later weight NaN; left running, the run burns hours and the per-epoch checkpoint
overwrites the last good one with a broken network. MONAI's ``SupervisedTrainer`` fires ``LOSS_COMPLETED`` after
the loss and before ``backward()`` and ``optimizer.step()``, so stopping there keeps the weights of the previous
iteration and no checkpoint of the failing iteration is ever written.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.engines.utils import IterationEvents


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; raised by :class:`StopOnNonFiniteLoss`."""


def _batch_names(batch: Any, limit: int = 8) -> list[str]:
    """Readable ids (``name``) of a collated or decollated batch, without duplicates (one per field)."""
    if isinstance(batch, dict):
        names = batch.get("name", [])
        names = list(names) if isinstance(names, (list, tuple)) else [names]
    elif isinstance(batch, (list, tuple)):
        names = [item.get("name") for item in batch if isinstance(item, dict)]
    else:
        names = []
    unique = list(dict.fromkeys(str(n) for n in names if n is not None))
    return unique[:limit] + (["..."] if len(unique) > limit else [])


def _as_float(value: Any) -> float:
    if isinstance(value, torch.Tensor):
        return float(value.detach().float().reshape(-1)[0]) if value.numel() == 1 else float("nan")
    return float(value)


class StopOnNonFiniteLoss:
    """Raise :class:`NonFiniteLossError` naming the epoch, iteration and fields when the loss is NaN or inf.

    Args:
        output_key: the loss's key in ``engine.state.output`` (MONAI: ``"loss"``).
    """

    def __init__(self, output_key: str = "loss") -> None:
        self.output_key = output_key

    def attach(self, engine: Engine) -> None:
        # MONAI engines register LOSS_COMPLETED (before backward/step); a plain Ignite engine: after the iteration
        before_step = engine.has_registered_events(IterationEvents.LOSS_COMPLETED)
        engine.add_event_handler(IterationEvents.LOSS_COMPLETED if before_step else Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        output = engine.state.output
        loss = output.get(self.output_key) if isinstance(output, dict) else output
        if loss is None:
            return
        if isinstance(loss, torch.Tensor):
            finite = bool(torch.isfinite(loss.detach()).all())
        else:
            finite = math.isfinite(float(loss))
        if finite:
            return
        value = _as_float(loss)
        state = engine.state
        epoch_length = state.epoch_length
        within = f" ({(state.iteration - 1) % epoch_length + 1}/{epoch_length} of the epoch)" if epoch_length else ""
        names = _batch_names(state.batch)
        raise NonFiniteLossError(
            f"training loss is {value} at epoch {state.epoch}, iteration {state.iteration}{within}"
            f"{f' (fields: {names})' if names else ''}; the optimiser step was not taken and no checkpoint was "
            "written for this iteration (the last checkpoint in ckpt_dir is intact): lower the learning rate or check "
            "the inputs, then continue with --resume true"
        )
