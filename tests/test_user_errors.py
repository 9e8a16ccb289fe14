"""Errors a biologist can act on: a wrong setting or input ends ``python -m monai.bundle run`` with one last line,
``monai-isl: error: ...``, naming the setting or file, before anything is written; implausible segmentations are
warned about; written files get the account's usual permissions; the CLI's help says what it does.

The end-to-end cases run the real command in a subprocess on the tiny synthetic dataset; each stops at its first
check, in seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import REPO, TINY, as_cli
from ignite.engine import Engine

from monai_isl.errors import DataError
from monai_isl.handlers import SegmentationSanity
from monai_isl.handlers.sanity import field_problem
from monai_isl.io import describe_planes, write_image
from monai_isl.transforms import LoadFieldd

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MONAI_ISL_DEVICE": "cpu", "PAGER": "cat"}
DAPI_TRAIN = "bundles/dapi_isl/configs/train.yaml"


def bundle_run(*args: str, umask: int | None = None, timeout: int = 240) -> subprocess.CompletedProcess:
    """``python -m monai.bundle run ARGS`` from the repository root (where the config paths point)."""
    return subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", *args],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=(lambda: os.umask(umask)) if umask is not None else None,
    )


def last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def assert_nothing_written(*folders: Path) -> None:
    for folder in folders:
        assert not folder.exists() or not any(folder.iterdir()), f"{folder} holds {list(folder.iterdir())}"


def dataset_with(tmp_path: Path, synth_dir: Path, task: str, change: dict) -> Path:
    """A dataset folder whose ``task`` datalist is the synthetic one (absolute paths) with the first training
    item's keys replaced by ``change``."""
    datalist = json.loads((synth_dir / f"{task}.json").read_text())
    for section in ("training", "validation", "test"):
        for item in datalist.get(section, []):
            for key in ("image", "label"):
                files = item[key]
                item[key] = [str(synth_dir / f) for f in files] if isinstance(files, list) else str(synth_dir / files)
    datalist["training"][0].update(change)
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / f"{task}.json").write_text(json.dumps(datalist))
    return folder


def train_args(tmp_path: Path, dataset: Path | str, *extra: str) -> list[str]:
    """dapi_isl training on ``dataset`` with tiny settings; every output under ``tmp_path``."""
    tiny = [x for key, value in as_cli({**TINY, "max_epochs": 1}).items() for x in (f"--{key}", value)]
    return [
        "--config_file",
        DAPI_TRAIN,
        "--dataset_dir",
        str(dataset),
        "--ckpt_dir",
        str(tmp_path / "models"),
        "--output_dir",
        str(tmp_path / "runs"),
        "--cache_dir",
        str(tmp_path / "cache"),
        *tiny,
        *extra,
    ]


def assert_user_error(proc: subprocess.CompletedProcess, *names: str) -> str:
    assert proc.returncode != 0, proc.stderr[-3000:]
    line = last_line(proc.stderr)
    assert line.startswith("monai-isl: error:"), proc.stderr[-3000:]
    for name in names:
        assert name in line, line
    return line


# ---- end to end: the last line names the setting or the file, nothing is written ------------------------------


@pytest.mark.parametrize(
    "extra, names",
    [
        (["--max_epoch", "1"], ["max_epochs"]),
        (["--learning_rate", "abc"], ["learning_rate", "abc"]),
        (["--roi_size", "[0,0]"], ["roi_size"]),
    ],
)
def test_wrong_setting_ends_with_its_name(synth_dir: Path, tmp_path: Path, extra: list[str], names: list[str]) -> None:
    proc = bundle_run(*train_args(tmp_path, synth_dir, *extra))
    assert_user_error(proc, *names)
    assert_nothing_written(tmp_path / "models", tmp_path / "runs", tmp_path / "cache")


