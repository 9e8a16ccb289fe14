"""MONAI Label 0.8.5 serves every bundle with its own BundleInferTask and BundleTrainTask, as the monaibundle app does.

Inference runs on a 2D PNG (8 bit) and a 16-bit TIFF, non-square so that a swapped axis shows, and MONAI Label's
written label must equal what the bundle's own inference.yaml writes for the same file (its independent
reference). Training runs one epoch on a datastore-like list of image/label files.

MONAI Label is installed without its dependency pins (see README "For developers"); the tests skip without it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import torch
from helpers import BUNDLES, REPO
from monai.bundle import ConfigParser, run
from PIL import Image

from monai_isl.instance_fit import store_watershed_params
from monai_isl.io import read_image

ISL_OF = {"nucleus_seg": "dapi_isl", "cell_instance_seg": "cellmask_isl"}
SUFFIX = {"dapi_isl": "_dapi.tif", "cellmask_isl": "_cellmask.tif", "nucleus_seg": "_nuclei.tif"}
SUFFIX["cell_instance_seg"] = "_cells.tif"
# label names MONAI Label reports (channel_def without "background")
LABEL_NAMES = {
    "dapi_isl": {"dapi": 0},
    "cellmask_isl": {"cellmask": 0},
    "nucleus_seg": {"nucleus": 1},
    "cell_instance_seg": {"cell": 1},
}
SHAPE = (96, 64)  # H x W of the test images
ROI = "[64, 64]"  # sliding-window size for the tests (the bundles' default 512 is slow on a CPU)


def _import_tasks() -> tuple[Any, Any]:
    """MONAI Label's BundleInferTask and BundleTrainTask.

    MONAI Label imports torchvision when it loads (``monailabel.transform.post`` takes ``make_grid`` and
    ``save_image`` for DeepEdit's debug images), and torchvision cannot be installed beside this CPU build of
    PyTorch (pip would replace torch). The bundle tasks never call either function, so while MONAI Label imports,
    a stand-in ``torchvision`` whose functions raise is put in ``sys.modules``; it is removed right after, so that
    nothing else (MONAI probes torchvision with ``optional_import``) mistakes it for the real package.
    """
    if importlib.util.find_spec("monailabel") is None:
        pytest.skip("monailabel is not installed (pip install --no-deps monailabel==0.8.5, see README)")
    stubbed = {}
    if importlib.util.find_spec("torchvision") is None:

        def _unavailable(*args: Any, **kwargs: Any) -> None:
            raise NotImplementedError("torchvision stand-in for the MONAI Label tests")

        utils = types.ModuleType("torchvision.utils")
        utils.make_grid = utils.save_image = _unavailable  # type: ignore[attr-defined]
        stub = types.ModuleType("torchvision")
        stub.utils = utils  # type: ignore[attr-defined]
        stubbed = {"torchvision": stub, "torchvision.utils": utils}
    sys.modules.update(stubbed)
    try:
        from monailabel.tasks.infer.bundle import BundleInferTask
        from monailabel.tasks.train.bundle import BundleTrainTask
    finally:
        for module in stubbed:
            sys.modules.pop(module, None)
    return BundleInferTask, BundleTrainTask


@pytest.fixture(scope="module")
def tasks() -> tuple[Any, Any]:
    return _import_tasks()


def _first_test_item(synth_dir: Path, name: str) -> dict:
    return json.loads((synth_dir / f"{name}.json").read_text())["test"][0]


def _images(synth_dir: Path, name: str, dest: Path) -> list[Path]:
    """The first synthetic test field cut to SHAPE, as an 8-bit PNG (RGB for 3 channels) and a 16-bit TIFF."""
    item = _first_test_item(synth_dir, name)
    files = item["image"] if isinstance(item["image"], list) else [item["image"]]
    stack = np.concatenate([read_image(synth_dir / f) for f in files])[:, : SHAPE[0], : SHAPE[1]]
    assert stack.dtype == np.uint16
    dest.mkdir(parents=True, exist_ok=True)
    tif, png = dest / f"{name}_16bit.tif", dest / f"{name}_8bit.png"  # different stems: different outputs
    tifffile.imwrite(tif, stack if len(stack) > 1 else stack[0], photometric="minisblack")  # channels first
    low, high = stack.min(axis=(1, 2), keepdims=True), stack.max(axis=(1, 2), keepdims=True)
    eight = ((stack - low) / np.maximum(high - low, 1) * 255).round().astype(np.uint8)
    Image.fromarray(np.moveaxis(eight, 0, -1) if len(eight) > 1 else eight[0]).save(png)
    return [png, tif]


def _copy_bundle(name: str, models_dir: Path) -> Path:
    """A bundle as MONAI Label's monaibundle app finds it locally: ``<app>/model/<name>``; small test windows."""
    root = models_dir / name
    shutil.copytree(
        REPO / "bundles" / name, root, ignore=shutil.ignore_patterns("models", "runs", "eval", "predictions")
    )
    for config in ("inference", "train"):  # the sliding window of inference and of train.yaml's validation
        path = root / "configs" / f"{config}.yaml"
        text = path.read_text()
        assert text.count("sw_roi_size: [512, 512]") == 1
        path.write_text(text.replace("sw_roi_size: [512, 512]", f"sw_roi_size: {ROI}"))
    return root


def _fake_trained_model(root: Path, image: Path) -> None:
    """models/model.pt: a freshly built network whose last bias is shifted so that, on ``image``, half the pixels
    fall on each side of the decision (stain 0.5, probability 0.5, mask logit 0): the outputs are not trivial."""
    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "inference.yaml"))
    parser["bundle_root"] = str(root)
    torch.manual_seed(0)
    network = parser.get_parsed_content("network_def").eval()
    x = parser.get_parsed_content("preprocessing")({"image": str(image)})["image"]
    with torch.no_grad():
        out = network(torch.as_tensor(x)[None])[0]
    last = [m for m in network.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    name = root.name
    with torch.no_grad():
        if name.endswith("_isl"):
            last.bias[0] += 0.5 - out[0].median()
        elif name == "nucleus_seg":  # sigmoid(raw): move the raw median to 0
            last.bias[0] -= torch.logit(out[0].median().clamp(1e-6, 1 - 1e-6))
        else:  # channel 1 is the cell-mask logit; a trained model also stores its fitted h (h auto)
            last.bias[1] -= out[1].median()
            store_watershed_params(network, 10.0)
    (root / "models").mkdir(exist_ok=True)
    torch.save(network.state_dict(), root / "models" / "model.pt")


def _read(path: str | Path) -> np.ndarray:
    path = Path(path)
    return np.asarray(Image.open(path)) if path.suffix == ".png" else tifffile.imread(path)


def _own_predictions(root: Path, images: list[Path], tmp_path: Path) -> list[np.ndarray]:
    """The bundle's own inference.yaml on the same files: the reference for MONAI Label's output."""
    data = tmp_path / "data"
    data.mkdir()
    (data / f"{root.name}.json").write_text(json.dumps({"test": [{"image": str(p)} for p in images]}))
    out = tmp_path / "own"
    run(
        config_file=str(root / "configs" / "inference.yaml"),
        bundle_root=str(root),
        dataset_dir=str(data),
        output_dir=str(out),
        channels_last=False,  # MONAI Label builds `network_def` as it is (NCHW); NHWC rounds differently (~1e-7)
        **{"dataloader#num_workers": 0},
    )
    return [tifffile.imread(out / f"{p.stem}{SUFFIX[root.name]}") for p in images]


# the ISL bundles' virtual stains are the same pipeline with another post_transforms: in the slow run only
@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n.endswith("_isl") else n for n in BUNDLES]
)
def test_bundle_infer_task(name: str, tasks: tuple[Any, Any], synth_dir: Path, tmp_path: Path) -> None:
    bundle_infer_task = tasks[0]
    images = _images(synth_dir, name, tmp_path / "images")
    root = _copy_bundle(name, tmp_path / "app" / "model")
    _fake_trained_model(root, images[1])
    task = bundle_infer_task(str(root), {})
    assert task.is_valid() and task.labels == LABEL_NAMES[name]

    for image, own in zip(images, _own_predictions(root, images, tmp_path)):
        result_file, result = task({"image": str(image), "device": "cpu"})
        assert result["label_names"] == LABEL_NAMES[name]
        label = _read(result_file)
        Path(result_file).unlink()
        assert label.shape == own.shape == SHAPE, (image.name, label.shape)
        if name.endswith("_isl"):  # predicted stain, 0..1 -> 0..65535
            assert label.dtype == np.uint16 and own.dtype == np.float32
            expected = np.floor(np.clip(own.astype(np.float64), 0, 1) * 65535)
            assert np.abs(label - expected).max() <= 1, image.name  # float32 scaling vs float64 here
            assert len(np.unique(label)) > 100  # a real image, not a constant
        elif name == "nucleus_seg":
            assert label.dtype == np.uint8 and set(np.unique(label)) == {0, 1}
            np.testing.assert_array_equal(label, own)
            assert 0.05 < label.mean() < 0.95
        else:  # instance labels, one id per cell
            assert label.dtype == np.uint16
            np.testing.assert_array_equal(label, own)
            assert len(np.unique(label)) > 2


