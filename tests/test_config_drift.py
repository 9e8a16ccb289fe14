"""Drift between bundle configs: the settings that must agree, compared as parsed YAML values (not text).

* An ISL bundle and the segmentation bundle that starts from it (dapi_isl -> nucleus_seg, cellmask_isl ->
  cell_instance_seg) must see their inputs alike: the same number of input channels and the same input percentiles.
* Within a bundle, train.yaml's validation, evaluate (train.yaml + evaluate.yaml) and inference.yaml must slide the
  same window (size, overlap, blending, windows per pass, threads) over the same normalised input, and that window
  is ``sw_roi_size``, not the training crop ``roi_size``.
* Across the four bundles, each config file says the same thing everywhere except where :data:`MAY_DIFFER` says
  it may differ (the task's name, its channels, network, loss, transforms, metric...): a setting changed in one
  bundle only is reported.

Each check returns a list of problems (empty: no drift); the tests below show that each reports an edited copy.
"""

from __future__ import annotations

import copy
import fnmatch
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import REPO
from monai.bundle import ConfigParser
from monai.bundle.utils import merge_kv

from monai_isl.bundle import WORKFLOW_CONFIGS

ISL_OF = {"nucleus_seg": "dapi_isl", "cell_instance_seg": "cellmask_isl"}
BUNDLE_NAMES = ["dapi_isl", "cellmask_isl", "nucleus_seg", "cell_instance_seg"]
CONFIG_FILES = sorted({name for files in WORKFLOW_CONFIGS.values() for name in files})

#: per config file, the ids (``fnmatch`` patterns over ``#``-joined paths) whose values may differ between the four
#: bundles; everything else must be equal in all four, or absent from all
MAY_DIFFER: dict[str, tuple[str, ...]] = {
    "train.yaml": (
        "task",
        "in_channels",
        "out_channels",  # ISL bundles: the stain's channels
        "target_percentiles",  # ISL bundles: the stain's scale
        "min_signal_fraction",
        "zoom_range",  # cell_instance_seg: augmentation for unseen fields (train#augmentation)
        "intensity_augmentation",
        "init",
        "isl_bundle",
        "isl_checkpoint",
        "imagenet_weights",
        "sigmoid_slope",  # nucleus_seg: paper eq. 1
        "distance_mode",  # cell_instance_seg: targets and post-processing
        "distance_factor",
        "alpha",
        "h",
        "mask_threshold",
        "network_def#*",
        "loss#*",
        "optimizer#betas",  # ISL bundles: the reference code's Adam betas
        "load_fields#*",
        "targets#*",
        "postprocessing#*",
        "train#preprocessing#transforms",
        "train#augmentation#*",
        "train#crop#*",
        "validate#preprocessing#transforms",
        "validate#to_tensor#*",
        "validate#postprocessing",
        "validate#metric#*",
        "validate#key_metric#*",
        "validate#evaluator#postprocessing",
        "run_steps#isl_weights",
        "checked_settings#*",  # each bundle's own settings (h, calibrate, target_percentiles ...)
        "learning_rate",  # the preset's rate: per init for the seg bundles, '*' for the ISL bundles
        "train_steps",
        "optimizer#params",  # cell_instance_seg: the ISL head's own learning rate (param groups)
        # segmentation bundles only: the calibrated transfer activation (nuclei), the h fit and the distance gain
        # (cells), the learning curve (both: its metric and post-processing differ)
        "calibrate",
        "calibration#*",
        "run_steps#calibrate",
        "h_sigma",
        "min_area",
        "val_h",
        "distance_gain",
        "head_channels",
        "head_learning_rate",
        "run_steps#fit_h",
        "curve_section",
        "curve_datalist",
        "curve#*",
        "run_steps#curve",
        # cell_instance_seg: cell-size resampling at evaluation (monai_isl.scale) around the same window inferer
        "rescale_cells",
        "validate#inferer#*",
        "validate#window_inferer#*",
        # segmentation bundles only: the fine-tune guard (step-0 score, hold-out strips, FineTuneGuard handler)
        "holdout_fraction",
        "sections",
        "train#dataset#data",
        "validate#dataset#data",
        "train#handlers#5#*",
    ),
    "evaluate.yaml": (
        "network_def#*",
        "load_fields#*",
        "validate#key_metric#*",
        "validate#handlers#2#metric*",  # MetricsSaver: test_pcc / test_iou / test_map
        "validate#handlers#3#*",  # cell_instance_seg: the per-threshold AP tables; nucleus_seg: the sanity warnings
        "validate#handlers#4#*",  # cell_instance_seg: the sanity warnings (segmentation bundles only)
        "checked_settings#*",
        "postprocessing#transforms#0#fallback_h",  # cell_instance_seg: h auto reads model.pt only
    ),
    "inference.yaml": (
        "task",
        "output_suffix",
        "write_overlay",
        "in_channels",
        "out_channels",
        "threshold",
        "h",
        "mask_threshold",
        "network_def#*",
        "postprocessing#transforms#*",
        "post_transforms#transforms#*",
        "checked_settings#*",
        "h_sigma",
        "min_area",
        "handlers#3#*",  # segmentation bundles: the sanity warnings (empty or giant predictions)
        # cell_instance_seg: `inferer` resamples fields of other cell sizes around `window_inferer` (monai_isl.scale);
        # the window it slides is still checked against train.yaml's (window_problems follows the wrapper)
        "rescale_cells",
        "inferer#*",
        "window_inferer#*",
    ),
    "multi_gpu_train.yaml": (),
}
#: list items that only some bundles have (seg bundles: loading the ISL weights; imports their expressions need);
#: dropped before comparing, so that the remaining items still line up
EXTRA_ITEMS = {
    "@run_steps#isl_weights",
    "@run_steps#calibrate",
    "@run_steps#curve",
    "@run_steps#fit_h",
    "$import monai_isl.networks",
    "$import monai_isl.networks.transfer",
    "$import monai_isl.calibration",
    "$import monai_isl.instance_fit",
}
#: the sliding-window settings train.yaml's validation, evaluate and inference must share
WINDOW_KEYS = ("_target_", "roi_size", "sw_batch_size", "overlap", "threads", "mode")
_MISSING = "<absent>"


