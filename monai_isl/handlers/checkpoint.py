"""Checkpoints that are never left half-written, never lost to a kill, and never hold NaN weights.

MONAI's ``CheckpointSaver`` writes with ``atomic=False`` (to keep group read permission), so a run killed during
a save can leave a truncated ``model.pt``. Ignite's ``Checkpoint`` also *removes* the previous file before it writes
the next one (``n_saved=1``), so a kill during that write leaves no checkpoint at all. This saver:

- writes to ``.<name>.<random>.tmp`` in the same folder, flushes it to disk (``fsync``) and renames it over the
  target (atomic on POSIX), then restores the usual ``0o666 & ~umask`` permissions;
- removes a superseded file only after its successor is safely on disk;
- keeps ``n_saved`` interval checkpoints in the folder across interruptions: files an earlier or interrupted run
  left there count as the oldest, so a resumed run replaces them instead of piling up 155 MB files;
- refuses to write a checkpoint whose tensors hold NaN or inf (the run stops with the tensor's name instead);
- writes no "final" checkpoint when the run stops on a non-finite loss (:class:`NonFiniteLossError`);
- exposes the best-metric bookkeeping (``state_dict`` / ``load_state_dict``), so that a resumed run keeps
  overwriting ``model.pt`` only with a better model than the best one before the interruption.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine
from ignite.handlers import DiskSaver
from monai.handlers import CheckpointSaver

from ..io import umask_mode
from .nonfinite import NonFiniteLossError

logger = logging.getLogger(__name__)

TMP_SUFFIX = ".tmp"


def _non_finite_tensor(obj: Any, prefix: str = "") -> str | None:
    """Name of the first floating-point tensor in a (nested) checkpoint that holds NaN or inf, else None."""
    if isinstance(obj, torch.Tensor):
        if obj.is_floating_point() and not bool(torch.isfinite(obj).all()):
            return prefix or "<tensor>"
        return None
    if isinstance(obj, Mapping):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return None
    for key, value in items:
        found = _non_finite_tensor(value, f"{prefix}.{key}" if prefix else str(key))
        if found is not None:
            return found
    return None


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the ``.<name>.pt.<random>.tmp`` files a killed save left in ``folder``; return what was removed."""
    removed = []
    for path in Path(folder).glob(f".*.pt.*{TMP_SUFFIX}"):
        try:
            path.unlink()
            removed.append(path)
        except OSError:
            pass
    return removed


class _AtomicDiskSaver(DiskSaver):
    """Ignite ``DiskSaver``: atomic, durable writes, an optional fixed file name, deferred removal, finite check."""

    def __init__(self, dirname: str, filename: str | None = None) -> None:
        super().__init__(dirname=dirname, require_empty=False, atomic=True, create_dir=True)
        self.filename = filename
        self._pending_removal: list[str] = []

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        filename = self.filename or filename
        path = Path(self.dirname) / filename
        bad = _non_finite_tensor(checkpoint)
        if bad is not None:
            raise RuntimeError(
                f"refusing to write checkpoint '{path}': tensor '{bad}' holds NaN or inf values (training diverged); "
                "the previous checkpoints are kept: lower the learning rate or check the inputs, then --resume true"
            )
        self.write(checkpoint, path)
        # only now that the new file is safely on disk, drop the one it supersedes
        pending, self._pending_removal = self._pending_removal, []
        for old in pending:
            if old != filename:
                (Path(self.dirname) / old).unlink(missing_ok=True)

    def write(self, checkpoint: Mapping, path: Path) -> None:
        """:func:`atomic_save`."""
        atomic_save(checkpoint, path)

    def remove(self, filename: str) -> None:
        """Ignite calls this *before* writing the next file: defer it until that write succeeded."""
        self._pending_removal.append(self.filename or filename)


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file beside ``path``, ``fsync``, rename over ``path``, ``fsync`` the folder.

    A kill or a full disk leaves the previous file intact, never a truncated one.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        umask_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def keep_final_model(network: torch.nn.Module, ckpt_dir: str | os.PathLike, has_validation: bool) -> Path | None:
    """Without a validation section nothing selects a best model: keep the final network as ``model.pt``.

    Evaluation, inference, the sweep and the segmentation bundles (``--isl_checkpoint``) all read ``model.pt``.
    """
    if has_validation:
        return None
    module = getattr(network, "module", network)
    path = atomic_save(module.state_dict(), Path(ckpt_dir) / "model.pt")
    logger.warning("no validation section in the datalist: the final model is kept as %s (not a selected best)", path)
    return path


class AtomicCheckpointSaver(CheckpointSaver):
    """``monai.handlers.CheckpointSaver`` (same arguments) whose every write is atomic, kill-safe and finite.

    As an item of a trainer checkpoint's ``save_dict`` it saves and restores which ``key_metric`` value its
    ``model.pt`` holds (see the module docstring).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for checkpoint in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint):
            if checkpoint is not None:
                fixed_name = getattr(checkpoint.save_handler, "filename", None)
                checkpoint.save_handler = _AtomicDiskSaver(dirname=self.save_dir, filename=fixed_name)

    def attach(self, engine: Engine) -> None:
        if os.path.isdir(self.save_dir):
            for path in remove_stale_temp_files(self.save_dir):
                logger.warning(f"removed '{path}', left over from a checkpoint write that was interrupted")
            self._adopt_interval_files()
        super().attach(engine)

    def _adopt_interval_files(self) -> None:
        """Count the interval checkpoints already in ``save_dir`` (an interrupted or earlier run's) as this run's
        oldest, so ``n_saved`` keeps applying: each is removed once a newer one of this run is safely written."""
        checkpoint = self._interval_checkpoint
        if checkpoint is None or checkpoint.n_saved is None:
            return
        name = "checkpoint" if len(self.save_dict) > 1 else next(iter(self.save_dict))
        base = f"{checkpoint.filename_prefix}_{name}" if checkpoint.filename_prefix else name
        found = [p for kind in ("epoch", "iteration") for p in Path(self.save_dir).glob(f"{base}_{kind}=*.pt")]
        found.sort(key=lambda p: p.stat().st_mtime_ns)
        known = {item.filename for item in checkpoint._saved}
        adopted = [(-math.inf, p.name) for p in found if p.name not in known]
        if adopted:
            saved = [(item.priority, item.filename) for item in checkpoint._saved]
            checkpoint.load_state_dict({"_saved": adopted + saved})

    def exception_raised(self, engine: Engine, e: Exception) -> None:
        """MONAI saves a "final" checkpoint on any exception; not after a non-finite loss (it would not help)."""
        if isinstance(e, NonFiniteLossError):
            raise e
        super().exception_raised(engine, e)

    def state_dict(self) -> dict[str, Any]:
        """The key-metric bookkeeping (``[(metric, file name)]`` of the kept best models); empty without one."""
        if self._key_metric_checkpoint is None:
            return {}
        return {"_saved": [(float(priority), str(name)) for priority, name in self._key_metric_checkpoint._saved]}

    def load_state_dict(self, state_dict: dict) -> None:
        if self._key_metric_checkpoint is not None and state_dict:
            self._key_metric_checkpoint.load_state_dict(state_dict)
