"""Helpers the bundle configs call: where the bundle is, the device to train on, resuming from the newest
checkpoint, and an early check that the output folders can take the run's files.

Model-zoo bundles assume the current directory is the bundle (``bundle_root: "."``). Ours are also run from the
repository root (``--config_file bundles/dapi_isl/configs/train.yaml``), so ``bundle_root`` is looked up instead;
``--bundle_root`` on the command line (as MONAI Label passes it) always wins over this default.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

BUNDLES_DIR = Path(__file__).resolve().parent.parent / "bundles"


def _is_bundle(folder: Path, name: str) -> bool:
    meta = folder / "configs" / "metadata.json"
    if not meta.is_file():
        return False
    if folder.name == name:
        return True
    try:
        return json.loads(meta.read_text()).get("name", "").lower().replace(" ", "_") == name
    except (OSError, json.JSONDecodeError):
        return False


def bundle_root(name: str) -> str:
    """Folder of bundle ``name``: the current directory if it is that bundle, else ``./bundles/<name>``, else the
    copy beside the installed package (editable installs).

    Raises:
        FileNotFoundError: none of these holds the bundle; pass ``--bundle_root``.
    """
    cwd = Path.cwd()
    for candidate in (cwd, cwd / "bundles" / name, BUNDLES_DIR / name):
        if _is_bundle(candidate, name):
            return str(candidate.resolve())
    raise FileNotFoundError(
        f"bundle '{name}' not found in '{cwd}', '{cwd / 'bundles' / name}' or '{BUNDLES_DIR / name}'; "
        "run from the bundle or repository folder, or pass --bundle_root"
    )


def default_device() -> torch.device:
    """CUDA when present (``MONAI_ISL_DEVICE`` overrides, e.g. ``cpu``), else CPU."""
    requested = os.environ.get("MONAI_ISL_DEVICE")
    if requested:
        return torch.device(requested)
    return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")


CHECKPOINT_PATTERNS = ("checkpoint_epoch=*.pt", "checkpoint_iteration=*.pt", "checkpoint_final.pt")


def latest_checkpoint(ckpt_dir: str | os.PathLike) -> Path:
    """The newest training checkpoint in ``ckpt_dir``: ``checkpoint_epoch=N.pt``, ``checkpoint_iteration=N.pt``
    (``save_every_n_iterations``) or ``checkpoint_final.pt``, by modification time.

    Raises:
        FileNotFoundError: there is none; the message names the folder.
    """
    folder = Path(ckpt_dir)
    candidates = [p for pattern in CHECKPOINT_PATTERNS for p in folder.glob(pattern)]
    if not candidates:
        raise FileNotFoundError(
            f"--resume: no checkpoint_epoch=N.pt or checkpoint_final.pt in '{folder}' (nor checkpoint_iteration=N.pt)"
        )
    return max(candidates, key=lambda p: p.stat().st_mtime_ns)


def attach_resume(trainer: Any, ckpt_dir: str | os.PathLike, load_dict: dict[str, Any]) -> Path:
    """Make ``trainer`` start from the newest checkpoint in ``ckpt_dir``.

    When the trainer starts, every object of ``load_dict`` that the checkpoint holds is restored (network,
    optimiser, trainer = epoch and iteration, and whatever else the config saves, e.g. the best-model
    bookkeeping); an object the checkpoint lacks (an older file) keeps its fresh state, with a warning. A larger
    ``max_epochs`` than the checkpoint's continues training, as with MONAI's ``CheckpointLoader``.

    A checkpoint taken mid-epoch (``save_every_n_iterations``) resumes mid-epoch: Ignite runs the rest of that
    epoch from a fresh pass over the (shuffled) data, so the total number of iterations is that of an uninterrupted
    run; afterwards each epoch again starts its own pass. The batches are not the ones the interrupted run would
    have drawn (random states are not checkpointed), so a resumed run is not bit-identical to an uninterrupted one.

    Raises:
        FileNotFoundError: ``ckpt_dir`` holds no checkpoint (at once, before any training).
        ValueError: the checkpoint is past ``max_epochs`` (when the trainer starts).
    """
    import logging

    from ignite.engine import Events
    from ignite.handlers import Checkpoint

    path = latest_checkpoint(ckpt_dir)
    log = logging.getLogger(__name__)

    def _restore(engine: Any) -> None:
        checkpoint = torch.load(path, map_location=getattr(engine.state, "device", None) or "cpu", weights_only=True)
        present = {k: v for k, v in load_dict.items() if k in checkpoint}
        if not present:
            raise ValueError(f"--resume: '{path}' holds none of {sorted(load_dict)}; is it a training checkpoint?")
        for key in sorted(set(load_dict) - set(present)):
            log.warning(f"--resume: '{path}' holds no '{key}'; it starts afresh")
        max_epochs = engine.state.max_epochs
        Checkpoint.load_objects(to_load=present, checkpoint=checkpoint)
        if max_epochs is not None and engine.state.epoch > max_epochs:
            raise ValueError(
                f"--resume: '{path}' is at epoch {engine.state.epoch}, past max_epochs={max_epochs}; "
                "pass a larger --max_epochs to train further"
            )
        engine.state.max_epochs = max_epochs
        epoch_length = engine.state.epoch_length
        log.info(f"resumed from '{path}': epoch {engine.state.epoch}, iteration {engine.state.iteration}")
        if epoch_length and engine.state.iteration % epoch_length:
            # Ignite keeps the data iterator of the shortened epoch going into the next one: restart it instead
            engine.add_event_handler(
                Events.EPOCH_COMPLETED(once=engine.state.iteration // epoch_length + 1),
                lambda e: e.set_data(e.state.dataloader),
            )

    trainer.add_event_handler(Events.STARTED, _restore)
    return path


def check_writable(path: str | os.PathLike, min_free_mb: float = 0.0, what: str = "output folder") -> Path:
    """Make sure files can be written in ``path`` (or, while it does not exist, in its nearest existing parent,
    where it would be created) and that ``min_free_mb`` MiB are free there. Creates nothing.

    Called from the configs' ``initialize`` so that a read-only, full or mistyped folder stops the run before
    hours of training instead of at the first checkpoint. The folder itself is made by whatever writes its first
    file (checkpoint saver, TensorBoard, the CSV and image writers), so a run that fails on a wrong setting or
    input leaves no empty folder behind.

    Raises:
        OSError: the folder could not be created or written to, or has too little free space; the message names it.
    """
    import shutil
    import tempfile

    folder = Path(path)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(20, f"'{existing}' is a file, not a folder")
        with tempfile.TemporaryFile(dir=existing, prefix=".write_test."):
            pass
    except OSError as err:
        raise OSError(
            f"{what} '{folder}' is not writable ({type(err).__name__}: {err.strerror or err}); "
            "choose another folder on the command line (e.g. --ckpt_dir / --output_dir)"
        ) from err
    free_mb = shutil.disk_usage(existing).free / 2**20
    if free_mb < min_free_mb:
        raise OSError(
            f"{what} '{folder}' has {free_mb:.0f} MiB free, the run needs at least {min_free_mb:.0f} MiB "
            "(min_free_mb); free some space or choose another folder"
        )
    return folder


def as_bool(value: Any) -> bool:
    """A command-line switch as a bool: ``--amp true`` arrives as the string ``'true'``, which Python finds truthy
    even when it says ``'false'``; accepts bools and true/false, yes/no, on/off, 1/0 in any case.

    Raises:
        ValueError: anything else.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0", "none", "null", ""):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def require_isl_checkpoint(init: str, isl_checkpoint: str | os.PathLike | None, isl_bundle: str) -> None:
    """Stop a segmentation training at its start when ``init`` is ``isl`` but ``isl_checkpoint`` names no file.

    A bundle never reads a sibling bundle's folder by itself: the trained ISL network it starts from is given on
    the command line. Called by :func:`load_isl_start`, train.yaml's first ``run`` step, before any data is read
    (not in ``initialize``: the model zoo's checks initialize the train workflow without an ISL model).

    Raises:
        ValueError: ``isl_checkpoint`` is not set; the message names the key and what to pass.
        FileNotFoundError: it names no file.
    """
    if str(init).lower() != "isl":
        return
    example = f"--isl_checkpoint bundles/{isl_bundle}/models/model.pt"
    if isl_checkpoint in (None, ""):
        raise ValueError(
            f"init 'isl' starts from a trained {isl_bundle} network, but 'isl_checkpoint' is not set: pass its "
            f"model.pt, e.g. {example} (train {isl_bundle} first), or use --init imagenet / --init none"
        )
    if not Path(isl_checkpoint).is_file():
        raise FileNotFoundError(
            f"isl_checkpoint '{isl_checkpoint}' does not exist: pass the trained {isl_bundle} model.pt, e.g. "
            f"{example}, or use --init imagenet / --init none"
        )


