"""Reliability of long runs on tiny synthetic data: checkpoints that survive failed saves, mid-epoch resume,
identical runs from the same seed, a NaN loss that stops the run, unreadable fields skipped and reported, and
unwritable or full output folders refused before the run starts.

The runs with a real killed subprocess are in ``test_resume_kill.py``.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from helpers import REPO
from helpers import TINY_ONE_CROP as TINY
from ignite.engine import Engine, Events
from monai.bundle import ConfigParser, run
from monai.inferers import SlidingWindowInferer

from monai_isl.bundle import attach_resume, check_writable, latest_checkpoint, workflow_configs
from monai_isl.data import list_images
from monai_isl.handlers import AtomicCheckpointSaver, NonFiniteLossError
from monai_isl.handlers.checkpoint import _AtomicDiskSaver
from monai_isl.io import read_image
from monai_isl.transforms.field import scale_by_percentiles

# the mechanics under test (seeding, checkpoints, resume, the NaN stop) do not depend on the network, so most runs
# here swap cellmask_isl's 12.8 M-parameter FlexibleUNet for conftest's tiny U-Net (`tiny_unet_def`);
# test_resume_kill.py runs the real network


def _config(name: str, kind: str) -> list[str]:
    """The config files of workflow ``kind`` of bundle ``name``."""
    return workflow_configs(REPO / "bundles" / name, kind)


def _chain(err: BaseException | None) -> str:
    """All messages of an exception chain (MONAI wraps errors raised inside the run)."""
    messages = []
    while err is not None:
        messages.append(f"{type(err).__name__}: {err}")
        err = err.__cause__ or err.__context__
    return "\n".join(messages)


def _root(err: BaseException) -> BaseException:
    while err.__cause__ or err.__context__:
        err = err.__cause__ or err.__context__
    return err


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


# ---- atomic, kill-safe checkpoint files ----------------------------------------------------------------------------


class _SaveFails:
    """``torch.save`` stand-in: writes part of the file, then fails as a full disk would."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, obj, f, *args, **kwargs) -> None:
        self.calls += 1
        f.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")


def test_failed_save_keeps_the_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    saver = _AtomicDiskSaver(str(tmp_path), filename="model.pt")
    first = {"w": torch.arange(4.0)}
    saver(first, "ignored.pt")
    saver.remove("model.pt")  # what Ignite does before writing the next best model
    failing = _SaveFails()
    monkeypatch.setattr(torch, "save", failing)
    with pytest.raises(OSError, match="No space left"):
        saver({"w": torch.zeros(4)}, "ignored.pt")
    assert failing.calls == 1
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]  # no temp file left, old file kept
    torch.testing.assert_close(_load(tmp_path / "model.pt")["w"], first["w"])


