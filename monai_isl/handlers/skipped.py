"""Inference over long folders: skip unreadable fields, list them at the end, and show progress over all fields.

``SkippedFieldsReport`` sits between the ``DataLoader`` (over a :class:`monai_isl.data.SkipUnreadable` dataset with
:func:`monai_isl.data.collate_skipping`) and the evaluator, and is also one of the evaluator's handlers::

    report = SkippedFieldsReport(data_loader, output_dir)
    evaluator = SupervisedEvaluator(val_data_loader=report, val_handlers=[report, ...], ...)

It yields only readable batches, logs a warning naming each skipped file and why, and when the run completes
writes ``<output_dir>/skipped.csv`` (name, files, reason; a header only when none was skipped) and logs a summary.
If every field failed it raises instead, since that points at a wrong setting rather than a few bad files.
"""

from __future__ import annotations

import csv
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ignite.engine import Engine

from ..data import SKIPPED_KEY
from .run import RunHandler

logger = logging.getLogger(__name__)


class SkippedFieldsReport(RunHandler):
    """Iterable over the readable batches of ``data_loader``, and an Ignite handler reporting the skipped items.

    Args:
        data_loader: batches from :func:`monai_isl.data.collate_skipping`.
        output_dir: where ``filename`` is written.
        filename: the CSV of skipped items.
        progress: show a progress bar over all items (``tqdm`` on stderr).

    It deliberately has no ``len()``: Ignite would otherwise restart the loader to make up for skipped batches.
    """

    def __init__(
        self,
        data_loader: Iterable,
        output_dir: str | os.PathLike,
        filename: str = "skipped.csv",
        progress: bool = True,
    ) -> None:
        self.data_loader = data_loader
        self.output_dir = Path(output_dir)
        self.filename = filename
        self.progress = progress
        self.skipped: list[dict[str, Any]] = []
        self.done = 0
        self._bar: Any = None

    @property
    def total(self) -> int | None:
        """Number of items (fields) the run covers, when the loader's dataset knows it."""
        try:
            return len(self.data_loader.dataset)  # type: ignore[attr-defined]
        except (AttributeError, TypeError):
            return None

    def __iter__(self) -> Iterator[Any]:
        for batch in self.data_loader:
            if isinstance(batch, dict):
                for item in batch.pop(SKIPPED_KEY, []):
                    self._skip(item)
                if not batch:
                    continue
            yield batch

    def _skip(self, item: dict[str, Any]) -> None:
        self.skipped.append(item)
        logger.warning(f"skipped '{item.get('name')}' ({', '.join(item.get('files', []))}): {item.get('reason')}")
        if self._bar is not None:
            self._bar.update(1)

    def started(self, engine: Engine | None = None) -> None:
        self.skipped, self.done = [], 0
        if self.progress:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, desc="inference", unit="field", file=sys.stderr, dynamic_ncols=True)

    def iteration_completed(self, engine: Engine) -> None:
        batch = engine.state.batch
        count = len(batch) if isinstance(batch, list) else 1
        self.done += count
        if self._bar is not None:
            self._bar.update(count)

    def completed(self, engine: Engine | None = None) -> None:
        """Close the progress bar, write the CSV, log the summary; raise if nothing could be read."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        path = self.write()
        attempted = self.done + len(self.skipped)
        if not self.skipped:
            logger.info(f"inference: {self.done} of {attempted} field(s) done, none skipped")
            return
        listing = "; ".join(f"{s['name']}: {s['reason']}" for s in self.skipped)
        if self.done == 0:
            raise RuntimeError(
                f"inference: all {attempted} field(s) failed to load (listed in '{path}'), check the input "
                f"settings (in_channels, input_dir / datalist); first: {self.skipped[0]['name']}: "
                f"{self.skipped[0]['reason']}"
            )
        logger.warning(
            f"inference: {self.done} of {attempted} field(s) done, {len(self.skipped)} skipped (listed in '{path}'): "
            f"{listing}"
        )

    def write(self) -> Path:
        """Write ``output_dir/filename``: one row per skipped item (name, files joined by ``;``, reason)."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        path = self.output_dir / self.filename
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["name", "files", "reason"])
            for item in self.skipped:
                writer.writerow([item.get("name"), ";".join(item.get("files", [])), item.get("reason")])
        return path
