"""Model-zoo rules for every bundle: metadata (versions, changelog, MONAI Label label names), layout (LICENSE,
docs sections, large_files.yml, no weights in git), the zoo's workflow property checks, verify_net_in_out and a
TorchScript export that gives the eager network's output.

The zoo runs these checks on the bundle as it is, without overrides, and without trained weights in the
bundle: nothing here may need a trained ISL model (nucleus_seg and cell_instance_seg load theirs when training
starts). Metadata schema validation itself is in test_isl_bundles.py / test_seg_bundles.py.
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import BUNDLES, REPO
from monai.bundle import ConfigParser, ConfigWorkflow, ckpt_export, verify_net_in_out
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from monai_isl.bundle import workflow_configs
from monai_isl.export import ZOO_MAX_FILE_BYTES
from monai_isl.transforms import ApplyPercentilesd, LoadFieldd, PercentileStatsd

# the zoo template's sections (README headings, in this order)
README_SECTIONS = ["Model overview", "Data", "Training configuration", "Performance", "MONAI bundle commands"]
# what MONAI Label shows as label names (channel_def of the first output, "background" skipped)
LABELS = {
    "dapi_isl": {"0": "DAPI"},
    "cellmask_isl": {"0": "CellMask"},
    "nucleus_seg": {"0": "background", "1": "nucleus"},
    "cell_instance_seg": {"0": "background", "1": "cell"},
}
# eager vs TorchScript: the scripted graph runs the same float32 kernels; we measured a max |difference| of 0.0
TORCHSCRIPT_ATOL = 1e-5


def _meta(name: str) -> dict:
    return json.loads((REPO / "bundles" / name / "configs" / "metadata.json").read_text())


def _copy_bundle(name: str, dest: Path) -> Path:
    """The bundle's configs (no models/, runs/ ...) in ``dest/<name>``: the tests never touch the repository."""
    root = dest / name
    shutil.copytree(REPO / "bundles" / name / "configs", root / "configs")
    return root