def load_configs(root: Path = REPO / "bundles") -> dict[str, dict[str, dict]]:
    """``{bundle: {config file: parsed YAML}}`` of the four bundles."""
    return {
        name: {config: yaml.safe_load((root / name / "configs" / config).read_text()) for config in CONFIG_FILES}
        for name in BUNDLE_NAMES
    }


def merged(configs: dict[str, dict], workflow: str) -> dict:
    """One bundle's ``workflow`` as MONAI merges its files (overlays on top of train.yaml, ``+`` keys appended)."""
    parser = ConfigParser(config={})
    for config in WORKFLOW_CONFIGS[workflow]:
        for key, value in copy.deepcopy(configs[config]).items():
            merge_kv(parser, key, value)
    return parser.get()


def _get(config: dict, id_: str) -> Any:
    node: Any = config
    for part in id_.split("#"):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def resolve(config: dict, value: Any) -> Any:
    """``value`` with plain references (``'@sw_roi_size'``, ``'@input_percentiles#0'``) replaced by what they
    point at, recursively; expressions (``$...``) are left as text."""
    for _ in range(20):
        if not (isinstance(value, str) and value.startswith("@")):
            break
        value = _get(config, value[1:])
    if isinstance(value, dict):
        return {k: resolve(config, v) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(config, v) for v in value]
    return value


def _transforms(config: dict, id_: str) -> list[dict]:
    """The transforms of a pipeline: a list of dicts or a ``Compose`` whose transforms are a list or an expression
    adding lists (``$@load_fields + @validate#to_tensor``)."""
    node = _get(config, id_)
    if isinstance(node, dict):
        node = node["transforms"]
    if isinstance(node, str) and node.startswith("$"):
        return [t for part in node[1:].split("+") for t in _transforms(config, part.strip().lstrip("@"))]
    if isinstance(node, str) and node.startswith("@"):
        return _transforms(config, node[1:])
    return [resolve(config, t) for t in node]


def image_percentiles(config: dict, pipeline: str) -> list[tuple[Any, Any]]:
    """(lower, upper) of every ``PercentileStatsd`` on the ``image`` key of ``pipeline``."""
    return [
        (t.get("lower", 1.0), t.get("upper", 99.8))
        for t in _transforms(config, pipeline)
        if str(t.get("_target_", "")).endswith("PercentileStatsd") and t.get("keys") in ("image", ["image"])
    ]


def _image_channels(config: dict, pipeline: str) -> list[Any]:
    return [
        t["expected_channels"]["image"]
        for t in _transforms(config, pipeline)
        if str(t.get("_target_", "")).endswith("LoadFieldd")
    ]


