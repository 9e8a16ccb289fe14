"""Where the extra objects of the Usiigaci N = 24 model come from, on training fields (never the test fields).

Predict set01-set04 with the trained model, then count the unmatched predicted objects (best IoU < 0.5 with any
hand-drawn cell) on background (> 50 % of their pixels outside every cell) or inside cells, with their areas, and
the mAP after removing predicted objects below a minimum area (the bundle runs with `--min_area 0`, every object kept):

    python docs/results/real_cell_cpu400/small_objects.py outputs/usiigaci_all/cell_instance_seg.json \
        outputs/exp/cells_cpu400/models/model.pt outputs/exp/diag
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from monai_isl.metrics.instance import map_by_min_area

MIN_AREAS = (0, 50, 100, 200, 400, 800)


def main(datalist: str, checkpoint: str, out: str, n_fields: int = 4) -> None:
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    items = json.loads(Path(datalist).read_text())["training"][:n_fields]
    (folder / "cell_instance_seg.json").write_text(json.dumps({"training": items, "test": items}))
    config = "bundles/cell_instance_seg/configs/inference.yaml"
    subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", config, "--dataset_dir", str(folder),
         "--checkpoint", checkpoint, "--output_dir", str(folder / "pred"), "--progress", "false",
         "--min_area", "0"],
        check=True,
    )  # fmt: skip
    scores: dict[int, list[float]] = {a: [] for a in MIN_AREAS}
    for item in items:
        pred = tifffile.imread(folder / "pred" / f"{item['name']}_cells.tif").astype(np.int64)
        lab = np.asarray(Image.open(item["label"])).astype(np.int64)
        lab = lab[..., 0] if lab.ndim == 3 else lab
        n_pred, n_lab = int(pred.max()), int(lab.max())
        overlap = np.bincount((pred * (n_lab + 1) + lab).ravel(), minlength=(n_pred + 1) * (n_lab + 1))
        overlap = overlap.reshape(n_pred + 1, n_lab + 1)
        area_p, area_l = overlap.sum(1), overlap.sum(0)
        iou = overlap[1:, 1:] / (area_p[1:, None] + area_l[None, 1:] - overlap[1:, 1:])
        matched = iou.max(1) >= 0.5
        on_bg = ~matched & (overlap[1:, 0] / area_p[1:] > 0.5)
        inside = ~matched & ~on_bg
        size = area_p[1:]
        print(
            f"{item['name']}: cells {n_lab}, predicted {n_pred}, matched {matched.sum()}; unmatched on background "
            f"{on_bg.sum()} (median area {np.median(size[on_bg]) if on_bg.any() else 0:.0f} px), inside cells "
            f"{inside.sum()} (median {np.median(size[inside]) if inside.any() else 0:.0f} px); median cell area "
            f"{np.median(area_l[1:]):.0f} px"
        )
        for a, score in zip(MIN_AREAS, map_by_min_area(lab, pred, MIN_AREAS)):
            scores[a].append(float(score))
    for a, values in scores.items():
        print(f"objects >= {a} px kept: mAP {np.mean(values):.3f} ({' / '.join(f'{v:.3f}' for v in values)})")


if __name__ == "__main__":
    main(*sys.argv[1:4])
