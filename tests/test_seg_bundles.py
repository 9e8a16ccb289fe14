"""nucleus_seg and cell_instance_seg end to end through monai.bundle on tiny synthetic data, ISL and baseline."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from monai.bundle import run, verify_metadata

from monai_isl.data import load_datalist
from monai_isl.io import read_image
from monai_isl.metrics import iou_score, mean_average_precision
from monai_isl.networks import PaddedFlexibleUNet

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO.parent / "shared" / "monai" / "meta_schema_20240725.json"
TINY = {"roi_size": [64, 64], "num_samples": 2, "batch_size": 1, "num_workers": 0, "max_epochs": 1}


def _config(name: str, kind: str) -> str:
    return str(REPO / "bundles" / name / "configs" / f"{kind}.yaml")


def _isl_checkpoint(path: Path, in_channels: int) -> Path:
    """Stands in for a trained dapi_isl / cellmask_isl model.pt (same architecture and key names)."""
    torch.manual_seed(0)
    net = PaddedFlexibleUNet(in_channels=in_channels, out_channels=1, backbone="densenet121", spatial_dims=2)
    torch.save(net.state_dict(), path)
    return path


def _rows(path: Path) -> list[list[str]]:
    with open(path) as f:
        return list(csv.reader(f))


@pytest.mark.parametrize("init", ["isl", "none"])
def test_nucleus_seg(init: str, synth_dir: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    run(
        config_file=_config("nucleus_seg", "train"),
        dataset_dir=str(synth_dir),
        ckpt_dir=str(models),
        output_dir=str(tmp_path / "runs"),
        init=init,
        isl_checkpoint=str(_isl_checkpoint(tmp_path / "dapi.pt", 3)),
        **TINY,
    )
    saved = torch.load(models / "model.pt", map_location="cpu")
    assert float(saved["1.shift"]) == (0.5 if init == "isl" else 0.0)

    common = {"dataset_dir": str(synth_dir), "checkpoint": str(models / "model.pt"), "roi_size": [64, 64]}
    run(config_file=_config("nucleus_seg", "evaluate"), output_dir=str(tmp_path / "eval"), **common)
    run(config_file=_config("nucleus_seg", "inference"), output_dir=str(tmp_path / "pred"), **common)
    rows = _rows(tmp_path / "eval" / "test_iou_raw.csv")
    items = load_datalist(synth_dir / "nucleus_seg.json", "test")
    assert [r[0] for r in rows[1:]] == [it["name"] for it in items]
    for row, item in zip(rows[1:], items):
        mask = tifffile.imread(tmp_path / "pred" / f"{item['name']}_nuclei.tif")
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
        truth = read_image(item["label"])[0] > 0
        assert mask.shape == truth.shape
        # the CSV's IoU equals the IoU of the written mask, recomputed with plain numpy
        union = np.logical_or(mask > 0, truth).sum()
        expected = 1.0 if union == 0 else np.logical_and(mask > 0, truth).sum() / union
        assert float(row[1]) == pytest.approx(expected, abs=1e-3)
        assert iou_score(mask, truth) == pytest.approx(expected)


@pytest.mark.parametrize("init", ["isl", "none"])
def test_cell_instance_seg(init: str, synth_dir: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    run(
        config_file=_config("cell_instance_seg", "train"),
        dataset_dir=str(synth_dir),
        ckpt_dir=str(models),
        output_dir=str(tmp_path / "runs"),
        init=init,
        isl_checkpoint=str(_isl_checkpoint(tmp_path / "cellmask.pt", 1)),
        **TINY,
    )
    assert (models / "model.pt").is_file()
    common = {"dataset_dir": str(synth_dir), "checkpoint": str(models / "model.pt"), "roi_size": [64, 64]}
    # evaluation and inference rebuild the trained architecture (with or without the ISL head) by themselves
    run(config_file=_config("cell_instance_seg", "evaluate"), output_dir=str(tmp_path / "eval"), **common)
    run(
        config_file=_config("cell_instance_seg", "inference"),
        output_dir=str(tmp_path / "pred"),
        write_overlay=True,
        **common,
    )
    items = load_datalist(synth_dir / "cell_instance_seg.json", "test")
    table = _rows(tmp_path / "eval" / "test_ap_table.csv")
    assert table[0][0] == "filename" and table[0][-1] == "mAP" and len(table[0]) == 12
    assert [r[0] for r in table[1 : 1 + len(items)]] == [it["name"] for it in items]
    per_threshold = _rows(tmp_path / "eval" / "test_per_threshold.csv")
    assert len(per_threshold) == 1 + 10 * len(items)
    raw = _rows(tmp_path / "eval" / "test_map_raw.csv")
    for row, item in zip(table[1:], items):
        labels = tifffile.imread(tmp_path / "pred" / f"{item['name']}_cells.tif")
        assert labels.dtype == np.uint16 and labels.shape == read_image(item["label"]).shape[1:]
        assert (tmp_path / "pred" / f"{item['name']}_overlay.png").is_file()
        # evaluation and inference agree: the mAP of the written labels is the table's
        expected = mean_average_precision(read_image(item["label"])[0], labels)
        assert float(row[-1]) == pytest.approx(expected, abs=1e-3)
    assert [float(r[1]) for r in raw[1:]] == pytest.approx([float(r[-1]) for r in table[1 : 1 + len(items)]], abs=1e-3)


@pytest.mark.parametrize("name", ["nucleus_seg", "cell_instance_seg"])
def test_metadata_validates(name: str) -> None:
    if not SCHEMA.is_file():
        pytest.skip(f"schema not found: {SCHEMA}")
    verify_metadata(meta_file=str(REPO / "bundles" / name / "configs" / "metadata.json"), filepath=str(SCHEMA))


def test_isl_init_without_checkpoint_says_what_to_do(synth_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(Exception) as info:
        run(
            config_file=_config("nucleus_seg", "train"),
            dataset_dir=str(synth_dir),
            ckpt_dir=str(tmp_path),
            output_dir=str(tmp_path),
            isl_checkpoint=str(tmp_path / "no_model.pt"),
            **TINY,
        )
    err, messages = info.value, []
    while err is not None:
        messages.append(str(err))
        err = err.__cause__ or err.__context__
    assert any("Train dapi_isl first" in m for m in messages)