def _inputs(workflows: dict[str, dict]) -> dict[str, tuple]:
    """(input channels of the network, of the loader, image percentiles) per workflow."""
    pipelines = {"train": "validate#preprocessing", "evaluate": "validate#preprocessing", "inference": "preprocessing"}
    return {
        wf: (
            resolve(cfg, cfg["network_def"]["in_channels"]),
            _image_channels(cfg, pipelines[wf]),
            image_percentiles(cfg, pipelines[wf]),
        )
        for wf, cfg in workflows.items()
    }


def _workflows(configs: dict[str, dict]) -> dict[str, dict]:
    return {wf: merged(configs, wf) for wf in ("train", "evaluate", "inference")}


def pair_problems(isl: dict[str, dict], seg: dict[str, dict], isl_name: str) -> list[str]:
    """Where a segmentation bundle's inputs differ from those of the ISL bundle it starts from."""
    problems = []
    if seg["train.yaml"].get("isl_bundle") != isl_name:
        problems.append(f"isl_bundle is {seg['train.yaml'].get('isl_bundle')!r}, expected {isl_name!r}")
    isl_inputs, seg_inputs = _inputs(_workflows(isl)), _inputs(_workflows(seg))
    for wf in isl_inputs:
        for what, a, b in zip(("in_channels", "loaded channels", "input percentiles"), isl_inputs[wf], seg_inputs[wf]):
            if a != b:
                problems.append(f"{wf}: {what} {b} differ from {isl_name}'s {a}")
    return problems


def window_problems(configs: dict[str, dict]) -> list[str]:
    """Where train.yaml's validation, evaluate and inference of one bundle slide different windows over
    differently prepared inputs, or use the training crop as the window."""
    workflows = _workflows(configs)
    inferers = {
        "train": ("validate#inferer", workflows["train"]),
        "evaluate": ("validate#inferer", workflows["evaluate"]),
        "inference": ("inferer", workflows["inference"]),
    }
    problems = []
    settings = {}
    for wf, (id_, cfg) in inferers.items():
        raw = _get(cfg, id_)
        while isinstance(raw.get("inferer"), str) and raw["inferer"].startswith("@"):  # a wrapper (cells: the size
            raw = _get(cfg, raw["inferer"][1:])  # resampling, monai_isl.scale): the window it slides
        if raw.get("roi_size") != "@sw_roi_size":
            problems.append(f"{wf}: the window is {raw.get('roi_size')!r}, not '@sw_roi_size'")
        settings[wf] = {key: resolve(cfg, raw.get(key, _MISSING)) for key in WINDOW_KEYS}
    for wf in ("evaluate", "inference"):
        for key in WINDOW_KEYS:
            if settings[wf][key] != settings["train"][key]:
                ours, train = settings[wf][key], settings["train"][key]
                problems.append(f"{wf}: window {key} {ours!r} != train validation's {train!r}")
    inputs = _inputs(workflows)
    for wf in ("evaluate", "inference"):
        if inputs[wf] != inputs["train"]:
            problems.append(
                f"{wf}: inputs (channels, percentiles) {inputs[wf]} != train validation's {inputs['train']}"
            )
    return problems


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}#{key}" if prefix else str(key)))
        return out or {prefix: {}}
    if isinstance(node, list) and any(isinstance(v, (dict, list)) for v in node):
        items = [v for v in node if not (isinstance(v, str) and v in EXTRA_ITEMS)]
        out = {}
        for i, value in enumerate(items):
            out.update(_flatten(value, f"{prefix}#{i}"))
        return out or {prefix: []}
    if isinstance(node, list):
        return {prefix: [v for v in node if not (isinstance(v, str) and v in EXTRA_ITEMS)]}
    return {prefix: node}


def shared_problems(configs: dict[str, dict[str, dict]]) -> list[str]:
    """Ids whose values differ between the bundles' same config file where :data:`MAY_DIFFER` does not allow it."""
    problems = []
    for config, allowed in MAY_DIFFER.items():
        flat = {name: _flatten(configs[name][config]) for name in configs}
        for id_ in sorted(set().union(*flat.values())):
            if any(fnmatch.fnmatchcase(id_, pattern) for pattern in allowed):
                continue
            values = {name: flat[name].get(id_, _MISSING) for name in flat}
            if len({repr(v) for v in values.values()}) > 1:
                problems.append(f"{config}: {id_} differs: {values}")
    return problems


# ---- the real configs agree ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def configs() -> dict[str, dict[str, dict]]:
    return load_configs()


@pytest.mark.parametrize("seg", sorted(ISL_OF))
def test_isl_and_segmentation_inputs_agree(configs: dict, seg: str) -> None:
    assert pair_problems(configs[ISL_OF[seg]], configs[seg], ISL_OF[seg]) == []