def test_interval_checkpoint_survives_a_failed_save(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ignite removes the previous checkpoint *before* writing the next one; ours only after it is written."""
    net = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    engine = Engine(lambda e, b: None)
    saver = AtomicCheckpointSaver(str(tmp_path), {"model": net, "optimizer": opt}, save_interval=1, n_saved=1)
    saver.attach(engine)
    failing = _SaveFails()

    @engine.on(Events.EPOCH_COMPLETED)
    def _change_weights_then_fail_next_save(e: Engine) -> None:  # runs after the saver's handler
        with torch.no_grad():
            net.weight.add_(1.0)
        if e.state.epoch == 1:
            monkeypatch.setattr(torch, "save", failing)

    expected = net.weight.detach().clone()  # saved at the end of epoch 1, before this handler changes them
    with pytest.raises(OSError, match="No space left"):
        engine.run([0], max_epochs=3)
    monkeypatch.undo()
    assert failing.calls == 1 and engine.state.epoch == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_epoch=1.pt"]
    torch.testing.assert_close(_load(tmp_path / "checkpoint_epoch=1.pt")["model"]["weight"], expected)


def test_non_finite_checkpoint_is_refused(tmp_path: Path) -> None:
    saver = _AtomicDiskSaver(str(tmp_path))
    with pytest.raises(RuntimeError, match=r"refusing to write checkpoint .*tensor 'model.bias' holds NaN or inf"):
        saver({"model": {"weight": torch.ones(2), "bias": torch.tensor([1.0, math.inf])}}, "checkpoint_epoch=3.pt")
    assert list(tmp_path.iterdir()) == []


def test_best_model_bookkeeping_survives_a_restart(tmp_path: Path) -> None:
    """After a resume, ``model.pt`` is replaced only by a model better than the best one before the interruption."""
    net = torch.nn.Linear(2, 1)
    engine = Engine(lambda e, b: None)
    engine.state.key_metric_name = "val"

    def evaluate(saver: AtomicCheckpointSaver, metric: float, weight: float) -> float:
        with torch.no_grad():
            net.weight.fill_(weight)
        engine.state.metrics = {"val": metric}
        saver.metrics_completed(engine)
        return float(_load(tmp_path / "model.pt")["weight"][0, 0])

    def new_saver() -> AtomicCheckpointSaver:
        return AtomicCheckpointSaver(
            str(tmp_path), {"model": net}, save_key_metric=True, key_metric_filename="model.pt"
        )

    before = new_saver()
    assert evaluate(before, metric=0.5, weight=1.0) == 1.0
    state = before.state_dict()
    assert state == {"_saved": [(0.5, "model_key_metric=0.5000.pt")]}

    resumed = new_saver()
    resumed.load_state_dict(state)
    assert evaluate(resumed, metric=0.4, weight=2.0) == 1.0  # worse than before the restart: kept
    assert evaluate(resumed, metric=0.6, weight=3.0) == 3.0  # better: replaced
    assert evaluate(new_saver(), metric=0.1, weight=4.0) == 4.0  # without the bookkeeping any model would win


def test_latest_checkpoint_includes_iteration_files(tmp_path: Path) -> None:
    import os

    for i, name in enumerate(["checkpoint_epoch=2.pt", "checkpoint_iteration=7.pt", "model.pt"]):
        (tmp_path / name).write_bytes(b"x")
        os.utime(tmp_path / name, ns=(i * 10**9, i * 10**9))
    assert latest_checkpoint(tmp_path).name == "checkpoint_iteration=7.pt"
    with pytest.raises(
        FileNotFoundError,
        match=r"no checkpoint_epoch=N.pt or checkpoint_final.pt in .*empty' \(nor checkpoint_iteration=N.pt\)",
    ):
        latest_checkpoint(tmp_path / "empty")


# ---- resume in the middle of an epoch ------------------------------------------------------------------------------


def test_mid_epoch_resume_finishes_the_epoch_then_realigns(tmp_path: Path) -> None:
    """From iteration 4 of 3-batch epochs: 2 more in epoch 2 (a fresh pass), then epoch 3 is a whole pass again."""
    seen = []
    engine = Engine(lambda e, batch: seen.append((e.state.epoch, e.state.iteration, batch)))
    torch.save(
        {"trainer": {"iteration": 4, "epoch_length": 3, "max_epochs": 2}}, tmp_path / "checkpoint_iteration=4.pt"
    )
    attach_resume(engine, tmp_path, {"trainer": engine})
    engine.run([10, 11, 12], max_epochs=3)
    assert seen == [(2, 5, 10), (2, 6, 11), (3, 7, 10), (3, 8, 11), (3, 9, 12)]


def test_bundle_resumes_mid_epoch(synth_dir: Path, tmp_path: Path, tiny_unet_def: dict) -> None:
    """Iteration-level checkpoints: a run cut after iteration 2 of 3 continues to exactly 2 epochs x 3 iterations."""
    models = tmp_path / "models"
    common = {
        "config_file": _config("cellmask_isl", "train"),
        "dataset_dir": str(synth_dir),
        "ckpt_dir": str(models),
        "output_dir": str(tmp_path / "runs"),
        "save_every_n_iterations": 2,
        "network_def": tiny_unet_def,
        **TINY,
    }
    run(max_epochs=1, **common)
    assert sorted(p.name for p in models.glob("checkpoint*")) == ["checkpoint_final.pt", "checkpoint_iteration=2.pt"]
    (models / "checkpoint_final.pt").unlink()  # as if the run had been killed during iteration 3
    cut = _load(models / "checkpoint_iteration=2.pt")
    assert cut["trainer"]["iteration"] == 2 and cut["trainer"]["epoch_length"] == 3
    assert cut["optimizer"]["state"][0]["step"] == 2

    run(max_epochs=2, resume="true", **common)
    final = _load(models / "checkpoint_final.pt")
    assert final["trainer"]["iteration"] == 6
    assert final["optimizer"]["state"][0]["step"] == 6  # 2 restored + 4 new steps: the optimiser state was restored
    # the interrupted run's checkpoint was rotated out once newer ones were safely written
    assert sorted(p.name for p in models.glob("checkpoint*")) == ["checkpoint_final.pt", "checkpoint_iteration=6.pt"]
    # the validation after each epoch kept its best-model bookkeeping in the training checkpoint
    assert len(final["best_model"]["_saved"]) == 1


# ---- determinism -----------------------------------------------------------------------------------------------------


def _scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """TensorBoard scalars of a run folder: ``{tag: [(step, value), ...]}``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(run_dir.glob("events.out.tfevents*")):
        acc = EventAccumulator(str(path))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return out


def train_and_record(synth_dir: Path, folder: Path, seed: int, num_workers: int, **overrides) -> tuple[dict, dict]:
    """Train cellmask_isl for 2 epochs of 3 iterations; its TensorBoard scalars and final weights."""
    run(
        config_file=_config("cellmask_isl", "train"),
        dataset_dir=str(synth_dir),
        ckpt_dir=str(folder / "models"),
        output_dir=str(folder / "runs"),
        max_epochs=2,
        seed=seed,
        **{**TINY, "num_workers": num_workers, "num_samples": 2, **overrides},
    )
    return _scalars(folder / "runs"), _load(folder / "models" / "checkpoint_final.pt")["model"]


def assert_identical_runs(first: tuple[dict, dict], second: tuple[dict, dict]) -> None:
    (scalars_a, weights_a), (scalars_b, weights_b) = first, second
    # 6 iterations; validation at step 0 and after each of the 2 epochs
    assert [step for step, _ in scalars_a["train_loss"]] == list(range(1, 7)) and len(scalars_a["val_pcc"]) == 3
    assert scalars_a == scalars_b  # every per-iteration loss and both validation PCCs, exactly
    assert weights_a.keys() == weights_b.keys() and all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)


