"""Shared fixtures: the real data beside the repository and a tiny synthetic dataset."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import SHARED_DATA

# keep the CPU tests deterministic and light; CI machines have 2 cores
os.environ.setdefault("MONAI_ISL_DEVICE", "cpu")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the repository (real microscopy images); skipped where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder not found: {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic dataset (5 fields of 96x96) with datalists for all four bundles."""
    from monai_isl.synthetic import write_dataset

    return Path(write_dataset(tmp_path_factory.mktemp("synth"), n_images=5, size=96, seed=1))


@pytest.fixture
def tiny_unet_def() -> dict:
    """An 11 k-parameter 2D U-Net config (1 -> 1 channel) to replace a bundle's ``network_def`` where the
    mechanics under test (seeding, checkpoints, resume, the NaN stop) do not depend on the network: fast steps,
    tiny checkpoints."""
    return {
        "_target_": "monai.networks.nets.BasicUNet",
        "spatial_dims": 2,
        "in_channels": 1,
        "out_channels": 1,
        "features": [4, 4, 8, 8, 16, 4],
    }
