"""The post-processing fit's table for a trained cell model: best h per minimum object area, on training fields.

Predicts the datalist's `training` fields whole (the bundle's validation preprocessing and sliding window), then
fits h for each minimum area (fractions of the annotated cells' median area) with
``monai_isl.instance_fit.fit_watershed_params``; the test fields are never used:

    python docs/results/real_cell_cpu400/min_area_grid.py outputs/usiigaci_all outputs/exp/cells_cpu400/models/model.pt
"""

from __future__ import annotations

import sys

import torch
from monai.bundle import ConfigParser

from monai_isl.data import load_datalist
from monai_isl.instance_fit import fit_watershed_params, min_area_grid_for, predict_fields

FRACTIONS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0)


def main(dataset_dir: str, checkpoint: str) -> None:
    config = ConfigParser()
    config.read_config(
        ["bundles/cell_instance_seg/configs/train.yaml", "bundles/cell_instance_seg/configs/evaluate.yaml"]
    )
    config.update({"dataset_dir": dataset_dir, "checkpoint": checkpoint, "device": "$torch.device('cpu')"})
    network = config.get_parsed_content("network")
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    network.load_state_dict(state.get("model", state))
    items = load_datalist(config.get_parsed_content("datalist"), "training")
    fields = predict_fields(
        network,
        items,
        config.get_parsed_content("validate#preprocessing"),
        config.get_parsed_content("validate#inferer"),
    )
    grid, median = min_area_grid_for(fields[2], FRACTIONS)
    result = fit_watershed_params(*fields, min_areas=grid)
    best: dict[float, tuple[float, float]] = {}
    for _, h, area, score in result["table"]:
        best[area] = max(best.get(area, (-1.0, 0.0)), (score, h))
    print(f"{len(items)} training fields, median annotated cell {median:.0f} px")
    for area, (score, h) in sorted(best.items()):
        print(f"min_area {area:7.1f} px ({area / median:.2f} x median): best mAP {score:.3f} at h {h:.1f}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
