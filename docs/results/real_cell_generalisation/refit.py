"""Refit h / min_area of a trained cell model with today's fit, on the fine-tune guard's held-out strips, and score
it once on the test section: the post-processing compared on one fixed network.

    python docs/results/real_cell_generalisation/refit.py MODEL_PT OUT_DIR [--pixels] [--dataset_dir D]

``MODEL_PT`` is copied to ``OUT_DIR/models/model.pt`` (the original is not touched), the train config's own fit step
runs on the bottom 20 % of every training field (``holdout_fraction``, as in training without a validation section),
then the evaluate overlay scores the test section into ``OUT_DIR/eval``. ``--pixels``: the minimum area as one
pixel count for every field (fitted on the annotated cells' median area: the fit before the relative one) instead of
a fraction of each field's typical object (the default).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
TRAIN = ROOT / "bundles/cell_instance_seg/configs/train.yaml"
EVALUATE = ROOT / "bundles/cell_instance_seg/configs/evaluate.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--dataset_dir", default="outputs/usiigaci_split")
    parser.add_argument("--pixels", action="store_true", help="one pixel count for every field (the old fit)")
    args = parser.parse_args()
    if not args.model.is_file():
        sys.exit(f"no model file {args.model}")
    from monai.bundle import ConfigParser

    from monai_isl.instance_fit import DEFAULT_MIN_AREA_FRACTIONS, fit_network_watershed, min_area_grid_for

    models = args.out / "models"
    models.mkdir(parents=True, exist_ok=True)
    checkpoint = models / "model.pt"
    shutil.copyfile(args.model, checkpoint)
    config = ConfigParser()
    config.read_config(str(TRAIN))
    config.update({"dataset_dir": args.dataset_dir, "init": "none", "ckpt_dir": str(models), "cache": "none"})
    network = config.get_parsed_content("network")
    items = config.get_parsed_content("validate#dataset#data")  # the held-out strips (no validation section)
    preprocessing = config.get_parsed_content("validate#preprocessing")
    inferer = config.get_parsed_content("validate#window_inferer")  # as the train config's fit step
    min_areas = None
    if args.pixels:
        labels = [preprocessing(dict(item))["instances"].numpy() for item in items]
        min_areas, _ = min_area_grid_for(labels, DEFAULT_MIN_AREA_FRACTIONS)
    fit_network_watershed(network, items, preprocessing, inferer, checkpoint=checkpoint, min_areas=min_areas)
    subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", f"['{TRAIN}','{EVALUATE}']",
         "--dataset_dir", args.dataset_dir, "--checkpoint", str(checkpoint), "--output_dir", str(args.out / "eval")],
        check=True, env={**os.environ, "MONAI_ISL_DEVICE": "cpu"},
    )  # fmt: skip


if __name__ == "__main__":
    main()
