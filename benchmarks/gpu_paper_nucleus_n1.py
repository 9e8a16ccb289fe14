"""On one GPU: the paper's N = 1 nucleus schedule, ISL vs random init, on synthetic and on real nuclei; prints IoUs.

Supplementary Table 1 at N = 1: 20,000 steps from ISL, 5,000 from ImageNet (here random init: no ImageNet weights
offline), 512x512 crops, lr 0.01, Adam; plus AMP. Every run goes through ``python -m monai_isl sweep --preset paper``
(the bundles' own training, validation at step 0, calibrated transfer, learning curves).

1. Two dapi_isl pretext models are trained side by side, ``--isl_steps`` steps each at lr 1e-3 (the paper's 192,000
   steps at lr 0.1 do not fit): one on 64 synthetic 512x512 fields, one on the real sample's top half
   (``prepare isl_example``; the model the CPU runs of ``docs/results/real_nucleus_cpu`` start from, trained longer).
2. Their time per step sets the fraction ``f`` of the paper's segmentation schedule that fits ``--budget_s``:
   ``f = min(1, time left / (20,000 x seconds per pretext step))`` (a pretext step of 10 crops with 2 runs on the GPU
   is taken as the cost of a segmentation step of 5 crops with 4 runs on it). ``--fraction`` fixes it instead.
3. Four sweeps run side by side (synthetic / real x ISL / random), ISL for ``f x 20,000`` steps, random init for
   ``f x 5,000``: the paper's ratio.

Prints the wall time of each part, ``f``, and per dataset the test IoU of both inits and ISL - random
(``RESULT`` lines), and writes them with the sweeps' summaries to ``--report_dir`` (``$OUT`` on the device).

Prepare on the CPU machine (data, and wheels of the packages the GPU image lacks)::

    bash benchmarks/gpu_prepare.sh

then on the GPU machine, carrying ``outputs/gpu`` (the command is in ``benchmarks/gpu_prepare.sh``'s last lines)::

    python3 -m pip install --no-deps --no-index outputs/gpu/wheels/*.whl
    PYTHONPATH=$PWD python3 benchmarks/gpu_paper_nucleus_n1.py --report_dir $OUT

``--smoke`` checks the whole script on a CPU (12 synthetic fields of 256x256, 3 steps per run, no AMP; the paper
preset otherwise): a test of the script, not a result.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from monai_isl.synthetic import write_dataset  # noqa: E402

#: Supplementary Table 1, N = 1: nucleus segmentation steps per init (ImageNet's 5,000 for the random baseline)
PAPER_STEPS = {"isl": 20_000, "none": 5_000}


def _mean_iou(results: Path) -> dict[str, float]:
    """Mean test IoU per init of a sweep's results.csv."""
    with open(results, newline="") as f:
        rows = list(csv.DictReader(f))
    out: dict[str, list[float]] = {}
    for r in rows:
        out.setdefault(r["init"], []).append(float(r["value"]))
    return {k: sum(v) / len(v) for k, v in out.items()}


