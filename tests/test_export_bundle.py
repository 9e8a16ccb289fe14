"""``python -m monai_isl export-bundle``: a model-zoo zip that carries its own code and runs without monai_isl.

The slow test builds a fresh virtual environment that sees the system's torch and MONAI but not monai_isl, checks
that ``import monai_isl`` fails there, and runs the unzipped bundle with ``python -m monai.bundle``: training,
inference, the zoo's verify_metadata / verify_net_in_out / ckpt_export checks, and MONAI Label serving it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import yaml
from helpers import BUNDLES, REPO, SCHEMA
from PIL import Image

from monai_isl.export import (
    ZOO_MAX_FILE_BYTES,
    check_exported_config,
    export_bundle,
    overlay_base,
    rewrite_config,
    workflow_commands,
)
from monai_isl.io import read_image

# BundleInferTask in the venv; torchvision stand-in: see tests/test_monailabel.py
MONAILABEL_PROBE = """
import sys, types
import numpy as np
from PIL import Image
utils = types.ModuleType("torchvision.utils")
utils.make_grid = utils.save_image = None
stub = types.ModuleType("torchvision")
stub.utils = utils
sys.modules.update({"torchvision": stub, "torchvision.utils": utils})
from monailabel.tasks.infer.bundle import BundleInferTask
del sys.modules["torchvision"], sys.modules["torchvision.utils"]
try:
    import monai_isl
except ImportError:
    print("no monai_isl")