def _installed(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


@pytest.mark.parametrize("name", BUNDLES)
def test_metadata_versions_and_labels(name: str) -> None:
    meta = _meta(name)
    # the zoo's verify_version_changes: the version has a changelog entry; ours lists the newest first
    assert meta["version"] in meta["changelog"] and next(iter(meta["changelog"])) == meta["version"]
    # The zoo's CI pip-installs exactly these versions, so each must be a plain released version (no range, pre-,
    # dev- or local "+cpu" part). This suite runs with whatever pip resolved from pyproject.toml's ranges, which moves
    # with every new release, so demanding equality would break a fresh install at each patch release. Instead: the
    # pin and the installed version both satisfy monai-isl's own requirement (the range the project claims to work
    # with) and belong to the same release series (major version), i.e. the suite tested the stack the pin names up to
    # minor/patch releases. A new major release (numpy 3, pillow 14) fails here: time to test it and refresh the pins.
    # Calendar versions (tifffile 2026.3.3) have no series: there the project's range alone applies.
    pins = {"monai": meta["monai_version"], "torch": meta["pytorch_version"], "numpy": meta["numpy_version"]}
    pins.update(meta["required_packages_version"])
    ranges = {}
    for line in importlib.metadata.requires("monai-isl") or []:
        requirement = Requirement(line)
        if requirement.marker is None:
            ranges[canonicalize_name(requirement.name)] = requirement.specifier
    for package, version in pins.items():
        pin = Version(version)
        assert str(pin) == version and not (pin.is_prerelease or pin.is_postrelease or pin.local), (name, version)
        installed = _installed(package)
        assert installed is not None, f"{name}: required package {package} is not installed"
        tested = Version(installed)
        allowed = ranges.get(canonicalize_name(package), SpecifierSet())
        assert pin in allowed and tested in allowed, f"{name}: {package} {version}, installed {installed}: {allowed}?"
        if pin.major < 1000:  # not a calendar version
            assert tested.major == pin.major, f"{name}: metadata pins {package}=={version}, tested {installed}"
    # MONAI reads "optional_packages_version" as a deprecated name of required_packages_version and replaces the
    # latter with it: MONAI Label, tested with the version in supported_apps, is therefore not listed
    assert "optional_packages_version" not in meta
    monailabel = _installed("monailabel")
    assert monailabel is None or meta["supported_apps"] == {"monai-label": monailabel}
    # everything the vendored code imports at run time is pinned (the zoo installs nothing else)
    assert {"pytorch-ignite", "scipy", "scikit-image", "tifffile", "pillow", "pyyaml", "tqdm"} <= set(pins)
    # label names as MONAI Label reads them, for the network output and the written label
    formats = meta["network_data_format"]
    assert formats["outputs"]["pred"]["channel_def"] == LABELS[name]
    assert formats["post_processed_outputs"]["pred"]["channel_def"] == LABELS[name]


@pytest.mark.parametrize("name", BUNDLES)
def test_zoo_layout(name: str) -> None:
    root = REPO / "bundles" / name
    assert "Apache License" in (root / "LICENSE").read_text()
    headings = [
        line[3:].strip() for line in (root / "docs" / "README.md").read_text().splitlines() if line.startswith("## ")
    ]
    assert [h for h in headings if h in README_SECTIONS] == README_SECTIONS, headings
    assert headings[-1] == "References"
    readme = (root / "docs" / "README.md").read_text()
    for command in ("multi_gpu_train.yaml", "export-bundle", "ckpt_export", "verify_net_in_out", "monailabel"):
        assert command in readme, f"{name}/docs/README.md does not mention {command}"
    # weights: listed in large_files.yml with a placeholder url, never committed
    large = yaml.safe_load((root / "large_files.yml").read_text())["large_files"]
    assert [entry["path"] for entry in large] == ["models/model.pt"]
    assert ".invalid/" in large[0]["url"] and "PLACEHOLDER" in (root / "large_files.yml").read_text()
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", f"bundles/{name}/models/model.pt"], cwd=REPO, capture_output=True
    )
    assert ignored.returncode == 0, "models/ must be git-ignored: the zoo refuses weights in the bundle"
    tracked = subprocess.run(
        ["git", "ls-files", f"bundles/{name}"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    assert tracked and all((REPO / f).stat().st_size < ZOO_MAX_FILE_BYTES for f in tracked if (REPO / f).exists())


@pytest.mark.parametrize("name", BUNDLES)
def test_workflow_properties(name: str, synth_dir: Path, tmp_path: Path) -> None:
    """What the zoo's unit tests do: ConfigWorkflow(...).initialize(); check_properties() == [] (train and infer).

    The copied bundle has no ISL model beside it, nor ``isl_checkpoint`` (null by default), as in the zoo.
    """
    root = _copy_bundle(name, tmp_path)
    for workflow_type, config in (("train", "train"), ("infer", "inference")):
        workflow = ConfigWorkflow(
            config_file=workflow_configs(root, config),
            workflow_type=workflow_type,
            logging_file=False,
            bundle_root=str(root),
            dataset_dir=str(synth_dir),
        )
        workflow.initialize()
        assert workflow.check_properties() == [], (name, workflow_type)
    assert not list(tmp_path.glob("*/models/model.pt"))  # no ISL model was needed (nor written)


def test_isl_weights_load_when_training_starts(synth_dir: Path, tmp_path: Path) -> None:
    """init isl builds the architecture first and loads the dapi_isl weights in `run`, into the trained network."""
    from monai_isl.networks import PaddedFlexibleUNet

    root = _copy_bundle("nucleus_seg", tmp_path)
    torch.manual_seed(3)
    isl = PaddedFlexibleUNet(in_channels=3, out_channels=1, backbone="densenet121", spatial_dims=2).state_dict()
    isl_file = tmp_path / "dapi.pt"
    torch.save(isl, isl_file)
    workflow = ConfigWorkflow(
        config_file=workflow_configs(root, "train"),
        workflow_type="train",
        logging_file=False,
        bundle_root=str(root),
        dataset_dir=str(synth_dir),
        isl_checkpoint=str(isl_file),
    )
    workflow.initialize()
    assert workflow.check_properties() == []
    trained = workflow.parser.get_parsed_content("train#trainer").network
    key = "encoder.features.conv0.weight"
    assert not torch.equal(trained[0].state_dict()[key], isl[key])  # not loaded while building
    steps = [step.replace("::", "#") for step in workflow.parser["run"]]  # MONAI writes ids with "::" once parsed
    index = steps.index("@run_steps#isl_weights")
    assert index < steps.index("@run_steps#train")
    workflow.parser.get_parsed_content(f"run#{index}")
    state = trained[0].state_dict()
    assert all(torch.equal(state[k], isl[k]) for k in isl)
    assert float(trained[1].shift) == 0.5


def _field(in_channels: int, synth_dir: Path, name: str) -> torch.Tensor:
    """A synthetic test field, non-square, scaled as the bundles scale their inputs: ``(1, C, H, W)``."""
    item = json.loads((synth_dir / f"{name}.json").read_text())["test"][0]
    files = [str(synth_dir / f) for f in (item["image"] if isinstance(item["image"], list) else [item["image"]])]
    data = LoadFieldd(keys="image", expected_channels={"image": in_channels})({"image": files})
    data = ApplyPercentilesd(keys="image")(PercentileStatsd(keys="image")(data))
    return torch.as_tensor(np.asarray(data["image"])[:, :64, :96], dtype=torch.float32)[None]


# scripting and the first scripted forward take 10-20 s per bundle on 2 cores: the two ISL networks (a plain
# PaddedFlexibleUNet, also the first layer of both segmentation networks) are exported in the slow run only
@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n.endswith("_isl") else n for n in BUNDLES],
)
def test_net_in_out_and_torchscript(name: str, synth_dir: Path, tmp_path: Path) -> None:
    """verify_net_in_out and ckpt_export (TorchScript) with the zoo's arguments: network_def of inference.yaml."""
    root = _copy_bundle(name, tmp_path)
    config, meta = str(root / "configs" / "inference.yaml"), str(root / "configs" / "metadata.json")
    verify_net_in_out(net_id="network_def", meta_file=meta, config_file=config, bundle_root=str(root))
    # a freshly built network stands in for a trained models/model.pt
    parser = ConfigParser()
    parser.read_config(config)
    parser["bundle_root"] = str(root)
    torch.manual_seed(0)
    network = parser.get_parsed_content("network_def")
    (root / "models").mkdir()
    torch.save(network.state_dict(), root / "models" / "model.pt")
    ckpt_export(
        net_id="network_def",
        filepath=str(root / "models" / "model.ts"),
        ckpt_file=str(root / "models" / "model.pt"),
        meta_file=meta,
        config_file=config,
        bundle_root=str(root),
    )
    scripted = torch.jit.load(str(root / "models" / "model.ts"), map_location="cpu")
    x = _field(parser.get_parsed_content("in_channels"), synth_dir, name)
    network.eval()
    with torch.no_grad():
        eager, exported = network(x), scripted(x)
    out_channels = _meta(name)["network_data_format"]["outputs"]["pred"]["num_channels"]
    assert eager.shape == exported.shape == (1, out_channels, 64, 96)
    assert float(eager.std()) > 0  # a real output, not a constant
    torch.testing.assert_close(exported, eager, rtol=0, atol=TORCHSCRIPT_ATOL)