def load_isl_start(network: Any, init: str, isl_checkpoint: str | os.PathLike | None, isl_bundle: str) -> None:
    """With ``init`` ``isl``, load the ISL network's weights into the first module of ``network`` (the U-Net of
    ``nucleus_network`` / ``cell_network``, built without them); otherwise nothing. A train.yaml ``run`` step."""
    if str(init).lower() != "isl":
        return
    from .networks import load_isl_weights

    require_isl_checkpoint(init, isl_checkpoint, isl_bundle)
    load_isl_weights(network[0], isl_checkpoint, bundle=isl_bundle)


#: the config files of each workflow, in load order: ``train`` and ``inference`` stand alone (MONAI Label and the
#: model zoo read them alone); ``evaluate`` and ``multi_gpu_train`` are overlays on ``train`` (as the zoo's
#: brats_mri_segmentation layers them)
WORKFLOW_CONFIGS: dict[str, tuple[str, ...]] = {
    "train": ("train.yaml",),
    "evaluate": ("train.yaml", "evaluate.yaml"),
    "inference": ("inference.yaml",),
    "multi_gpu_train": ("train.yaml", "multi_gpu_train.yaml"),
}


def workflow_configs(root: str | os.PathLike, workflow: str) -> list[str]:
    """The config files (paths under ``root/configs``) that make up ``workflow`` of the bundle at ``root``.

    Every caller (sweep, demo, tests, export docs) builds its ``--config_file`` list here, so the layering is
    defined in one place.

    Raises:
        ValueError: ``workflow`` is not one of :data:`WORKFLOW_CONFIGS`.
    """
    if workflow not in WORKFLOW_CONFIGS:
        raise ValueError(f"workflow {workflow!r}: expected one of {sorted(WORKFLOW_CONFIGS)}")
    return [str(Path(root) / "configs" / name) for name in WORKFLOW_CONFIGS[workflow]]


def run_bundle(name: str, workflow: str, bundle_root: str | None = None, **overrides: Any) -> Any:
    """Run ``workflow`` of bundle ``name`` in this process, as ``python -m monai.bundle run`` does."""
    from monai.bundle import run

    root = bundle_root or globals()["bundle_root"](name)
    return run(config_file=workflow_configs(root, workflow), bundle_root=str(root), **overrides)
