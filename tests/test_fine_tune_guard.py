"""The fine-tune guard: the start is scored at step 0, model.pt is the better of start and fine-tuned network, a
strip of each training image is held out when the datalist has no validation section, and a plain warning says
when fine-tuning did not beat the start."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY_ONE_EPOCH, train_tiny
from ignite.engine import Engine, Events

from monai_isl.data import holdout_split, load_datalist, segmentation_sections
from monai_isl.errors import DataError
from monai_isl.handlers import FineTuneGuard
from monai_isl.networks import PaddedFlexibleUNet
from monai_isl.transforms import LoadFieldd
from monai_isl.transforms.field import crop_region


def _datalist_without_validation(synth_dir: Path, name: str) -> Path:
    content = json.loads((synth_dir / f"{name}.json").read_text())
    content.pop("validation", None)
    path = synth_dir / f"{name}_no_validation.json"
    path.write_text(json.dumps(content))
    return path


def test_holdout_strips_partition_every_training_image(synth_dir: Path) -> None:
    path = _datalist_without_validation(synth_dir, "nucleus_seg")
    sections = segmentation_sections(path, 0.25)
    items = load_datalist(path, "training")
    assert len(sections["training"]) == len(sections["validation"]) == len(items)
    loader = LoadFieldd(keys=["image", "label"])
    for item, train, held in zip(items, sections["training"], sections["validation"]):
        whole = loader(dict(item))["label"]
        top, bottom = loader(dict(train))["label"], loader(dict(held))["label"]
        rows = whole.shape[1]
        cut = round(0.75 * rows)
        # the two parts are the image's rows [0, cut) and [cut, rows), nothing shared, nothing lost
        np.testing.assert_array_equal(top, whole[:, :cut])
        np.testing.assert_array_equal(bottom, whole[:, cut:])
        assert train["image"] == item["image"] and held["label"] == item["label"]  # the user's files, not copies


def test_a_validation_section_is_used_as_it_is(synth_dir: Path) -> None:
    sections = segmentation_sections(synth_dir / "nucleus_seg.json", 0.25)
    assert sections["validation"] == load_datalist(synth_dir / "nucleus_seg.json", "validation")
    assert all("region" not in it for it in sections["training"])


@pytest.mark.parametrize("fraction", [0.0, -0.1, 0.6])
def test_holdout_fraction_out_of_range_is_refused(fraction: float) -> None:
    with pytest.raises(ValueError, match="holdout_fraction"):
        holdout_split([{"image": "a.tif", "label": "b.tif", "name": "a"}], fraction)


def test_region_outside_the_field_names_the_key() -> None:
    with pytest.raises(DataError, match="key 'label'"):
        crop_region(np.zeros((1, 10, 10)), [[0.5, 0.5], [0.0, 1.0]], "label")


def _engines(scores: list[float]) -> tuple[Engine, Engine]:
    """A trainer that validates before its first step and after each of its epochs with the given scores."""
    values = iter(scores)
    validator = Engine(lambda e, b: None)

    @validator.on(Events.COMPLETED)
    def _score(engine: Engine) -> None:
        engine.state.key_metric_name = "val_metric"
        engine.state.metrics["val_metric"] = next(values)

    trainer = Engine(lambda e, b: None)
    trainer.add_event_handler(Events.STARTED, lambda e: validator.run([0]))
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: validator.run([0]))
    return trainer, validator


@pytest.mark.parametrize(("scores", "improved"), [([0.5, 0.4, 0.45], False), ([0.5, 0.4, 0.6], True)])
def test_guard_reports_whether_fine_tuning_beat_the_start(
    scores: list[float], improved: bool, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    trainer, validator = _engines(scores)
    guard = FineTuneGuard(validator, output_json=tmp_path / "guard.json")
    guard.attach(trainer)
    with caplog.at_level(logging.INFO, logger="monai_isl.handlers.guard"):
        trainer.run([0], max_epochs=len(scores) - 1)
    report = json.loads((tmp_path / "guard.json").read_text())
    assert report["start"] == scores[0] and report["best"] == max(scores) and report["improved"] is improved
    assert report["best_step"] == scores.index(max(scores))  # one iteration per epoch
    assert ("FINE-TUNING DID NOT BEAT THE START" in caplog.text) is (not improved)


def _train_without_validation(synth_dir: Path, tmp_path: Path, **overrides) -> tuple[Path, Path]:
    """nucleus_seg from a stand-in dapi_isl model on a datalist without a validation section; (models, isl)."""
    torch.manual_seed(0)
    isl = tmp_path / "dapi.pt"
    torch.save(
        PaddedFlexibleUNet(in_channels=3, out_channels=1, backbone="densenet121", spatial_dims=2).state_dict(), isl
    )
    models = train_tiny(
        "nucleus_seg",
        tmp_path,
        datalist=str(_datalist_without_validation(synth_dir, "nucleus_seg")),
        init="isl",
        isl_checkpoint=str(isl),
        **{**TINY_ONE_EPOCH, **overrides},
    )
    return models, isl


def test_without_validation_section_the_start_is_scored_and_can_be_kept(
    synth_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """No validation section, validation only at step 0: model.pt can only come from the step-0 validation on the
    held-out strips, so it must be the untrained ISL start (before the guard: the final network, never scored)."""
    models, isl = _train_without_validation(
        synth_dir, tmp_path, val_interval=1000, **{"train#handlers#0#exec_at_end": False}
    )
    saved = torch.load(models / "model.pt", map_location="cpu")
    start = torch.load(isl, map_location="cpu")
    final = torch.load(models / "checkpoint_final.pt", map_location="cpu")["model"]
    assert all(torch.equal(saved[f"0.{k}"], v) for k, v in start.items())  # model.pt is the start
    assert not all(torch.equal(final[f"0.{k}"], v) for k, v in start.items())  # training did move the weights
    report = json.loads((tmp_path / "runs" / "fine_tune_guard.json").read_text())
    assert report["best_step"] == 0 and report["improved"] is False
    printed = capsys.readouterr().out  # the bundle's logging.conf sends the log to stdout
    assert "FINE-TUNING DID NOT BEAT THE START" in printed and "held out" in printed


def test_without_validation_section_model_pt_is_the_best_scored_network(synth_dir: Path, tmp_path: Path) -> None:
    """Validated at step 0 and after every epoch on the held-out strips: model.pt is the network the report names,
    the start when it scored best, else the later best one (here the last epoch's, checked against the final)."""
    models, isl = _train_without_validation(synth_dir, tmp_path, max_epochs=2, val_interval=1, learning_rate=1e-2)
    report = json.loads((tmp_path / "runs" / "fine_tune_guard.json").read_text())
    saved = torch.load(models / "model.pt", map_location="cpu")
    reference = torch.load(isl, map_location="cpu")
    if report["best_step"] == 0:
        assert all(torch.equal(saved[f"0.{k}"], v) for k, v in reference.items())
    elif report["best"] == report["final"]:
        final = torch.load(models / "checkpoint_final.pt", map_location="cpu")["model"]
        assert all(torch.equal(saved[k], v) for k, v in final.items())
    assert report["improved"] is (report["best"] > report["start"])
