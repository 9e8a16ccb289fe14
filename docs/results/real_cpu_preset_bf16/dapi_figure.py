"""``docs/figures/real_dapi_isl.png``: phase contrast, true and predicted DAPI on the ISL sample's bottom half.

Runs the dapi_isl inference bundle on the test section (the bottom half, never trained on) and draws the middle
phase plane, the registered DAPI and the prediction side by side, titled with the test PCC of this prediction:

    python docs/results/real_cpu_preset_bf16/dapi_figure.py outputs/isl_condition_b \
        outputs/bf16/pretext_dapi/models/model.pt outputs/bf16/dapi_figure docs/figures/real_dapi_isl.png
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from monai_isl.data import find_datalist, load_datalist
from monai_isl.figures import save_panel
from monai_isl.io import read_image
from monai_isl.metrics import pearson_correlation

CONFIG = "bundles/dapi_isl/configs/inference.yaml"


def main(dataset_dir: str, checkpoint: str, work: str, out: str) -> None:
    pred_dir = Path(work) / "pred"
    subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", CONFIG, "--dataset_dir", dataset_dir,
         "--checkpoint", checkpoint, "--output_dir", str(pred_dir), "--progress", "false"],
        check=True,
    )  # fmt: skip
    item = load_datalist(find_datalist(dataset_dir, "dapi_isl"), "test")[0]
    phase = read_image(item["image"][len(item["image"]) // 2])[0]
    target = np.max([read_image(f)[0] for f in np.atleast_1d(item["label"])], axis=0)
    pred = read_image(pred_dir / f"{item['name']}_dapi.tif")[0]
    pcc = float(pearson_correlation(pred, target))
    save_panel(
        [phase, target, pred],
        ["phase contrast z06 (input)", "DAPI (truth)", "DAPI predicted by dapi_isl"],
        out,
        suptitle=f"ISL sample, bottom half (test, never trained on): PCC {pcc:.3f}",
        cmaps=["gray", "magma", "magma"],
    )
    print(f"{out}: test PCC {pcc:.3f}")


if __name__ == "__main__":
    main(*sys.argv[1:5])
