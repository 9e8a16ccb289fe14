"""Helpers the bundle configs call: where the bundle is, and the device to train on.

Model-zoo bundles assume the current directory is the bundle (``bundle_root: "."``). Ours are also run from the
repository root (``--config_file bundles/dapi_isl/configs/train.yaml``), so ``bundle_root`` is looked up instead;
``--bundle_root`` on the command line (as MONAI Label passes it) always wins over this default.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

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
