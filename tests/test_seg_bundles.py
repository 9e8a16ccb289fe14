"""nucleus_seg and cell_instance_seg end to end through monai.bundle on tiny synthetic data, ISL and baseline."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from helpers import REPO, SCHEMA, config_files, train_tiny
from helpers import TINY_ONE_EPOCH as TINY
from monai.bundle import run, verify_metadata

from monai_isl.data import load_datalist
from monai_isl.io import read_image
from monai_isl.metrics import iou_score, mean_average_precision
from monai_isl.networks import PaddedFlexibleUNet

_config = config_files


def _isl_checkpoint(path: Path, in_channels: int) -> Path:
    """Stands in for a trained dapi_isl / cellmask_isl model.pt (same architecture and key names)."""
    torch.manual_seed(0)
    net = PaddedFlexibleUNet(in_channels=in_channels, out_channels=1, backbone="densenet121", spatial_dims=2)
    torch.save(net.state_dict(), path)
    return path


def _train_and_predict(
    name: str, synth_dir: Path, tmp_path: Path, in_channels: int, infer: dict | None = None, **overrides
) -> dict:
    """Train ``name`` on the synthetic fields, then evaluate and predict with its model.pt; the saved state dict."""
    isl = _isl_checkpoint(tmp_path / "isl.pt", in_channels)
    models = train_tiny(name, tmp_path, dataset_dir=str(synth_dir), isl_checkpoint=str(isl), **{**TINY, **overrides})
    # fp32: evaluation and inference must agree to the pixel; under bf16 (auto on CPUs with bf16 units) their
    # layouts (inference: channels_last) round differently, which an untrained network's near-threshold output
    # shows; bf16 against fp32 is gated in benchmarks/bench_precision.py
    common = {
        "dataset_dir": str(synth_dir),
        "checkpoint": str(models / "model.pt"),
        "sw_roi_size": [64, 64],
        "precision": "fp32",
    }
    # evaluation and inference rebuild the trained architecture (with or without the ISL head) by themselves
    run(config_file=_config(name, "evaluate"), output_dir=str(tmp_path / "eval"), **common)
    run(config_file=_config(name, "inference"), output_dir=str(tmp_path / "pred"), **common, **(infer or {}))
    return torch.load(models / "model.pt", map_location="cpu")


def _rows(path: Path) -> list[list[str]]:
    with open(path) as f:
        return list(csv.reader(f))


@pytest.mark.parametrize("init", ["isl", "none"])
def test_nucleus_seg(init: str, synth_dir: Path, tmp_path: Path) -> None:
    # calibrate false: the paper's fixed sigmoid(x - 0.5); the calibrated start is tested below
    saved = _train_and_predict("nucleus_seg", synth_dir, tmp_path, 3, init=init, calibrate=False)
    assert float(saved["1.shift"]) == (0.5 if init == "isl" else 0.0)
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


def test_nucleus_seg_step0_is_a_candidate_and_calibrated(synth_dir: Path, tmp_path: Path) -> None:
    """Validation runs before the first step, so model.pt can be the (calibrated) ISL start itself.

    With validation only at step 0 (val_interval beyond max_epochs, and the validation after the last epoch turned
    off), model.pt exists only through that validation and must hold the ISL weights unchanged, with the shift fitted
    on the training labels instead of 0.5.
    """
    isl = _isl_checkpoint(tmp_path / "dapi.pt", 3)
    models = train_tiny(
        "nucleus_seg",
        tmp_path,
        dataset_dir=str(synth_dir),
        init="isl",
        isl_checkpoint=str(isl),
        **TINY,
        val_interval=1000,
        **{"train#handlers#0#exec_at_end": False},
    )
    saved = torch.load(models / "model.pt", map_location="cpu")
    start = torch.load(isl, map_location="cpu")
    assert all(torch.equal(saved[f"0.{k}"], v) for k, v in start.items())  # the untrained ISL start
    final = torch.load(models / "checkpoint_final.pt", map_location="cpu")["model"]
    assert not all(torch.equal(final[f"0.{k}"], v) for k, v in start.items())  # training did move the weights
    assert float(saved["1.shift"]) != 0.5 and float(saved["1.shift"]) == float(final["1.shift"])


@pytest.mark.parametrize("init", ["isl", "none"])
def test_cell_instance_seg(init: str, synth_dir: Path, tmp_path: Path) -> None:
    saved = _train_and_predict("cell_instance_seg", synth_dir, tmp_path, 1, {"write_overlay": True}, init=init)
    assert float(saved["2.watershed_h"]) >= 0  # h auto: fitted after training and stored in model.pt
    assert float(saved["2.watershed_min_area"]) >= 0  # min_area auto: fitted with it
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


@pytest.mark.parametrize(("name", "isl"), [("nucleus_seg", "dapi_isl"), ("cell_instance_seg", "cellmask_isl")])
@pytest.mark.parametrize("given", [False, True])
def test_isl_init_without_checkpoint_says_what_to_do(
    name: str, isl: str, given: bool, synth_dir: Path, tmp_path: Path
) -> None:
    """A bundle never reads its sibling's folder: init isl needs --isl_checkpoint, and says so before any data is
    read (not set: the key and an example; set to a missing file: that file)."""
    overrides = {"isl_checkpoint": str(tmp_path / "no_model.pt")} if given else {}
    with pytest.raises(Exception) as info:
        run(
            config_file=_config(name, "train"),
            dataset_dir=str(tmp_path / "no_data"),  # not even read: the check comes first
            ckpt_dir=str(tmp_path / "models"),
            output_dir=str(tmp_path),
            **overrides,
            **TINY,
        )
    err, messages = info.value, []
    while err is not None:
        messages.append(str(err))
        err = err.__cause__ or err.__context__
    text = "\n".join(messages)
    assert f"--isl_checkpoint bundles/{isl}/models/model.pt" in text and "--init imagenet" in text
    assert ("no_model.pt' does not exist" if given else "'isl_checkpoint' is not set") in text
    assert not list((tmp_path / "models").glob("*.pt"))