def test_same_seed_same_losses_and_metric(synth_dir: Path, tmp_path: Path, tiny_unet_def: dict) -> None:
    first = train_and_record(synth_dir, tmp_path / "a", seed=3, num_workers=0, network_def=tiny_unet_def)
    assert_identical_runs(
        first, train_and_record(synth_dir, tmp_path / "b", seed=3, num_workers=0, network_def=tiny_unet_def)
    )
    # the comparison can fail: another seed draws other crops, flips and initial weights
    other, _ = train_and_record(synth_dir, tmp_path / "c", seed=4, num_workers=0, network_def=tiny_unet_def)
    assert other["train_loss"] != first[0]["train_loss"]


@pytest.mark.slow
def test_same_seed_same_run_real_network_with_workers(synth_dir: Path, tmp_path: Path) -> None:
    """The bundle as configured: cellmask_isl's FlexibleUNet-densenet121, data loaded by 2 worker processes."""
    first = train_and_record(synth_dir, tmp_path / "a", seed=3, num_workers=2)
    assert_identical_runs(first, train_and_record(synth_dir, tmp_path / "b", seed=3, num_workers=2))


def test_every_train_config_seeds_and_guards() -> None:
    for name in ("dapi_isl", "cellmask_isl", "nucleus_seg", "cell_instance_seg"):
        parser = ConfigParser()
        parser.read_config(_config(name, "train"))
        # steps by name (train.yaml's init_steps), as the list resolves them
        initialize = [parser[step[1:]] if step.startswith("@") else step for step in parser["initialize"]]
        # the seed comes first after the checks of the command line and the settings, which write nothing
        assert initialize[:3] == [
            "$monai_isl.settings.check_command_line()",
            "$monai_isl.settings.check(**@checked_settings)",
            "$monai.utils.set_determinism(seed=@seed)",
        ], name
        assert any("check_writable(@ckpt_dir" in step for step in initialize), name
        targets = [h.get("_target_") for h in parser["train"]["handlers"] if isinstance(h, dict)]
        assert "monai_isl.handlers.StopOnNonFiniteLoss" in targets, name


# ---- NaN loss ----------------------------------------------------------------------------------------------------