task = BundleInferTask(sys.argv[1], {})
print("labels", task.labels)
result, _ = task({"image": sys.argv[2], "device": "cpu"})
label = np.asarray(Image.open(result))
print("result", label.shape, label.dtype, sorted(set(np.unique(label).tolist()) - {0, 1}))
"""


@pytest.mark.parametrize("name", BUNDLES)
def test_zip_contents(name: str, tmp_path: Path) -> None:
    path = Path(export_bundle(name, out=str(tmp_path / f"{name}.zip"), bundle_root=str(REPO / "bundles" / name)))
    with zipfile.ZipFile(path) as zf:
        entries = {info.filename: info for info in zf.infolist()}
        configs = {n: zf.read(n).decode() for n in entries if n.startswith(f"{name}/configs/") and "yaml" in n}
        meta = json.loads(zf.read(f"{name}/configs/metadata.json"))
    assert all(n.startswith(f"{name}/") for n in entries)  # one folder, as zoo downloads
    for required in ("LICENSE", "docs/README.md", "large_files.yml", "configs/metadata.json", "configs/logging.conf"):
        assert f"{name}/{required}" in entries
    for config in ("train", "evaluate", "inference", "multi_gpu_train"):
        assert f"{name}/configs/{config}.yaml" in entries
    assert f"{name}/scripts/__init__.py" in entries and f"{name}/scripts/monai_isl/__init__.py" in entries
    shipped = {n.split("/scripts/monai_isl/", 1)[1] for n in entries if "/scripts/monai_isl/" in n}
    package = REPO / "monai_isl"
    assert shipped == {p.relative_to(package).as_posix() for p in package.rglob("*.py") if "__pycache__" not in p.parts}
    # no weights, run outputs or caches; nothing the zoo would refuse
    assert not [n for n in entries if "/models/" in n or "__pycache__" in n or n.endswith((".pt", ".pyc", ".ts"))]
    assert not [n for n in entries if n.split("/")[1] in ("runs", "eval", "predictions")]
    assert max(info.file_size for info in entries.values()) < ZOO_MAX_FILE_BYTES
    assert meta == json.loads((REPO / "bundles" / name / "configs" / "metadata.json").read_text())
    # every config points at the shipped code, not at an installed monai_isl
    # (an overlay, loaded on top of train.yaml, uses the alias train.yaml imports)
    for arcname, text in configs.items():
        base = overlay_base(Path(arcname).name)
        base_text = configs[f"{name}/configs/{base}"] if base else None
        assert "$import scripts.monai_isl as monai_isl" in (base_text or text), arcname
        assert "_target_: monai_isl." not in text and "$import monai_isl" not in text, arcname
        check_exported_config(Path(arcname), text, base_text)
        assert (
            yaml.safe_load(text).keys()
            == yaml.safe_load((REPO / "bundles" / name / "configs" / Path(arcname).name).read_text()).keys()
        )
    # a second export is byte-identical (fixed timestamps, sorted entries)
    again = export_bundle(name, out=str(tmp_path / "again.zip"), bundle_root=str(REPO / "bundles" / name))
    assert Path(again).read_bytes() == path.read_bytes()


def test_rewrite_config_and_errors(tmp_path: Path) -> None:
    yaml_text = (
        "imports:\n  - $import os\n  - $import monai_isl\n  - $import monai_isl.data\n"
        "a: {_target_: monai_isl.transforms.LoadFieldd, keys: image}\n"
        "b:\n  _target_: monai_isl.networks.cell_network\n"
        "c: $monai_isl.bundle.bundle_root(@task)\n"
        "d: {_target_: monai.transforms.LoadImaged}\n"
    )
    out = rewrite_config(yaml_text)
    assert yaml.safe_load(out) == {
        "imports": ["$import os", "$import scripts.monai_isl as monai_isl", "$import scripts.monai_isl.data"],
        "a": {"_target_": "scripts.monai_isl.transforms.LoadFieldd", "keys": "image"},
        "b": {"_target_": "scripts.monai_isl.networks.cell_network"},
        "c": "$monai_isl.bundle.bundle_root(@task)",
        "d": {"_target_": "monai.transforms.LoadImaged"},
    }
    check_exported_config(Path("x.yaml"), out)
    json_text = json.dumps({"imports": ["$import monai_isl"], "net": {"_target_": "monai_isl.networks.X"}})
    assert json.loads(rewrite_config(json_text))["net"]["_target_"] == "scripts.monai_isl.networks.X"
    # what the rewrite cannot fix is refused, naming the file
    with pytest.raises(ValueError, match="y.yaml.*still imports"):
        check_exported_config(Path("y.yaml"), rewrite_config("imports: ['$from monai_isl import data']\n"))
    with pytest.raises(ValueError, match="z.yaml.*no '\\$import monai_isl'"):
        check_exported_config(Path("z.yaml"), rewrite_config("run: $monai_isl.bundle.as_bool(1)\n"))
    # an overlay shares the imports of the config it is loaded on top of
    overlay = rewrite_config("+imports: ['$import monai_isl.handlers']\nrun: $monai_isl.bundle.as_bool(1)\n")
    check_exported_config(Path("evaluate.yaml"), overlay, base=out)
    with pytest.raises(ValueError, match="evaluate.yaml.*no '\\$import monai_isl'"):
        check_exported_config(Path("evaluate.yaml"), overlay, base="imports: ['$import os']\n")
    assert overlay_base("evaluate.yaml") == overlay_base("multi_gpu_train.yaml") == "train.yaml"
    assert overlay_base("train.yaml") is None and overlay_base("inference.yaml") is None
    assert workflow_commands()["evaluate"] == "\"['configs/train.yaml','configs/evaluate.yaml']\""
    assert workflow_commands()["inference"] == "configs/inference.yaml"


def test_include_weights(tmp_path: Path) -> None:
    root = tmp_path / "nucleus_seg"
    (root / "models").mkdir(parents=True)
    for part in ("configs", "docs"):
        shutil.copytree(REPO / "bundles" / "nucleus_seg" / part, root / part)
    with pytest.raises(FileNotFoundError, match="include_weights.*model.pt"):
        export_bundle("nucleus_seg", out=str(tmp_path / "w.zip"), bundle_root=str(root), include_weights=True)
    torch.save({"w": torch.zeros(3)}, root / "models" / "model.pt")
    torch.save({"w": torch.zeros(3)}, root / "models" / "checkpoint_final.pt")
    with zipfile.ZipFile(export_bundle("nucleus_seg", str(tmp_path / "w.zip"), str(root), include_weights=True)) as zf:
        models = [n for n in zf.namelist() if "/models/" in n]
    assert models == ["nucleus_seg/models/model.pt"]  # the trained network only, no training checkpoints
    with pytest.raises(FileNotFoundError, match="not a bundle"):
        export_bundle("nucleus_seg", out=str(tmp_path / "x.zip"), bundle_root=str(tmp_path))


def _venv_without_monai_isl(path: Path) -> Path:
    """A fresh venv that sees the system site-packages as a plain path: a ``.pth`` line in a folder added by a
    ``.pth`` file is not processed, so the editable install of monai_isl (a ``.pth`` + finder) stays invisible."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(site) / "system_site_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def _run(python: Path, args: list[str], cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([str(python), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{args[:3]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout + result.stderr


@pytest.mark.slow  # a few minutes on 2 cores: export through the CLI, then 6 fresh processes in the venv
def test_zip_runs_without_monai_isl(synth_dir: Path, tmp_path: Path) -> None:
    python = _venv_without_monai_isl(tmp_path / "venv")
    probe = "import torch, monai\ntry:\n import monai_isl\nexcept ImportError:\n print('no monai_isl')\n"
    assert _run(python, ["-c", probe], tmp_path).strip().endswith("no monai_isl")

    # the documented command, in this (repository) environment
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    subprocess.run(
        [sys.executable, "-m", "monai_isl", "export-bundle", "nucleus_seg", "--out", str(zoo / "nucleus_seg.zip")],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    with zipfile.ZipFile(zoo / "nucleus_seg.zip") as zf:
        zf.extractall(zoo)
    bundle = zoo / "nucleus_seg"
    # init isl: the dapi_isl bundle's model beside it, as when both are downloaded from the zoo, passed explicitly
    from monai_isl.networks import PaddedFlexibleUNet

    (zoo / "dapi_isl" / "models").mkdir(parents=True)
    isl = PaddedFlexibleUNet(in_channels=3, out_channels=1, backbone="densenet121", spatial_dims=2)
    torch.save(isl.state_dict(), zoo / "dapi_isl" / "models" / "model.pt")

    tiny = ["--roi_size", "[64,64]", "--num_samples", "2", "--batch_size", "1", "--num_workers", "0"]
    train = ["-m", "monai.bundle", "run", "--config_file", "configs/train.yaml", "--dataset_dir", str(synth_dir)]
    isl_arg = ["--isl_checkpoint", "../dapi_isl/models/model.pt", "--sw_roi_size", "[64,64]"]
    _run(python, [*train, "--max_epochs", "1", *tiny, *isl_arg, "--min_free_mb", "0"], bundle)
    final = torch.load(bundle / "models" / "checkpoint_final.pt", map_location="cpu", weights_only=False)
    assert final["trainer"]["iteration"] == final["trainer"]["epoch_length"] > 0
    # the ISL transfer activation of init isl, calibrated on the training labels (0.5 only without calibration)
    assert float(final["model"]["1.shift"]) != 0.5 and float(final["model"]["1.slope"]) >= 1.0

    infer = ["-m", "monai.bundle", "run", "--config_file", "configs/inference.yaml", "--dataset_dir", str(synth_dir)]
    _run(python, [*infer, "--sw_roi_size", "[64,64]", "--dataloader#num_workers", "0"], bundle)
    test_items = json.loads((synth_dir / "nucleus_seg.json").read_text())["test"]
    for item in test_items:
        mask = tifffile.imread(bundle / "predictions" / f"{item['name']}_nuclei.tif")
        assert mask.dtype == "uint8" and mask.shape == tifffile.imread(synth_dir / item["label"]).shape
    # evaluate: the overlay on top of train.yaml, in the list form the exported bundle documents
    evaluate = ["-m", "monai.bundle", "run", "--config_file", "['configs/train.yaml','configs/evaluate.yaml']"]
    _run(python, [*evaluate, "--dataset_dir", str(synth_dir), "--sw_roi_size", "[64,64]"], bundle)
    assert (bundle / "eval" / "test_iou_raw.csv").is_file() and not (bundle / "cache").exists()

    # the model zoo's offline checks, run in the bundle folder as the zoo does
    meta = ["--meta_file", "configs/metadata.json"]
    if SCHEMA.is_file():
        _run(python, ["-m", "monai.bundle", "verify_metadata", *meta, "--filepath", str(SCHEMA)], bundle)
    net = ["--net_id", "network_def", *meta, "--config_file", "configs/inference.yaml"]
    assert "verified with no error" in _run(python, ["-m", "monai.bundle", "verify_net_in_out", *net], bundle)
    export = ["--filepath", "models/model.ts", "--ckpt_file", "models/model.pt"]
    _run(python, ["-m", "monai.bundle", "ckpt_export", *net, *export], bundle)
    scripted = torch.jit.load(str(bundle / "models" / "model.ts"))
    assert scripted(torch.rand(1, 3, 64, 64)).shape == (1, 1, 64, 64)

    # MONAI Label serves the unzipped bundle too, still without monai_isl
    if importlib.util.find_spec("monailabel") is not None:
        channels = [read_image(synth_dir / f)[0] for f in test_items[0]["image"]]
        rgb = np.stack([(c / c.max() * 255).astype(np.uint8) for c in channels], axis=-1)[:, :80]  # 96 x 80
        Image.fromarray(rgb).save(tmp_path / "field.png")
        printed = _run(python, ["-c", MONAILABEL_PROBE, str(bundle), str(tmp_path / "field.png")], tmp_path)
        assert "no monai_isl" in printed and "labels {'nucleus': 1}" in printed
        assert "result (96, 80) uint8 []" in printed, printed[-2000:]  # a mask of 0 and 1, the input size
