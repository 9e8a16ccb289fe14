"""Helpers the bundle configs call: where the bundle is, and the device to train on.

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


def latest_checkpoint(ckpt_dir: str | os.PathLike) -> Path:
    """The newest training checkpoint in ``ckpt_dir`` (``checkpoint_epoch=N.pt`` or ``checkpoint_final.pt``).

    Raises:
        FileNotFoundError: there is none; the message names the folder.
    """
    folder = Path(ckpt_dir)
    candidates = [*folder.glob("checkpoint_epoch=*.pt"), *folder.glob("checkpoint_final.pt")]
    if not candidates:
        raise FileNotFoundError(f"--resume: no checkpoint_epoch=N.pt or checkpoint_final.pt in '{folder}'")
    return max(candidates, key=lambda p: p.stat().st_mtime)


def attach_resume(trainer: Any, ckpt_dir: str | os.PathLike, load_dict: dict[str, Any]) -> Path:
    """Make ``trainer`` start from the newest checkpoint: network, optimiser, epoch and iteration are restored.

    A larger ``max_epochs`` than the checkpoint's continues training (MONAI's ``CheckpointLoader`` keeps it).
    """
    from monai.handlers import CheckpointLoader

    path = latest_checkpoint(ckpt_dir)
    CheckpointLoader(load_path=str(path), load_dict=load_dict, map_location=getattr(trainer, "device", None)).attach(
        trainer
    )
    return path


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
