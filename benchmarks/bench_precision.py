"""Benchmark and equivalence gate: bf16 autocast against fp32 on the CPU (``precision: bf16`` vs ``fp32``).

Two parts, both measured in this one run, fp32 first and bf16 second on the same inputs:

1. **Speed** (FlexibleUNet-densenet121, 1 intra-op thread, random weights: the time does not depend on them;
   through the bundles' ``with_precision``, output heads in fp32): inference of one 512 x 512 window
   (``channels_last``) and one training step of the cpu preset (5 crops of 256 x 256, forward + backward + Adam),
   each the median of ``--repeat`` calls. Printed: the times and the ratio fp32 / bf16 (> 1: bf16 is faster).
2. **Equivalence**, through the bundles' own validation pipeline (``validate#preprocessing``, ``validate#inferer``
   with ``precision`` set, ``validate#postprocessing``): a cell_instance_seg model and a dapi_isl model (given with
   ``--cell_model`` / ``--stain_model``, else trained here for ``--steps`` fp32 steps on a synthetic dataset) on
   the test fields. Gate: instance mAP of the bf16 labels against the fp32 labels >= 0.99 (mean over fields) and
   |PCC(bf16 stain, true) - PCC(fp32 stain, true)| <= 0.005 on every field. Exit code 1 when the gate fails.

Run: ``python benchmarks/bench_precision.py [--repeat 5] [--steps 60] [--cell_model M --cell_dataset DIR]
[--stain_model M --stain_dataset DIR]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.bundle import ConfigParser, run

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from monai_isl.bundle import workflow_configs  # noqa: E402
from monai_isl.data import find_datalist, load_datalist  # noqa: E402
from monai_isl.losses import CombinedLoss  # noqa: E402
from monai_isl.metrics import mean_average_precision, pearson_correlation  # noqa: E402
from monai_isl.networks import cell_network  # noqa: E402
from monai_isl.precision import cpu_bf16_flags, with_precision  # noqa: E402

MAP_GATE = 0.99
PCC_GATE = 0.005


def _median_time(fn: Any, repeat: int) -> float:
    fn()  # warm-up (oneDNN primitive creation)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def speed(repeat: int) -> dict[str, float]:
    """Median seconds of a 512 x 512 inference window and a cpu-preset training step, fp32 and bf16."""
    torch.manual_seed(0)
    net = cell_network(in_channels=1, init="none")
    x = torch.randn(1, 1, 512, 512)
    out: dict[str, float] = {}
    infer = net.eval().to(memory_format=torch.channels_last)
    for precision in ("fp32", "bf16"):

        def window(p: str = precision) -> None:
            with torch.inference_mode():
                with_precision(infer, p)(x)

        out[f"infer_{precision}"] = _median_time(window, repeat)
    net = cell_network(in_channels=1, init="none").train()
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    loss = CombinedLoss(alpha=2000.0)
    xb = torch.randn(5, 1, 256, 256)
    yb = torch.cat([torch.rand(5, 1, 256, 256) * 255, (torch.rand(5, 1, 256, 256) > 0.5).float()], 1)
    for precision in ("fp32", "bf16"):

        def step(p: str = precision) -> None:
            opt.zero_grad()
            loss(with_precision(net, p)(xb), yb).backward()
            opt.step()

        out[f"train_{precision}"] = _median_time(step, max(2, repeat // 2))
    return out


def _train(bundle: str, dataset: Path, out: Path, steps: int) -> Path:
    run(
        config_file=workflow_configs(ROOT / "bundles" / bundle, "train"),
        dataset_dir=str(dataset),
        ckpt_dir=str(out / "models"),
        output_dir=str(out / "runs"),
        init="none",
        preset="quick",
        train_steps=steps,
        precision="fp32",
        num_workers=0,
        sw_roi_size=[128, 128],
    )
    return out / "models" / "model.pt"


def _pipeline(bundle: str, dataset: Path, model: Path, precision: str) -> tuple[Any, Any, Any, Any]:
    parser = ConfigParser()
    parser.read_config(workflow_configs(ROOT / "bundles" / bundle, "train"))
    parser.update({"dataset_dir": str(dataset), "precision": precision, "init": "none", "holdout_fraction": 0})
    network = parser.get_parsed_content("network")
    network.load_state_dict(torch.load(model, map_location="cpu"))
    network.eval()
    return (
        network,
        parser.get_parsed_content("validate#preprocessing"),
        parser.get_parsed_content("validate#inferer"),
        parser.get_parsed_content("validate#postprocessing") if bundle == "cell_instance_seg" else None,
    )


def equivalence(bundle: str, dataset: Path, model: Path) -> list[float]:
    """Per test field: mAP(bf16 vs fp32 labels) for cells; |PCC_bf16 - PCC_fp32| (against the stain) for dapi_isl."""
    items = load_datalist(find_datalist(dataset, bundle), "test")
    pipes = {p: _pipeline(bundle, dataset, model, p) for p in ("fp32", "bf16")}
    scores = []
    for item in items:
        results = {}
        for precision, (network, pre, inferer, post) in pipes.items():
            d = pre(dict(item))
            with torch.inference_mode():
                pred = inferer(d["image"][None], network)[0]
            if post is None:
                results[precision] = pearson_correlation(pred, d["label"])
            else:
                results[precision] = np.asarray(post({**d, "pred": pred})["pred_instances"]).squeeze()
        if post is None:
            scores.append(abs(results["bf16"] - results["fp32"]))
            print(f"  {bundle} {item['name']}: PCC fp32 {results['fp32']:.4f} bf16 {results['bf16']:.4f}")
        else:
            scores.append(mean_average_precision(results["fp32"], results["bf16"]))
            print(
                f"  {bundle} {item['name']}: {int(results['fp32'].max())} fp32 / {int(results['bf16'].max())} bf16 "
                f"objects, mAP(bf16 vs fp32) {scores[-1]:.4f}"
            )
    return scores


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--steps", type=int, default=100, help="fp32 training steps of the models trained here")
    ap.add_argument("--cell_model", type=Path)
    ap.add_argument("--cell_dataset", type=Path)
    ap.add_argument("--stain_model", type=Path)
    ap.add_argument("--stain_dataset", type=Path)
    ap.add_argument("--skip_speed", action="store_true")
    ap.add_argument("--keep", type=Path, help="keep the models trained here in this folder (reuse: --cell_model)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    print(f"CPU bf16 flags: {', '.join(cpu_bf16_flags()) or 'none (bf16 is emulated: expect it slower)'}")
    if not args.skip_speed:
        t = speed(args.repeat)
        print(
            f"RESULT inference 512x512 window: fp32 {t['infer_fp32']:.3f} s, bf16 {t['infer_bf16']:.3f} s, "
            f"ratio fp32/bf16 {t['infer_fp32'] / t['infer_bf16']:.2f}x"
        )
        print(
            f"RESULT training step 5x256x256: fp32 {t['train_fp32']:.3f} s, bf16 {t['train_bf16']:.3f} s, "
            f"ratio fp32/bf16 {t['train_fp32'] / t['train_bf16']:.2f}x"
        )
    with tempfile.TemporaryDirectory(prefix="bench_precision_") as tmp:
        tmp = args.keep or Path(tmp)
        if None in (args.cell_model, args.stain_model) and None in (args.cell_dataset, args.stain_dataset):
            from monai_isl.synthetic import write_dataset

            synthetic = write_dataset(tmp / "synthetic", n_images=20, size=256, seed=0)  # 4 test fields
        cell_data = args.cell_dataset or synthetic
        stain_data = args.stain_dataset or synthetic
        cell_model = args.cell_model or _train("cell_instance_seg", cell_data, tmp / "cell", args.steps)
        stain_model = args.stain_model or _train("dapi_isl", stain_data, tmp / "dapi", args.steps)
        maps = equivalence("cell_instance_seg", cell_data, cell_model)
        pccs = equivalence("dapi_isl", stain_data, stain_model)
    ok_map, ok_pcc = float(np.mean(maps)) >= MAP_GATE, max(pccs) <= PCC_GATE
    print(f"RESULT instance mAP bf16 vs fp32: {np.mean(maps):.4f} (gate >= {MAP_GATE}): {'pass' if ok_map else 'FAIL'}")
    print(
        f"RESULT stain |PCC bf16 - PCC fp32|: max {max(pccs):.5f} (gate <= {PCC_GATE}): {'pass' if ok_pcc else 'FAIL'}"
    )
    return 0 if ok_map and ok_pcc else 1


if __name__ == "__main__":
    raise SystemExit(main())
