"""Constants the test modules share: repository paths, the four bundles and the tiny run settings.

Test modules import it as ``from helpers import ...`` (pytest puts ``tests/`` on ``sys.path``, as for
``conftest.py``, which imports it too).
"""

from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"  # data and schemas beside the repository (absent on a bare clone)
SHARED_DATA = SHARED / "data"
SCHEMA = SHARED / "monai" / "meta_schema_20240725.json"  # the MONAI Model Zoo's metadata schema
BUNDLES = ["dapi_isl", "cellmask_isl", "nucleus_seg", "cell_instance_seg"]

# The smallest settings a bundle trains with in a test: 64 x 64 crops, 2 per field, one field a step, no workers.
TINY = {"roi_size": [64, 64], "num_samples": 2, "batch_size": 1, "num_workers": 0}
# ... for one epoch: the tests that run a whole training to its end
TINY_ONE_EPOCH = {**TINY, "max_epochs": 1}
# ... with one crop a field: the shortest step, for the tests that kill, resume or repeat runs many times
TINY_ONE_CROP = {**TINY, "num_samples": 1}


def as_cli(settings: dict) -> dict[str, str]:
    """``settings`` as ``monai.bundle run`` command-line values: ``{"roi_size": "[64,64]", "num_samples": "2"}``."""
    return {key: json.dumps(value, separators=(",", ":")) for key, value in settings.items()}


def config_files(name: str, workflow: str) -> list[str]:
    """The config files of ``workflow`` of bundle ``name`` (evaluate: train.yaml + the evaluate.yaml overlay)."""
    from monai_isl.bundle import workflow_configs

    return workflow_configs(REPO / "bundles" / name, workflow)


def train_tiny(name: str, tmp_path: Path, **overrides) -> Path:
    """Train bundle ``name`` in this process with the :data:`TINY` settings and 64 x 64 windows; ``overrides`` add
    to / replace them (``dataset_dir`` or ``datalist`` among them). Returns the folder of the checkpoints."""
    from monai.bundle import run

    models = tmp_path / "models"
    run(
        config_file=config_files(name, "train"),
        ckpt_dir=str(models),
        output_dir=str(tmp_path / "runs"),
        **{**TINY, "sw_roi_size": [64, 64], **overrides},
    )
    return models