@pytest.mark.parametrize("name", BUNDLE_NAMES)
def test_windows_agree_within_bundle(configs: dict, name: str) -> None:
    assert window_problems(configs[name]) == []


def test_shared_settings_agree_across_bundles(configs: dict) -> None:
    assert shared_problems(configs) == []


def test_overlays_state_only_differences(configs: dict) -> None:
    """evaluate.yaml / multi_gpu_train.yaml restate no pipeline: no preprocessing, inferer or network of their own."""
    for name in BUNDLE_NAMES:
        for overlay in ("evaluate.yaml", "multi_gpu_train.yaml"):
            keys = set(configs[name][overlay])
            restated = {k for k in keys if k.split("#")[0] in ("imports", "preprocessing", "inferer", "network_def")}
            restated |= {k for k in keys if k in ("validate", "train", "network_def") or "inferer" in k}
            assert restated <= {k for k in keys if k.startswith("network_def#")}, (name, overlay, restated)
    assert all("roi_size" not in configs[n]["inference.yaml"] for n in BUNDLE_NAMES)  # the window is sw_roi_size


def test_may_differ_lists_only_real_differences(configs: dict) -> None:
    """Every pattern of :data:`MAY_DIFFER` matches an id that does differ, so the list cannot hide new drift."""
    for config, allowed in MAY_DIFFER.items():
        flat = {name: _flatten(configs[name][config]) for name in configs}
        differing = [
            id_
            for id_ in set().union(*flat.values())
            if len({repr(flat[name].get(id_, _MISSING)) for name in flat}) > 1
        ]
        for pattern in allowed:
            assert any(fnmatch.fnmatchcase(id_, pattern) for id_ in differing), f"{config}: {pattern} never differs"


# ---- each check reports an edited copy ----------------------------------------------------------------------------


def test_pair_check_reports_drift(configs: dict) -> None:
    isl, seg = copy.deepcopy(configs["dapi_isl"]), copy.deepcopy(configs["nucleus_seg"])
    seg["train.yaml"]["input_percentiles"] = [0.5, 99.8]
    problems = pair_problems(isl, seg, "dapi_isl")
    assert any("train: input percentiles" in p for p in problems)
    assert any("evaluate: input percentiles" in p for p in problems)  # evaluate follows train.yaml
    seg = copy.deepcopy(configs["nucleus_seg"])
    seg["inference.yaml"]["in_channels"] = 2
    assert [p.split(":")[0] for p in pair_problems(isl, seg, "dapi_isl")] == ["inference", "inference"]
    # a transform that stops using the shared id is caught too: values are compared, not ids
    isl = copy.deepcopy(configs["dapi_isl"])
    isl["train.yaml"]["load_fields"][1]["upper"] = 99.0
    assert any("input percentiles" in p for p in pair_problems(isl, configs["nucleus_seg"], "dapi_isl"))


def test_window_check_reports_drift(configs: dict) -> None:
    bundle = copy.deepcopy(configs["cell_instance_seg"])
    bundle["inference.yaml"]["sw_overlap"] = 0.25
    assert window_problems(bundle) == ["inference: window overlap 0.25 != train validation's 0.1875"]
    bundle = copy.deepcopy(configs["dapi_isl"])
    bundle["evaluate.yaml"]["validate#inferer#roi_size"] = "@roi_size"  # the training crop as the window
    problems = window_problems(bundle)
    assert "evaluate: the window is '@roi_size', not '@sw_roi_size'" in problems
    bundle = copy.deepcopy(configs["dapi_isl"])
    bundle["inference.yaml"]["input_percentiles"] = [2.0, 99.8]
    assert any(p.startswith("inference: inputs") for p in window_problems(bundle))


def test_shared_check_reports_drift(configs: dict) -> None:
    edited = copy.deepcopy(configs)
    edited["cellmask_isl"]["train.yaml"]["num_workers"] = 4
    edited["nucleus_seg"]["multi_gpu_train.yaml"]["train#sampler"]["shuffle"] = False
    del edited["dapi_isl"]["inference.yaml"]["min_free_mb"]
    problems = shared_problems(edited)
    assert sorted(p.split(" differs")[0] for p in problems) == [
        "inference.yaml: min_free_mb",
        "multi_gpu_train.yaml: train#sampler#shuffle",
        "train.yaml: num_workers",
    ]
    # what may differ, does not count
    edited = copy.deepcopy(configs)
    edited["cellmask_isl"]["train.yaml"]["in_channels"] = 2
    assert shared_problems(edited) == []