def _start(cmd: list[str], log: Path, threads: int) -> subprocess.Popen:
    """One run as its own process (several share the GPU), its output in ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    print("$ " + " ".join(cmd), flush=True)
    return subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env, cwd=ROOT)


def _wait(procs: dict[str, tuple[subprocess.Popen, Path]]) -> None:
    """Wait for every run; a failed one stops the script with the end of its log."""
    for name, (proc, log) in procs.items():
        if proc.wait() != 0:
            tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-40:])
            raise RuntimeError(f"{name} failed (exit {proc.returncode}); end of {log}:\n{tail}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="outputs/gpu", help="benchmarks/gpu_prepare.sh's folder")
    p.add_argument("--out", default="outputs/gpu_paper_n1")
    p.add_argument("--report_dir", default=None, help="copy the report and the sweeps' summaries here ($OUT)")
    p.add_argument("--seeds", default="0")
    p.add_argument("--isl_steps", type=int, default=2000, help="steps of each dapi_isl pretext model")
    p.add_argument("--budget_s", type=float, default=420.0, help="wall time for the whole script")
    p.add_argument("--fraction", type=float, default=None, help="fraction of the paper's steps (default: fit budget)")
    p.add_argument("--workers", type=int, default=3, help="data-loader workers per run (4 runs share the CPUs)")
    p.add_argument("--smoke", action="store_true", help="tiny data, 3 steps per run, CPU: checks the script only")
    args = p.parse_args(argv)
    start = time.time()
    data, out = Path(args.data), Path(args.out)
    for need in (data / "isl_condition_b" / "dapi_isl.json", data / "isl_nuclei_256" / "nucleus_seg.json"):
        if not need.is_file():
            raise FileNotFoundError(
                f"{need} is missing: run `bash benchmarks/gpu_prepare.sh` first (on the CPU machine)"
            )
    if out.exists():
        shutil.rmtree(out)  # every run starts fresh: a device machine starts bare anyway
    amp, workers, isl_steps = (False, 0, 3) if args.smoke else (True, args.workers, args.isl_steps)
    synth = write_dataset(out / "synthetic", n_images=12 if args.smoke else 64, size=256 if args.smoke else 512, seed=0)
    print(f"synthetic data: {time.time() - start:.0f} s", flush=True)

    # 1. the two pretext models, side by side
    t0, procs, isl = time.time(), {}, {}
    for name, dataset in (("synthetic", synth), ("real", data / "isl_condition_b")):
        run = out / f"pretext_{name}"
        cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "bundles/dapi_isl/configs/train.yaml"]
        cmd += ["--bundle_root", "bundles/dapi_isl", "--dataset_dir", str(Path(dataset).resolve())]
        cmd += ["--ckpt_dir", str((run / "models").resolve()), "--output_dir", str((run / "runs").resolve())]
        cmd += ["--preset", "paper", "--train_steps", str(isl_steps), "--learning_rate", "0.001"]
        cmd += ["--amp", str(amp).lower(), "--num_workers", str(workers)]
        procs[name] = (_start(cmd, run / "run.log", threads=1 if args.smoke else 4), run / "run.log")
        isl[name] = run / "models" / "model.pt"
    _wait(procs)
    per_step = (time.time() - t0) / isl_steps
    print(f"pretext dapi_isl x 2 ({isl_steps} steps each, side by side): {time.time() - t0:.0f} s", flush=True)

    # 2. the fraction of the paper's schedule that fits
    left = args.budget_s - (time.time() - start) - 60.0  # evaluation, curves and the report
    fraction = args.fraction or min(1.0, max(left, 0.0) / (PAPER_STEPS["isl"] * per_step))
    steps = {init: 3 if args.smoke else max(1, math.ceil(fraction * n)) for init, n in PAPER_STEPS.items()}
    print(f"fraction of the paper's steps: {fraction:.3f} -> {steps} ({per_step:.3f} s per pretext step)", flush=True)

    # 3. four sweeps side by side
    t0, procs = time.time(), {}
    extra = {"amp": amp, "num_workers": workers}
    for name, dataset in (("synthetic", synth), ("real", data / "isl_nuclei_256")):
        for init in PAPER_STEPS:
            sweep_out = out / f"sweep_{name}_{init}"
            cmd = [sys.executable, "-m", "monai_isl", "sweep", "--task", "nucleus", "--dataset", str(dataset)]
            cmd += ["--sizes", "1", "--inits", init, "--seeds", args.seeds, "--out", str(sweep_out)]
            cmd += ["--preset", "paper", "--steps", str(steps[init])]
            cmd += ["--bundle_args", repr(extra)]
            if init == "isl":
                cmd += ["--isl_checkpoint", str(isl[name])]
            log = sweep_out / "sweep.log"
            procs[f"{name} {init}"] = (_start(cmd, log, threads=1 if args.smoke else 2), log)
            if args.smoke:  # one at a time: four 512x512 CPU runs side by side need ~20 GB
                _wait(procs)
    _wait(procs)
    print(f"segmentation, 4 sweeps side by side: {time.time() - t0:.0f} s", flush=True)

    lines = [f"# Paper N = 1 nucleus schedule on one GPU{' (SMOKE TEST, not a result)' if args.smoke else ''}", ""]
    lines += [f"- fraction of the paper's steps: {fraction:.3f}, steps {json.dumps(steps)}, seeds {args.seeds}"]
    lines += [f"- pretext: dapi_isl {isl_steps} steps at lr 1e-3, {per_step:.3f} s per step (2 side by side)", ""]
    for name in ("synthetic", "real"):
        ious = {init: _mean_iou(out / f"sweep_{name}_{init}" / "results.csv")[init] for init in PAPER_STEPS}
        isl_iou, base = ious["isl"], ious["none"]
        line = f"RESULT {name}: ISL {isl_iou:.3f}  random {base:.3f}  ISL - random {isl_iou - base:+.3f}"
        print(line, flush=True)
        lines.append(f"- {line}")
    lines.append(f"- total {time.time() - start:.0f} s")
    print(lines[-1][2:], flush=True)
    (out / "report.md").write_text("\n".join(lines) + "\n")
    if args.report_dir:  # at most 8 files come back from $OUT: the report and one summary + curves per sweep
        report = Path(args.report_dir)
        report.mkdir(parents=True, exist_ok=True)
        shutil.copy(out / "report.md", report / "report.md")
        for name in ("synthetic", "real"):
            for init in PAPER_STEPS:
                sweep_out = out / f"sweep_{name}_{init}"
                (report / f"{name}_{init}_summary.md").write_text(
                    (sweep_out / "summary.md").read_text() + "\n## curves.csv\n" + _read(sweep_out / "curves.csv")
                )
    return 0


def _read(path: Path) -> str:
    return path.read_text() if path.is_file() else "(none)\n"


if __name__ == "__main__":
    raise SystemExit(main())