class _ListDatastore:
    """What BundleTrainTask asks of a MONAI Label datastore: ``datalist()`` of image/label files."""

    def __init__(self, items: list[dict[str, str]]) -> None:
        self.items = items

    def datalist(self) -> list[dict[str, str]]:
        return list(self.items)


def _datastore(synth_dir: Path, name: str, dest: Path) -> _ListDatastore:
    """All 5 synthetic fields as MONAI Label sees them: one (multi-channel) image file and one label file each."""
    dest.mkdir()
    items = []
    for section in ("training", "validation", "test"):
        for item in json.loads((synth_dir / f"{name}.json").read_text())[section]:
            pair = {}
            for key in ("image", "label"):
                files = item[key] if isinstance(item[key], list) else [item[key]]
                pair[key] = str(dest / f"{item['name']}_{key}.tif")
                stack = np.concatenate([read_image(synth_dir / f) for f in files])
                tifffile.imwrite(pair[key], stack, photometric="minisblack")
            items.append(pair)
    return _ListDatastore(items)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# one epoch takes 30-90 s on 2 cores: nucleus_seg (ISL weights beside it + MONAI Label's own checkpoint loader)
# runs by default, the other bundles in the slow run
@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n != "nucleus_seg" else n for n in BUNDLES]
)
def test_bundle_train_task(name: str, tasks: tuple[Any, Any], synth_dir: Path, tmp_path: Path) -> None:
    bundle_train_task = tasks[1]

    class TinyTrainTask(bundle_train_task):  # type: ignore[misc,valid-type]
        """MONAI Label's hook for extra overrides: small crops and batches so one epoch takes seconds, and (init isl)
        the ISL bundle's model, which a bundle never looks for by itself."""

        def _update_overrides(self, overrides: dict[str, Any]) -> dict[str, Any]:
            overrides.update(roi_size=[64, 64], num_samples=2, batch_size=1, num_workers=0, min_free_mb=0)
            if name in ISL_OF:
                overrides["isl_checkpoint"] = str(models_dir / ISL_OF[name] / "models" / "model.pt")
            return overrides

    models_dir = tmp_path / "app" / "model"
    image = _images(synth_dir, name, tmp_path / "images")[1]
    for bundle in [name, ISL_OF.get(name)]:
        if bundle:  # a segmentation bundle starts from its ISL bundle's model beside it (init isl)
            _fake_trained_model(_copy_bundle(bundle, models_dir), image)
    root = models_dir / name
    before = _sha(root / "models" / "model.pt")
    task = TinyTrainTask(str(root), {})
    assert task.is_valid()
    request = {"model": name, "max_epochs": 1, "device": "cpu", "multi_gpu": False, "val_split": 0.2}
    task(request, _datastore(synth_dir, name, tmp_path / "datastore"))
    final = torch.load(root / "models" / "checkpoint_final.pt", map_location="cpu", weights_only=False)
    # 4 of the 5 fields trained (val_split 0.2), 2 crops each, batch 1: 4 iterations in the one epoch
    assert final["trainer"]["iteration"] == final["trainer"]["epoch_length"] == 4
    assert _sha(root / "models" / "model.pt") != before  # the best model of the epoch replaced the old one