def test_missing_datalist_is_named(tmp_path: Path) -> None:
    empty = tmp_path / "no_data"
    empty.mkdir()
    proc = bundle_run(*train_args(tmp_path, empty))
    assert_user_error(proc, str(empty))
    assert_nothing_written(tmp_path / "models", tmp_path / "runs", tmp_path / "cache")


def test_constant_target_is_refused(synth_dir: Path, tmp_path: Path) -> None:
    blank = write_image(tmp_path / "blank_dapi.tif", np.zeros((96, 96), np.uint16))
    data = dataset_with(tmp_path, synth_dir, "dapi_isl", {"label": str(blank)})
    line = assert_user_error(bundle_run(*train_args(tmp_path, data)), str(blank), "is constant (all pixels = 0)")
    assert "stain image is expected" in line
    assert_nothing_written(tmp_path / "models", tmp_path / "runs", tmp_path / "cache")


def test_rgb_file_for_one_channel_is_named(synth_dir: Path, tmp_path: Path) -> None:
    rgb = write_image(tmp_path / "phase_rgb.png", np.full((3, 96, 96), 100, np.uint8))
    item = json.loads((synth_dir / "dapi_isl.json").read_text())["training"][0]
    image = [str(synth_dir / f) for f in item["image"][:2]] + [str(rgb)]
    data = dataset_with(tmp_path, synth_dir, "dapi_isl", {"image": image})
    line = assert_user_error(bundle_run(*train_args(tmp_path, data)), str(rgb), "RGB image", "1 channel(s) per file")
    assert "holds 3 plane(s)" in line
    assert_nothing_written(tmp_path / "models", tmp_path / "runs", tmp_path / "cache")


# ---- the messages themselves, at unit level -----------------------------------------------------------------------


def test_planes_are_described_as_rgb_or_stack(tmp_path: Path) -> None:
    rgb = write_image(tmp_path / "rgb.png", np.zeros((3, 80, 80), np.uint8))
    stack = tmp_path / "stack.tif"
    import tifffile

    tifffile.imwrite(stack, np.zeros((5, 80, 80), np.uint16))
    assert describe_planes(rgb).startswith("an RGB image")
    assert describe_planes(stack).startswith("a stack of 5 pages (a z-stack?")
    message = r"stack.tif' holds 5 plane\(s\) \(a stack of 5 pages .*1 channel\(s\) per file"
    with pytest.raises(DataError, match=message):
        LoadFieldd(keys="image", expected_channels={"image": 1})({"image": str(stack)})


def test_constant_target_unit(tmp_path: Path) -> None:
    flat = write_image(tmp_path / "flat.tif", np.full((64, 64), 7, np.uint16))
    load = LoadFieldd(keys="label", require_contrast="label")
    with pytest.raises(DataError, match=r"target '.*flat.tif' is constant \(all pixels = 7\): a stain image"):
        load({"label": str(flat)})
    varied = write_image(tmp_path / "varied.tif", np.arange(64 * 64, dtype=np.uint16).reshape(64, 64))
    assert load({"label": str(varied)})["label"].shape == (1, 64, 64)


# ---- sanity warnings on results -----------------------------------------------------------------------------------


def _engine_with(output: list[dict], batch: list[dict]) -> Engine:
    engine = Engine(lambda e, b: None)
    engine.state.output, engine.state.batch = output, batch
    return engine


def test_empty_prediction_is_warned_about(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture) -> None:
    label = torch.zeros(1, 32, 32)
    label[0, 8:16, 8:16] = 1
    sanity = SegmentationSanity(pred_key="pred", label_key="label", kind="mask")
    engine = _engine_with([{"pred": torch.zeros(1, 32, 32), "label": label}], [{"name": "well_A1.tif"}])
    sanity.started(engine)
    with caplog.at_level("WARNING"):
        sanity.iteration_completed(engine)
    sanity.completed(engine)
    assert "suspicious result for 'well_A1.tif': empty prediction" in caplog.text
    assert last_line(capsys.readouterr().err).startswith("monai-isl: warning: 1 of 1 field(s) look suspicious")