class NaNAtCall(torch.nn.Module):
    """L1 loss that returns NaN on its ``call``-th evaluation (a diverging run, deterministically)."""

    def __init__(self, call: int) -> None:
        super().__init__()
        self.call, self.calls = call, 0

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        loss = torch.nn.functional.l1_loss(pred, target)
        return loss * float("nan") if self.calls == self.call else loss


def test_nan_loss_stops_before_the_step_and_any_checkpoint(
    synth_dir: Path, tmp_path: Path, tiny_unet_def: dict
) -> None:
    models = tmp_path / "models"
    with pytest.raises(Exception) as info:
        run(
            config_file=_config("cellmask_isl", "train"),
            dataset_dir=str(synth_dir),
            ckpt_dir=str(models),
            output_dir=str(tmp_path / "runs"),
            max_epochs=2,
            save_every_n_iterations=1,
            loss=NaNAtCall(3),
            network_def=tiny_unet_def,
            **TINY,
        )
    message = _chain(info.value)
    assert "NonFiniteLossError: training loss is nan at epoch 1, iteration 3 (3/3 of the epoch)" in message
    assert "no checkpoint was written for this iteration" in message and "fields: ['field_" in message
    # iterations 1 and 2 were saved (the first rotated out), iteration 3 and the final checkpoint never were;
    # model.pt is the network validated before the first step
    assert sorted(p.name for p in models.iterdir()) == ["checkpoint_iteration=2.pt", "model.pt"]
    saved = _load(models / "checkpoint_iteration=2.pt")
    assert saved["trainer"]["iteration"] == 2 and saved["optimizer"]["state"][0]["step"] == 2
    assert all(torch.isfinite(t).all() for t in saved["model"].values() if t.is_floating_point())
    assert isinstance(_root(info.value), NonFiniteLossError)


# ---- inference over a folder: skip and report ------------------------------------------------------------------------


def _fresh_cellmask_model(path: Path) -> torch.nn.Module:
    parser = ConfigParser()
    parser.read_config(_config("cellmask_isl", "inference"))
    torch.manual_seed(0)
    network = parser.get_parsed_content("network_def")
    torch.save(network.state_dict(), path)
    return network.eval()


def _cellmask_inference(checkpoint: Path, output_dir: Path, **overrides: str) -> None:
    """cellmask_isl's inference.yaml through `monai.bundle.run`, with 64 x 64 windows (the tiny fields are 96^2)."""
    run(
        config_file=_config("cellmask_isl", "inference"),
        checkpoint=str(checkpoint),
        output_dir=str(output_dir),
        sw_roi_size=[64, 64],
        **{"precision": "fp32", **overrides},  # outputs are compared with fp32 recomputations to 1e-4
    )


