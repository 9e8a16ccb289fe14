"""The two ISL bundles end to end through monai.bundle on tiny synthetic data: train -> evaluate -> inference."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from helpers import REPO, SCHEMA, TINY, config_files, train_tiny
from monai.bundle import ConfigParser, run, verify_metadata
from monai.inferers import SlidingWindowInferer
from scipy.stats import pearsonr

from monai_isl.data import load_datalist
from monai_isl.transforms import ApplyPercentilesd, LoadFieldd, PercentileStatsd

ISL_BUNDLES = {"dapi_isl": 3, "cellmask_isl": 1}


_config = config_files


@pytest.mark.parametrize("name", sorted(ISL_BUNDLES))
def test_train_evaluate_infer(name: str, synth_dir: Path, tmp_path: Path) -> None:
    models = train_tiny(name, tmp_path, dataset_dir=str(synth_dir), max_epochs=2)
    assert (models / "model.pt").is_file() and (models / "checkpoint_final.pt").is_file()
    assert any((tmp_path / "runs").glob("events.out.tfevents*"))
    final = torch.load(models / "checkpoint_final.pt", map_location="cpu", weights_only=False)
    assert (
        set(final) == {"model", "optimizer", "trainer", "best_model"}
        and final["trainer"]["iteration"] == 2 * final["trainer"]["epoch_length"]
    )

    # evaluate with a datalist that has nothing but `test`: train.yaml's training part is never built
    test_items = load_datalist(synth_dir / f"{name}.json", "test")
    (tmp_path / "test_only.json").write_text(json.dumps({"test": test_items}))
    eval_dir = tmp_path / "eval"
    run(
        config_file=_config(name, "evaluate"),
        datalist=str(tmp_path / "test_only.json"),
        checkpoint=str(models / "model.pt"),
        output_dir=str(eval_dir),
        cache_dir=str(tmp_path / "cache"),
        cache="disk",
        sw_roi_size=[64, 64],
    )
    assert not (tmp_path / "cache").exists()  # evaluation caches nothing, even where training would cache on disk
    with open(eval_dir / "test_pcc_raw.csv") as f:
        rows = list(csv.reader(f))
    assert len(rows) == 1 + len(test_items)

    # independent recomputation of the first test image's whole-field PCC from the saved weights
    parser = ConfigParser()
    parser.read_config(_config(name, "evaluate"))
    parser["dataset_dir"] = str(synth_dir)
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(torch.load(models / "model.pt", map_location="cpu"))
    network.eval()
    item = LoadFieldd(["image", "label"], max_project="label")(test_items[0])
    item = PercentileStatsd("image", 1.0, 99.8)(item)
    item = PercentileStatsd("label", 1.0, 99.9)(item)
    item = ApplyPercentilesd(["image", "label"])(item)
    with torch.no_grad():
        pred = SlidingWindowInferer((64, 64), sw_batch_size=4, overlap=0.25, mode="gaussian")(
            torch.as_tensor(item["image"])[None], network
        )
    expected = pearsonr(pred.numpy().ravel(), item["label"].ravel()).statistic
    assert float(rows[1][1]) == pytest.approx(expected, abs=2e-3)  # CSV holds 4 decimals

    out_dir = tmp_path / "pred"
    run(
        config_file=_config(name, "inference"),
        dataset_dir=str(synth_dir),
        checkpoint=str(models / "model.pt"),
        output_dir=str(out_dir),
        sw_roi_size=[64, 64],
        precision="fp32",  # compared with an fp32 recomputation to 1e-4 (bf16: benchmarks/bench_precision.py)
    )
    written = sorted(out_dir.glob("*.tif"))
    assert len(written) == len(test_items)
    first = tifffile.imread(written[0])
    assert first.dtype == np.float32 and first.shape == item["image"].shape[1:]
    np.testing.assert_allclose(first, pred[0, 0].numpy(), atol=1e-4)


@pytest.mark.parametrize("name", sorted(ISL_BUNDLES))
def test_metadata_validates(name: str) -> None:
    if not SCHEMA.is_file():
        pytest.skip(f"schema not found: {SCHEMA}")
    verify_metadata(meta_file=str(REPO / "bundles" / name / "configs" / "metadata.json"), filepath=str(SCHEMA))


def _chain(err: BaseException | None) -> str:
    """All messages of an exception chain (MONAI wraps a transform's error in RuntimeErrors)."""
    messages = []
    while err is not None:
        messages.append(str(err))
        err = err.__cause__ or err.__context__
    return "\n".join(messages)


def test_wrong_channel_count_fails_before_training(synth_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(Exception) as info:
        run(
            config_file=_config("dapi_isl", "train"),
            dataset_dir=str(synth_dir),
            ckpt_dir=str(tmp_path),
            output_dir=str(tmp_path),
            in_channels=2,
            max_epochs=1,
            **TINY,
        )
    assert "key 'image': expected 2 channel(s) for the network, got 3" in _chain(info.value)
    assert not (tmp_path / "model.pt").exists()


def test_command_line_as_a_user_runs_it(synth_dir: Path, tmp_path: Path) -> None:
    """Exactly the README's command, from the repository root, in a fresh process."""
    cmd = [
        sys.executable, "-m", "monai.bundle", "run",
        "--config_file", "bundles/cellmask_isl/configs/train.yaml",
        "--dataset_dir", str(synth_dir),
        "--train#trainer#max_epochs", "1",
        "--ckpt_dir", str(tmp_path / "models"),
        "--output_dir", str(tmp_path / "runs"),
        "--roi_size", "[64,64]", "--num_workers", "0",
    ]  # fmt: skip
    result = subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "models" / "model.pt").is_file()
    assert "val_pcc" in result.stdout + result.stderr


def test_resume_continues_from_the_last_checkpoint(synth_dir: Path, tmp_path: Path) -> None:
    common = {
        "config_file": _config("dapi_isl", "train"),
        "dataset_dir": str(synth_dir),
        "ckpt_dir": str(tmp_path / "models"),
        "output_dir": str(tmp_path / "runs"),
        **TINY,
    }
    with pytest.raises(Exception) as info:
        run(max_epochs=1, resume="true", **common)
    assert "--resume: no checkpoint_epoch=N.pt or checkpoint_final.pt" in _chain(info.value)
    run(max_epochs=1, resume="false", **common)
    first = torch.load(tmp_path / "models" / "checkpoint_final.pt", map_location="cpu", weights_only=False)
    run(max_epochs=2, resume="true", **common)
    second = torch.load(tmp_path / "models" / "checkpoint_final.pt", map_location="cpu", weights_only=False)
    # one more epoch on top of the first run, not two from scratch
    assert second["trainer"]["iteration"] == first["trainer"]["iteration"] + first["trainer"]["epoch_length"]
    assert second["optimizer"]["state"][0]["step"] > first["optimizer"]["state"][0]["step"]


@pytest.mark.parametrize(("text", "expected"), [("true", True), ("False", False), ("0", False), (True, True)])
def test_command_line_switches(text: object, expected: bool) -> None:
    from monai_isl.bundle import as_bool

    assert as_bool(text) is expected


def test_bad_switch_is_refused() -> None:
    from monai_isl.bundle import as_bool

    with pytest.raises(ValueError, match="expected true or false"):
        as_bool("maybe")


def test_without_validation_the_final_model_is_kept(synth_dir: Path, tmp_path: Path) -> None:
    """The README calls the validation section optional: without one, model.pt is the final network (and the
    segmentation bundles and the sweep, which read model.pt, still work)."""
    doc = json.loads((synth_dir / "dapi_isl.json").read_text())
    items = {k: load_datalist(synth_dir / "dapi_isl.json", k) for k in ("training", "test")}
    (tmp_path / "no_validation.json").write_text(json.dumps({**items, "description": doc.get("description", "")}))
    models = train_tiny("dapi_isl", tmp_path, datalist=str(tmp_path / "no_validation.json"), max_epochs=1)
    saved = torch.load(models / "model.pt", map_location="cpu", weights_only=True)
    final = torch.load(models / "checkpoint_final.pt", map_location="cpu", weights_only=False)["model"]
    assert saved.keys() == final.keys() and all(torch.equal(saved[k], final[k]) for k in saved)
