"""Command line: ``python -m monai_isl COMMAND --help``.

Commands:
    synth   write a synthetic dataset (label-free + fluorescence + instance labels + datalists)
    demo    the main job: synthetic data -> train dapi_isl briefly on CPU -> evaluate -> print the PCC
    prepare data preparation (``prepare isl_example``: the public ISL sample as a dataset folder;
            ``prepare nuclei``: nucleus labels from a DAPI image; ``prepare usiigaci``)
    sweep   the paper's experiment: N-sweep of segmentation training, ISL vs baseline, tables and figures
    export-bundle  a bundle as a self-contained model-zoo zip (its code inside, no monai_isl needed to run it)

Flags may be spelt with ``_`` or ``-`` (``--n_images 4`` = ``--n-images 4``).

Training, evaluating and predicting with a bundle (dapi_isl, cellmask_isl, nucleus_seg, cell_instance_seg) are
not commands of this tool: they run with MONAI's bundle runner, from the repository root (the config paths are
relative to it), e.g.::

    python -m monai.bundle run --config_file bundles/dapi_isl/configs/train.yaml --dataset_dir DATA
    python -m monai.bundle run --config_file bundles/dapi_isl/configs/inference.yaml --dataset_dir DATA

See README.md, "Run a bundle on your own images", and each bundle's docs/README.md.
"""

from __future__ import annotations

import csv
import json
import logging
import sys
import time
from pathlib import Path

import fire
import numpy as np

from . import bundle as bundle_utils
from .export import export_bundle
from .sweep import sweep

logger = logging.getLogger("monai_isl")


def synth(out: str = "outputs/synthetic", n_images: int = 12, size: int = 256, seed: int = 0) -> str:
    """Write a synthetic dataset of co-registered label-free, fluorescence and instance-label fields.

    Args:
        out: output folder (created); it receives ``fields/`` and one datalist JSON per bundle.
        n_images: number of fields, at least 3 so that training, validation and test each get one (the flag
            may also be spelt ``--n-images``).
        size: height and width of each field in pixels.
        seed: random seed; the same seed writes the same files.
    """
    from .synthetic import write_dataset

    path = write_dataset(out, n_images=n_images, size=size, seed=seed)
    print(f"wrote {n_images} synthetic {size}x{size} fields and datalists to {path}")
    return str(path)


#: ``run_bundle(name, workflow, bundle_root=None, **overrides)``: one workflow (``train``, ``evaluate``,
#: ``inference``, ``multi_gpu_train``) of a bundle in this process; its config files come from
#: :func:`monai_isl.bundle.workflow_configs` (evaluate = train.yaml + evaluate.yaml)
run_bundle = bundle_utils.run_bundle


def read_metric_summary(eval_dir: str | Path, metric: str) -> dict[str, float]:
    """Mean, std, ... of ``metric`` from the ``<metric>_summary.csv`` that MONAI's MetricsSaver wrote."""
    path = Path(eval_dir) / f"{metric}_summary.csv"
    with open(path, newline="") as f:
        rows = list(csv.reader(f, delimiter="\t" if "\t" in path.read_text().splitlines()[0] else ","))
    header, last = rows[0], rows[-1]
    return {k: float(v) for k, v in zip(header[1:], last[1:])}


def demo(
    out: str = "outputs/demo",
    n_images: int = 16,
    size: int = 256,
    epochs: int = 15,
    roi: int = 128,
    seed: int = 0,
) -> dict[str, float]:
    """The main job on the embedded default: synthetic data -> train dapi_isl briefly -> evaluate -> print PCC.

    A few minutes on a 2-core CPU. Everything is written under ``out`` (the bundle's own ``models/`` folder is
    left alone): ``data/`` (synthetic fields), ``models/model.pt`` (best validation PCC), ``eval/`` (per-image CSV).

    Args:
        out: output folder.
        n_images: synthetic fields to generate (20% test, 10% validation, the rest for training).
        size: field size in pixels.
        epochs: training epochs.
        roi: training crop and sliding-window size (the paper uses 512; a CPU preset uses less).
        seed: seed for the data and the training.
    """
    start = time.time()
    out_path = Path(out).resolve()
    data_dir = synth(str(out_path / "data"), n_images=n_images, size=size, seed=seed)
    common = {
        "dataset_dir": data_dir,
        "ckpt_dir": str(out_path / "models"),
        "roi_size": [roi, roi],
        "sw_roi_size": [roi, roi],
        "seed": seed,
    }
    print(f"training dapi_isl for {epochs} epochs on {data_dir} ...")
    run_bundle("dapi_isl", "train", max_epochs=epochs, output_dir=str(out_path / "runs"), **common)
    # evaluate = train.yaml + evaluate.yaml: the model trained above, with its validation's sliding window
    trained = {"dataset_dir": data_dir, "checkpoint": str(out_path / "models" / "model.pt"), "sw_roi_size": [roi, roi]}
    eval_dir, pred_dir = out_path / "eval", out_path / "predictions"
    run_bundle("dapi_isl", "evaluate", output_dir=str(eval_dir), **trained)
    summary = read_metric_summary(eval_dir, "test_pcc")
    run_bundle("dapi_isl", "inference", output_dir=str(pred_dir), **trained)
    figure = _demo_figure(data_dir, pred_dir, out_path / "demo.png", summary["mean"])
    result = {"pcc_mean": summary["mean"], "pcc_std": summary["std"], "minutes": (time.time() - start) / 60}
    print(
        f"dapi_isl test PCC = {result['pcc_mean']:.3f} +- {result['pcc_std']:.3f} "
        f"({result['minutes']:.1f} min; per-image values in {eval_dir / 'test_pcc_raw.csv'}; figure {figure})"
    )
    (out_path / "result.json").write_text(json.dumps(result, indent=2))
    return result


def _prepare_commands() -> dict[str, object]:
    from . import prepare

    return {"isl_example": prepare.isl_example, "nuclei": prepare.nuclei, "usiigaci": prepare.usiigaci}


def _demo_figure(data_dir: str, pred_dir: Path, path: Path, pcc: float) -> Path:
    """Label-free input | true DAPI | predicted DAPI for the first test field."""
    from .data import find_datalist, load_datalist
    from .figures import save_panel
    from .io import read_image
    from .transforms.field import output_path

    item = load_datalist(find_datalist(data_dir, "dapi_isl"), "test")[0]
    image = [read_image(f)[0] for f in item["image"]]
    target = np.max([read_image(f)[0] for f in item["label"]], axis=0)
    pred = read_image(output_path(pred_dir, item["name"], "_dapi.tif"))[0]
    return save_panel(
        [image[0], image[2], target, pred],
        ["bright-field (input)", "phase contrast (input)", "DAPI (truth)", "DAPI (predicted)"],
        path,
        suptitle=f"dapi_isl on a synthetic test field (mean test PCC {pcc:.2f})",
        cmaps=["gray", "gray", "magma", "magma"],
    )


COMMANDS = {
    "synth": synth,
    "demo": demo,
    "prepare": _prepare_commands(),
    "sweep": sweep,
    "export-bundle": export_bundle,
}


def main() -> None:
    """Entry point of ``python -m monai_isl`` and the ``monai-isl`` script."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if sys.argv[1:] in ([], ["--help"], ["-h"]):
        # fire lists the commands of a dict but shows no module docstring: print the overview (bundles!) first
        print(__doc__.strip() + "\n", flush=True)
    fire.Fire(COMMANDS, name="monai_isl")
