"""Per Usiigaci field: annotated cells, their median area, and the share of cells a fixed minimum object area
removes (1314 px: the min_area fitted in the issue's unseen-field run; 738 px: the one fitted on set01-24).

Run from the repository root: ``python docs/results/real_cell_generalisation/cell_sizes.py [../shared/data/usiigaci]``
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from monai_isl.io import read_image

root = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/usiigaci")
print("field,cells,median_area_px,below_1314px,below_738px")
for folder in sorted(root.glob("set*")):
    labels = np.asarray(read_image(folder / "cells.png"))[0].astype(np.int64)
    areas = np.bincount(labels.ravel())[1:]
    areas = areas[areas > 0]
    print(f"{folder.name},{areas.size},{int(np.median(areas))},{(areas < 1314).mean():.2f},{(areas < 738).mean():.2f}")
