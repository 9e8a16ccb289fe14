"""Command line and data preparation: synth, prepare isl_example / nuclei / usiigaci, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from helpers import REPO

from monai_isl.data import load_datalist
from monai_isl.io import read_image
from monai_isl.metrics import iou_score, match_instances
from monai_isl.prepare import nuclei_from_fluorescence, shift_image


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "monai_isl", *args], cwd=REPO, capture_output=True, text=True)


def test_help_lists_the_commands() -> None:
    result = _cli("--help")
    assert result.returncode == 0
    for command in ("synth", "demo", "prepare"):
        assert command in result.stdout + result.stderr  # fire writes help to stderr without a terminal


def test_synth_command_writes_a_dataset(tmp_path: Path) -> None:
    result = _cli("synth", "--out", str(tmp_path / "s"), "--n-images", "3", "--size", "64", "--seed", "5")
    assert result.returncode == 0, result.stderr[-2000:]
    items = load_datalist(tmp_path / "s" / "cell_instance_seg.json", "test")
    assert len(items) == 1 and read_image(items[0]["label"]).dtype == np.uint16
    bad = _cli("synth", "--out", str(tmp_path / "t"), "--n-images", "2")
    assert bad.returncode != 0 and "n_images" in (bad.stderr + bad.stdout)


def test_shift_image_moves_content() -> None:
    image = np.zeros((1, 10, 10), np.uint16)
    image[0, 2, 5] = 7
    moved = shift_image(image, (6, -2))
    assert moved[0, 8, 3] == 7 and moved.sum() == 7
    assert shift_image(image, (0, 0)).tolist() == image.tolist()


def test_nuclei_from_fluorescence_against_hand_drawn_nuclei(shared_data: Path) -> None:
    image = read_image(shared_data / "dsb2018_nuclei" / "image.tif")[0]
    truth = read_image(shared_data / "dsb2018_nuclei" / "instances.tif")[0]
    labels = nuclei_from_fluorescence(image, sigma=1.0, min_size=15, min_distance=6)
    assert labels.dtype == np.uint16 and labels.shape == truth.shape
    # a classical stand-in, not a hand annotation: measured IoU 0.73, AP@0.5 0.55, 119 vs 125 nuclei
    assert iou_score(labels, truth) > 0.65
    result = match_instances(truth, labels)
    assert result.ap[0] > 0.45 and 0.8 * result.n_true < result.n_pred < 1.2 * result.n_true
    assert not nuclei_from_fluorescence(np.zeros((32, 32))).any()


def test_prepare_isl_example_registers_and_splits(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "isl"
    result = _cli("prepare", "isl_example", "--src", str(shared_data / "isl_condition_b"), "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    sections = {s: load_datalist(out / "dapi_isl.json", s) for s in ("training", "validation", "test")}
    train, test = sections["training"][0], sections["test"][0]
    assert len(train["image"]) == 3 and read_image(train["image"][0]).shape == (1, 496, 736)
    assert read_image(test["label"]).shape == (1, 496, 992)
    # the training phase plane is the top-left of the original, cut by the margin
    original = read_image(shared_data / "isl_condition_b" / "phase_z00.png")[0]
    np.testing.assert_array_equal(read_image(train["image"][0])[0], original[16:512, 16:752])
    nuclei = load_datalist(out / "nucleus_seg.json", "test")[0]
    assert read_image(nuclei["label"]).max() > 10
    assert "moved by (6, -2)" in json.loads((out / "dapi_isl.json").read_text())["description"]


def test_prepare_isl_example_tiles_for_the_sweep(shared_data: Path, tmp_path: Path) -> None:
    from monai_isl.prepare import isl_example

    src = shared_data / "isl_condition_b"
    whole = Path(isl_example(src=str(src), out=str(tmp_path / "whole")))
    tiled = Path(isl_example(src=str(src), out=str(tmp_path / "tiled"), tile=160))
    train_whole = read_image(load_datalist(whole / "nucleus_seg.json", "training")[0]["label"])[0]
    tiles = load_datalist(tiled / "nucleus_seg.json", "training")
    assert len(tiles) == (496 // 160) * (736 // 160) == 12  # the training region, remainder dropped
    assert len(load_datalist(tiled / "nucleus_seg.json", "test")) == 3 * 6
    assert len(load_datalist(tiled / "dapi_isl.json", "validation")) == 1  # validation strip left whole
    for item in tiles:  # every tile is its block of the untiled region, for labels and inputs
        i, j = int(item["name"][-3]), int(item["name"][-1])
        block = (slice(160 * i, 160 * (i + 1)), slice(160 * j, 160 * (j + 1)))
        np.testing.assert_array_equal(read_image(item["label"])[0], train_whole[block])
    assert {t["name"] for t in tiles} == {f"training_r{i}c{j}" for i in range(3) for j in range(4)}
    kept = Path(isl_example(src=str(src), out=str(tmp_path / "kept"), tile=160, drop_empty=True))
    kept_tiles = load_datalist(kept / "nucleus_seg.json", "training")
    non_empty = [t["name"] for t in tiles if read_image(t["label"]).any()]
    assert [t["name"] for t in kept_tiles] == non_empty and 0 < len(non_empty) < len(tiles)
    assert [t["name"] for t in load_datalist(kept / "dapi_isl.json", "training")] == non_empty


def test_prepare_usiigaci_points_at_the_files(shared_data: Path, tmp_path: Path) -> None:
    result = _cli("prepare", "usiigaci", "--src", str(shared_data / "usiigaci"), "--out", str(tmp_path / "u"))
    assert result.returncode == 0, result.stderr[-2000:]
    test = load_datalist(tmp_path / "u" / "cell_instance_seg.json", "test")
    assert [t["name"] for t in test] == [f"set{n}" for n in range(25, 31)]
    assert len(load_datalist(tmp_path / "u" / "cell_instance_seg.json", "training")) == 21
    missing = _cli(
        "prepare", "usiigaci", "--src", str(shared_data / "usiigaci"), "--out", str(tmp_path / "v"), "--test", "31"
    )
    assert missing.returncode != 0 and "set 31" in missing.stderr


def test_demo_runs_end_to_end_on_tiny_settings(tmp_path: Path) -> None:
    from monai_isl.cli import demo

    result = demo(out=str(tmp_path / "demo"), n_images=4, size=96, epochs=1, roi=64)
    assert -1.0 <= result["pcc_mean"] <= 1.0
    assert json.loads((tmp_path / "demo" / "result.json").read_text())["pcc_mean"] == result["pcc_mean"]
    assert (tmp_path / "demo" / "demo.png").stat().st_size > 0
    assert (tmp_path / "demo" / "models" / "model.pt").is_file()