def test_folder_inference_skips_and_reports_bad_fields(
    synth_dir: Path, tmp_path: Path, capfd: pytest.CaptureFixture
) -> None:
    folder = tmp_path / "plate"
    folder.mkdir()
    fields = sorted((synth_dir / "fields").iterdir())
    for i, field in enumerate(fields):
        (folder / f"well_{i}.tif").write_bytes((field / "dic.tif").read_bytes())
    truncated = folder / "well_2.tif"
    truncated.write_bytes(truncated.read_bytes()[:2000])  # a field whose transfer broke off, mid-folder
    tifffile.imwrite(
        folder / "well_3.tif", np.zeros((3, 96, 96), np.uint16), photometric="minisblack"
    )  # 3 channels for a 1-channel network
    network = _fresh_cellmask_model(tmp_path / "model.pt")
    out = tmp_path / "pred"

    _cellmask_inference(tmp_path / "model.pt", out, input_dir=str(folder))
    written = sorted(p.name for p in out.glob("*.tif"))
    assert written == [f"well_{i}_cellmask.tif" for i in range(len(fields)) if i not in (2, 3)]
    with open(out / "skipped.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["well_2.tif", "well_3.tif"]
    assert rows[0]["files"] == str(truncated) and f"could not read image '{truncated}'" in rows[0]["reason"]
    assert "expected 1 channel(s) for the network, got 3" in rows[1]["reason"]
    err = capfd.readouterr().err
    assert f"{len(fields)}/{len(fields)}" in err  # the progress bar counted every field, skipped ones included

    # a written field is the network's prediction for that file (independent recomputation)
    image = read_image(folder / "well_4.tif")
    lo, hi = np.percentile(image.astype(np.float64), [1.0, 99.8])
    x = torch.as_tensor(scale_by_percentiles(image, np.array([[lo, hi]])), dtype=torch.float32)[None]
    with torch.no_grad():
        expected = SlidingWindowInferer((64, 64), sw_batch_size=4, overlap=0.25, mode="gaussian")(x, network)
    np.testing.assert_allclose(tifffile.imread(out / "well_4_cellmask.tif"), expected[0, 0].numpy(), atol=1e-4)


def test_folder_inference_with_only_bad_fields_fails(tmp_path: Path) -> None:
    folder = tmp_path / "plate"
    folder.mkdir()
    for i in range(2):
        (folder / f"bad_{i}.tif").write_bytes(b"not a tiff at all")
    _fresh_cellmask_model(tmp_path / "model.pt")
    with pytest.raises(Exception) as info:
        _cellmask_inference(tmp_path / "model.pt", tmp_path / "pred", input_dir=str(folder), progress="false")
    assert "inference: all 2 field(s) failed to load" in _chain(info.value)
    assert len(list(csv.reader(open(tmp_path / "pred" / "skipped.csv")))) == 3


def test_datalist_inference_skips_a_missing_file(synth_dir: Path, tmp_path: Path) -> None:
    """With a datalist, too: a listed file that has gone missing is reported, the other fields are written."""
    import json

    content = json.loads((synth_dir / "cellmask_isl.json").read_text())
    first = content["test"][0]
    content["test"] = [{**first, "image": "fields/gone/dic.tif", "name": "gone"}, first]
    data = tmp_path / "data"
    data.mkdir()
    (data / "fields").symlink_to(synth_dir / "fields")
    (data / "cellmask_isl.json").write_text(json.dumps(content))
    _fresh_cellmask_model(tmp_path / "model.pt")
    out = tmp_path / "pred"
    _cellmask_inference(tmp_path / "model.pt", out, dataset_dir=str(data), progress="false")
    assert [p.name for p in out.glob("*.tif")] == [f"{first['name']}_cellmask.tif"]
    with open(out / "skipped.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["gone"]
    assert rows[0]["reason"] == f"FileNotFoundError: image file not found: '{data / 'fields' / 'gone' / 'dic.tif'}'"


def test_list_images(tmp_path: Path) -> None:
    for name in ("b.tif", "a.tif", "c.png", ".hidden.tif", "sub/d.tif"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert [i["name"] for i in list_images(tmp_path)] == ["a.tif", "b.tif"]
    assert [i["name"] for i in list_images(tmp_path, "**/*.tif")] == ["a.tif", "b.tif", "sub/d.tif"]
    assert list_images(tmp_path, "*.png")[0]["image"] == str(tmp_path / "c.png")
    with pytest.raises(FileNotFoundError, match=r"no file in input_dir .* matches the pattern '\*.nii'"):
        list_images(tmp_path, "*.nii")


# ---- unwritable or full output folders -------------------------------------------------------------------------------


def test_unwritable_folder_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    # root ignores permission bits, so the folder is made impossible instead: it would lie under a regular file
    with pytest.raises(OSError, match=r"ckpt_dir '.*a_file/models' is not writable"):
        check_writable(blocker / "models", what="ckpt_dir")
    assert check_writable(tmp_path / "new" / "models") == tmp_path / "new" / "models"
    assert not (tmp_path / "new").exists()  # nothing is created: the run makes it when it writes its first file


def test_full_disk_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 * 2**30, 10 * 2**30 - 50 * 2**20, 50 * 2**20))
    with pytest.raises(OSError, match=r"has 50 MiB free, the run needs at least 1024 MiB"):
        check_writable(tmp_path, min_free_mb=1024, what="ckpt_dir")
    assert check_writable(tmp_path, min_free_mb=10) == tmp_path


def test_train_refuses_an_unwritable_ckpt_dir_before_training(synth_dir: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(Exception) as info:
        run(
            config_file=_config("cellmask_isl", "train"),
            dataset_dir=str(synth_dir),
            ckpt_dir=str(blocker / "models"),
            output_dir=str(tmp_path / "runs"),
            max_epochs=1,
            **TINY,
        )
    assert f"ckpt_dir '{blocker / 'models'}' is not writable" in _chain(info.value)
    assert not (tmp_path / "runs").exists()  # stopped in `initialize`, before any handler or training step
