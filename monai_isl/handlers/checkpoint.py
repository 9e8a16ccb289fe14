"""Checkpoints that are never left half-written.

MONAI's ``CheckpointSaver`` writes with ``atomic=False`` (to keep group read permission), so a run killed during
a save can leave a truncated ``model.pt``. This saver writes to a temporary file in the same folder and renames
it over the target (atomic on POSIX), then restores the usual ``0o644 & ~umask`` permissions.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from ignite.handlers import DiskSaver
from monai.handlers import CheckpointSaver


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class _AtomicDiskSaver(DiskSaver):
    """Ignite ``DiskSaver`` with ``atomic=True``, an optional fixed file name, and readable permissions."""

    def __init__(self, dirname: str, filename: str | None = None) -> None:
        super().__init__(dirname=dirname, require_empty=False, atomic=True, create_dir=True)
        self.filename = filename

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        filename = self.filename or filename
        super().__call__(checkpoint=checkpoint, filename=filename, metadata=metadata)
        os.chmod(Path(self.dirname) / filename, 0o666 & ~_umask())

    def remove(self, filename: str) -> None:
        super().remove(filename=self.filename or filename)


class AtomicCheckpointSaver(CheckpointSaver):
    """``monai.handlers.CheckpointSaver`` (same arguments) whose every write is atomic."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for checkpoint in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint):
            if checkpoint is not None:
                fixed_name = getattr(checkpoint.save_handler, "filename", None)
                checkpoint.save_handler = _AtomicDiskSaver(dirname=self.save_dir, filename=fixed_name)
