"""The real-nucleus sweep's datalist: 256x256 annotated tiles from the top half, validation strip, whole bottom half.

Input: ``python -m monai_isl prepare isl_example --out outputs/isl_condition_b`` (phase planes 0, 6, 12 -> DAPI,
nucleus labels derived from DAPI; training region 496x736 and validation strip 496x256 of the top half, test =
the bottom half 496x992). Cuts the training region into a 2 x 3 grid of 256x256 tiles (rows 0 and 240, columns 0,
240 and 480: 16 px overlaps) as the annotated pool, leaves out tiles with under 1 % nucleus pixels (an annotated
image shows nuclei), keeps the validation strip and the whole test field.

    python docs/results/real_nucleus_cpu/make_tiles.py outputs/isl_condition_b outputs/isl_nuclei_256
"""

import json
import sys
from pathlib import Path

import numpy as np

from monai_isl.io import read_image, write_image

src, out = Path(sys.argv[1]), Path(sys.argv[2])
doc = json.loads((src / "nucleus_seg.json").read_text())
item = doc["training"][0]
images = [np.asarray(read_image(src / f))[0] for f in item["image"]]
label = np.asarray(read_image(src / item["label"]))[0]
training = []
for r in (0, 240):
    for c in (0, 240, 480):
        name = f"tile_r{r}_c{c}"
        if (label[r : r + 256, c : c + 256] > 0).mean() < 0.01:
            continue
        files = []
        for i, im in enumerate(images):
            files.append(f"{name}/ch{i}.tif")
            write_image(out / files[-1], im[r : r + 256, c : c + 256])
        write_image(out / name / "nuclei.tif", label[r : r + 256, c : c + 256])
        training.append({"image": files, "label": f"{name}/nuclei.tif", "name": name})


def _absolute(it: dict) -> dict:
    return {**it, "image": [str((src / f).resolve()) for f in it["image"]], "label": str((src / it["label"]).resolve())}


rest = {k: [_absolute(it) for it in doc[k]] for k in ("validation", "test")}
content = {"description": f"256x256 tiles of {src} (make_tiles.py)", "training": training, **rest}
(out / "nucleus_seg.json").write_text(json.dumps(content, indent=2))
print(f"wrote {len(training)} training tiles to {out}")
