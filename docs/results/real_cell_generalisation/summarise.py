"""The comparison table of README.md here: mean AP@0.5, AP@0.75 and mAP over the six never-tuned fields, per model
(base / new training, each with the pixel or the relative minimum area, with or without cell-size resampling) and
condition (as imaged; shifted_fields.py's).

    python docs/results/real_cell_generalisation/summarise.py [outputs/exp]
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

MODELS = {
    "base": "flips/rotations (old), pixel min_area",
    "base_relative": "flips/rotations (old), relative min_area",
    "new_pixels": "+ zoom & intensity, pixel min_area",
    "new": "+ zoom & intensity, relative min_area",
    "base_scaled": "flips/rotations (old), relative min_area, cell-size resampling",
    "new_scaled": "+ zoom & intensity, relative min_area, cell-size resampling (**the new defaults**)",
}
CONDITIONS = ("as imaged", "smaller", "larger", "contrast")


def scores(folder: Path) -> tuple[float, float, float] | None:
    table = folder / "test_ap_table.csv"
    if not table.is_file():
        return None
    rows = [r for r in csv.DictReader(table.open()) if r["filename"] not in ("mean", "std", "median", "min", "max")]
    return tuple(float(np.mean([float(r[k]) for r in rows])) for k in ("AP@0.50", "AP@0.75", "mAP"))


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "outputs/exp")
    print("| model | " + " | ".join(CONDITIONS) + " |")
    print("|---|" + "---|" * len(CONDITIONS))
    for model, text in MODELS.items():
        cells = []
        for condition in CONDITIONS:
            folder = root / model / "eval" if condition == "as imaged" else root / "shifted" / f"{model}_{condition}"
            s = scores(folder)
            cells.append("-" if s is None else f"{s[2]:.3f} ({s[0]:.2f} / {s[1]:.2f})")
        print(f"| {text} | " + " | ".join(cells) + " |")
    print("\nmAP@0.5:0.95 (AP@0.5 / AP@0.75), mean over set04, 09, 14, 19, 24, 29")


if __name__ == "__main__":
    main()
