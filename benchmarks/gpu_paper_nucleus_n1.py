"""On one GPU: the paper's N = 1 nucleus schedule, ISL vs random init, on synthetic and on real nuclei; prints IoUs.

Supplementary Table 1 at N = 1: 20,000 steps from ISL, 5,000 from ImageNet (here random init: no ImageNet weights
offline), 512x512 crops, 5 per image, lr 0.01, Adam; plus AMP. Both datasets go through ``python -m monai_isl
sweep --preset paper`` (the bundles' own training, validation at step 0, calibrated transfer, learning curves).
The ISL models: ``--real_isl`` (a dapi_isl ``model.pt`` trained on the real sample's top half, e.g. the one of
``docs/results/real_nucleus_cpu``) and, for the synthetic data, a dapi_isl trained here for ``--synth_isl_steps``
steps (the paper's 192,000 do not fit). Prepare on the CPU machine first::

    python -m monai_isl prepare isl_example --out outputs/isl_condition_b
    python docs/results/real_nucleus_cpu/make_tiles.py outputs/isl_condition_b outputs/isl_nuclei_256

then, on the GPU machine (carry outputs/isl_condition_b, outputs/isl_nuclei_256 and the ISL model)::

    python benchmarks/gpu_paper_nucleus_n1.py --real_isl outputs/exp/pretext_dapi/models/model.pt

Prints the wall time of each part and, per dataset, the test IoU of both inits (mean over seeds) and ISL - baseline.
Not run yet: this session had no GPU.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monai_isl.bundle import run_bundle  # noqa: E402
from monai_isl.synthetic import write_dataset  # noqa: E402


def _mean_iou(results: Path) -> dict[str, float]:
    with open(results, newline="") as f:
        rows = list(csv.DictReader(f))
    out: dict[str, list[float]] = {}
    for r in rows:
        out.setdefault(r["init"], []).append(float(r["value"]))
    return {k: sum(v) / len(v) for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    from monai_isl.sweep import sweep

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--real_isl", required=True, help="dapi_isl model.pt of the real sample")
    p.add_argument("--real_dataset", default="outputs/isl_nuclei_256")
    p.add_argument("--out", default="outputs/gpu_paper_n1")
    p.add_argument("--seeds", default="0")
    p.add_argument("--synth_isl_steps", type=int, default=3000)
    args = p.parse_args(argv)
    out = Path(args.out)
    start = time.time()
    synth = write_dataset(str(out / "synthetic"), n_images=64, size=512, seed=0)
    isl_dir = out / "synthetic_isl"
    run_bundle(
        "dapi_isl", "train", dataset_dir=str(synth), ckpt_dir=str(isl_dir / "models"), output_dir=str(isl_dir / "runs"),
        preset="paper", train_steps=args.synth_isl_steps, learning_rate=1e-3, amp=True,
    )  # fmt: skip
    print(f"synthetic dapi_isl ({args.synth_isl_steps} steps): {time.time() - start:.0f} s", flush=True)
    common = {"task": "nucleus", "sizes": "1", "inits": "isl,none", "seeds": args.seeds, "preset": "paper"}
    extra = {"amp": True, "num_workers": 4}
    report = {}
    for name, dataset, isl in (
        ("synthetic", str(synth), str(isl_dir / "models" / "model.pt")),
        ("real", args.real_dataset, args.real_isl),
    ):
        t0 = time.time()
        sweep(dataset=dataset, out=str(out / f"sweep_{name}"), isl_checkpoint=isl, bundle_args=extra, **common)
        report[name] = _mean_iou(out / f"sweep_{name}" / "results.csv")
        print(f"{name}: {time.time() - t0:.0f} s, IoU {report[name]}", flush=True)
    for name, ious in report.items():
        isl, base = ious.get("isl", float("nan")), ious.get("none", float("nan"))
        print(f"RESULT {name}: ISL {isl:.3f}  random {base:.3f}  ISL - random {isl - base:+.3f}")
    print(f"total {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
