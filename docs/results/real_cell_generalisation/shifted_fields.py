"""The six never-tuned Usiigaci fields as another lab might image them: a stress test for unseen data.

    python docs/results/real_cell_generalisation/shifted_fields.py [--src ../shared/data/usiigaci] [--out DIR]

Writes, per condition, the fields set04, 09, 14, 19, 24, 29 changed as a different microscope or experiment would
change them, and a datalist with them as its ``test`` section (``DIR/<condition>/cell_instance_seg.json``):

- ``smaller``: the field resampled to 0.67 x its size (cells of 0.45 x the area, e.g. a lower magnification);
- ``larger``: resampled to 1.5 x (2.25 x the area), centre 1024 x 1024 kept;
- ``contrast``: gamma 1.6 on the raw intensities and a Gaussian blur of sigma 1.5 px (other illumination, focus).

The factors were chosen before any model was scored on them, outside the training zoom (x0.75-1.33) so that
they test extrapolation, not the augmentation's own range; the images are per-field percentile-normalised, so a
linear brightness change would be no test at all. Labels follow the image (nearest neighbour).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from monai_isl.io import read_image, write_image

FIELDS = ("set04", "set09", "set14", "set19", "set24", "set29")
CONDITIONS = ("smaller", "larger", "contrast")


def shift(image: np.ndarray, labels: np.ndarray, condition: str) -> tuple[np.ndarray, np.ndarray]:
    """One field (2D image, 2D labels) under ``condition``."""
    image = image.astype(np.float32)
    if condition in ("smaller", "larger"):
        factor = 0.67 if condition == "smaller" else 1.5
        image = ndi.zoom(image, factor, order=1)
        labels = ndi.zoom(labels, factor, order=0)
        if factor > 1:
            y0, x0 = (image.shape[0] - 1024) // 2, (image.shape[1] - 1024) // 2
            image, labels = image[y0 : y0 + 1024, x0 : x0 + 1024], labels[y0 : y0 + 1024, x0 : x0 + 1024]
    elif condition == "contrast":
        low, high = float(image.min()), float(image.max())
        image = ((image - low) / max(high - low, 1e-6)) ** 1.6 * (high - low) + low
        image = ndi.gaussian_filter(image, 1.5)
    else:
        raise ValueError(f"condition must be one of {CONDITIONS}, got {condition!r}")
    return image.astype(np.float32), labels.astype(np.uint16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=Path("../shared/data/usiigaci"))
    parser.add_argument("--out", type=Path, default=Path("outputs/usiigaci_shifted"))
    args = parser.parse_args()
    for condition in CONDITIONS:
        items = []
        for name in FIELDS:
            image = read_image(args.src / name / "phase.tif")
            labels = read_image(args.src / name / "cells.png")
            image, labels = shift(image.reshape(image.shape[-2:]), labels.reshape(labels.shape[-2:]), condition)
            folder = args.out / condition / name
            folder.mkdir(parents=True, exist_ok=True)
            write_image(folder / "phase.tif", image)
            write_image(folder / "cells.tif", labels)
            items.append(
                {
                    "image": [str((folder / "phase.tif").resolve())],
                    "label": str((folder / "cells.tif").resolve()),
                    "name": name,
                }
            )
        datalist = {"description": f"never-tuned Usiigaci fields, {condition} ({__file__})", "test": items}
        (args.out / condition / "cell_instance_seg.json").write_text(json.dumps(datalist, indent=2))
        print(f"wrote {args.out / condition}: {len(items)} fields")


if __name__ == "__main__":
    main()
