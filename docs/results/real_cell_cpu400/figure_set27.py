"""``docs/figures/real_cell_instance_seg.png``: hand-drawn cells and the bundle's prediction on one test field.

Runs the cell_instance_seg inference bundle (``h`` and ``min_area`` auto: the values stored in ``model.pt``) on
one test field only (set27 unless a fifth argument names another, e.g. set24), then draws the outlines of both label
images over the phase-contrast field, side by side:

    python docs/results/real_cell_cpu400/figure_set27.py outputs/usiigaci_all/cell_instance_seg.json \
        outputs/exp/cells_cpu400_minarea/models/model.pt outputs/exp/figure docs/figures/real_cell_instance_seg.png
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tifffile  # noqa: E402
from PIL import Image  # noqa: E402
from scipy import ndimage as ndi  # noqa: E402
from skimage.segmentation import find_boundaries  # noqa: E402

from monai_isl.metrics import mean_average_precision  # noqa: E402

FIELD = "set27"
CONFIG = "bundles/cell_instance_seg/configs/inference.yaml"


def _outlined(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The image (1st-99.8th percentile as grey) with each object's outline in a colour of its own."""
    lo, hi = np.percentile(image, [1, 99.8])
    grey = np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    edges = ndi.binary_dilation(find_boundaries(labels, mode="inner"), iterations=2)  # visible when downscaled
    owner = ndi.maximum_filter(labels, size=5)
    colours = plt.get_cmap("tab10")([0, 1, 2, 3, 4, 5, 6, 8, 9])[:, :3]  # no grey
    rgb[edges] = colours[owner[edges] % len(colours)]
    return rgb


def main(datalist: str, checkpoint: str, work: str, out: str, field: str = FIELD) -> None:
    folder = Path(work)
    folder.mkdir(parents=True, exist_ok=True)
    test = json.loads(Path(datalist).read_text())["test"]
    item = next((i for i in test if i["name"] == field), None)
    if item is None:
        raise SystemExit(f"{datalist}: no test field named '{field}' (test fields: {[i['name'] for i in test]})")
    (folder / "cell_instance_seg.json").write_text(json.dumps({"training": [item], "test": [item]}))
    subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", CONFIG, "--dataset_dir", str(folder),
         "--checkpoint", checkpoint, "--output_dir", str(folder / "pred"), "--progress", "false"],
        check=True,
    )  # fmt: skip
    image = tifffile.imread(item["image"][0]).astype(np.float32)
    truth = np.asarray(Image.open(item["label"])).astype(np.int64)
    truth = truth[..., 0] if truth.ndim == 3 else truth
    pred = tifffile.imread(folder / "pred" / f"{field}_cells.tif").astype(np.int64)
    score = mean_average_precision(truth, pred)
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.2))
    for ax, labels, title in (
        (axes[0], truth, f"{field}: hand-drawn cells ({int(truth.max())})"),
        (axes[1], pred, f"cell_instance_seg, random init, 408 CPU steps: {int(pred.max())} cells, mAP {score:.2f}"),
    ):
        ax.imshow(_outlined(image, labels))
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"{out}: mAP {score:.3f}, {int(pred.max())} predicted / {int(truth.max())} hand-drawn cells")


if __name__ == "__main__":
    main(*sys.argv[1:6])