def test_sanity_rules() -> None:
    blob = np.zeros((32, 32), np.uint16)
    blob[:24, :] = 1  # one instance over 75 % of the field
    assert field_problem(np.zeros((32, 32)), None) == "empty prediction (no object found)"
    assert field_problem(np.zeros((32, 32)), np.zeros((32, 32))) is None  # nothing there, nothing found
    assert "one object covers 75%" in field_problem(blob, None, kind="instances")
    assert field_problem(blob, blob, kind="instances") is None  # the labels say the same
    assert "nucleus mask covers 100%" in field_problem(np.ones((32, 32)), blob.astype(np.float32) * 0)
    assert field_problem(np.ones((32, 32)) * (np.arange(32) < 8), None) is None  # 25 % nuclei: plausible


# ---- inference: file modes follow the umask, an all-zero model is warned about ------------------------------------


def test_predictions_follow_the_umask_and_empty_masks_warn(synth_dir: Path, tmp_path: Path) -> None:
    from monai.networks.nets import BasicUNet

    shape = {"spatial_dims": 2, "in_channels": 3, "out_channels": 1, "features": [4, 4, 8, 8, 16, 4]}
    net_def = {"_target_": "monai.networks.nets.BasicUNet", **shape}  # a tiny network instead of the bundle's
    net = BasicUNet(**shape)
    for p in net.parameters():
        torch.nn.init.zeros_(p)  # output 0 everywhere: below the 0.5 threshold, an empty mask
    torch.save(net.state_dict(), tmp_path / "model.pt")
    out = tmp_path / "predictions"
    proc = bundle_run(
        "--config_file", "bundles/nucleus_seg/configs/inference.yaml",
        "--dataset_dir", str(synth_dir),
        "--checkpoint", str(tmp_path / "model.pt"),
        "--network_def", json.dumps(net_def),
        "--output_dir", str(out),
        "--sw_roi_size", "[64,64]",
        "--progress", "false",
        umask=0o022,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    predictions = sorted(out.glob("*_nuclei.tif"))
    assert predictions
    assert {oct(p.stat().st_mode & 0o777) for p in predictions} == {oct(0o644)}
    name = json.loads((synth_dir / "nucleus_seg.json").read_text())["test"][0]["name"]
    assert f"suspicious result for '{name}': empty prediction" in proc.stdout + proc.stderr  # the log: stdout
    assert "monai-isl: warning:" in last_line(proc.stderr) and "look suspicious" in last_line(proc.stderr)


# ---- command-line help --------------------------------------------------------------------------------------------


def cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "monai_isl", *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=120
    )


def help_text(*args: str) -> str:
    """``python -m monai_isl ARGS --help`` as printed (fire writes the help to stdout or stderr)."""
    proc = cli(*args, "--help")
    return proc.stdout + proc.stderr


def test_help_texts() -> None:
    top = help_text()
    assert "python -m monai.bundle run --config_file" in top and "README.md" in top
    sweep = help_text("sweep")
    assert "``training`` section is the pool the N images are drawn from" in " ".join(sweep.split())
    nuclei = help_text("prepare", "nuclei")
    flags = nuclei[nuclei.index("FLAGS") :]
    for name in ("--sigma", "--threshold", "--min_size", "--min_distance"):
        block = flags[flags.index(name) :].split("\n    -")[0]
        assert "Default" in block and len(block.splitlines()) >= 4, block  # a description under the default
    assert "--n_images" in help_text("synth")


@pytest.mark.parametrize("flag", ["--n_images", "--n-images"])
def test_synth_takes_both_spellings(tmp_path: Path, flag: str) -> None:
    proc = cli("synth", "--out", str(tmp_path / "s"), "--size", "64", flag, "3", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "wrote 3 synthetic 64x64 fields" in proc.stdout
