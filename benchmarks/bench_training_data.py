"""Benchmark: the bundles' training data path on N = 500 fields of 2160 x 2160 (memory and data-loading share).

1. Writes (or reuses) ``--n`` synthetic 16-bit fields in ``--root`` (outside the repository; ~14 GB for 500):
   bright-field z0/z1 and phase contrast (uint16, uncompressed) plus nucleus labels (zlib), i.e. the nucleus_seg
   inputs. They are shifted copies of two generated scenes with fresh noise, so every file differs.
2. Baseline: the caching the bundles had (MONAI ``CacheDataset``, cache_rate 1.0, decoded fields in RAM), on the
   first ``--baseline-n`` fields (it would need ~18 GB at N = 500), peak memory extrapolated linearly to ``--n``.
3. The bundle's default data path now (``cache: auto``, which picks the memory-mapped disk cache at this size) on
   all ``--n`` fields. Each measurement runs the real ``train#dataloader`` of ``bundles/<task>/configs/train.yaml``
   (parsed with ``monai.bundle.ConfigParser``: same transforms, workers and batch) in a fresh process, and
   samples the memory of that process and its DataLoader workers every 0.1 s (``/proc``): the sum of RSS (counts
   pages shared between the processes once per process: an upper bound) and of PSS (shared pages split).
4. The data-loading share of a training step: the bundle's ``SupervisedTrainer`` (real network, crop and batch,
   validation and other handlers off) for ``--steps`` iterations after a warm-up one; share = time waiting for the
   next batch / time per iteration.

Targets: peak memory of the data path <= 3 GB at N = 500, data loading < 10 % of the step time.
Run: ``python benchmarks/bench_training_data.py [--n 500] [--root /tmp/monai_isl_bench] [--steps 3]``
(the first run writes the fields and fills the disk cache: ~10-20 min on 2 cores; later runs reuse both).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGET_GB = 3.0
TARGET_SHARE = 0.10
FILES = ("bf_z0.tif", "bf_z1.tif", "phase.tif", "nuclei.tif")
PAGE = os.sysconf("SC_PAGE_SIZE")


# ------------------------------------------------------------------------------------------------------ data
def write_fields(root: Path, n: int, size: int, seed: int = 0) -> Path:
    """``n`` fields under ``root/data`` and ``nucleus_seg.json``; reused when a previous run wrote them all."""
    import tifffile

    from monai_isl.synthetic import generate_field

    data = root / "data"
    done = data / f".complete_{n}_{size}"
    if done.is_file():
        print(f"reusing {n} fields in {data}", flush=True)
        return data
    data.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    scenes = []
    for k in range(2):
        cache = root / f"scene_{size}_{seed + k}.npz"
        if not cache.is_file():
            print(f"generating synthetic scene {k + 1}/2 ({size} x {size}) ...", flush=True)
            f = generate_field(np.random.default_rng(seed + k), size=size)
            np.savez(cache, bf=f["brightfield"], phase=f["phase"][None], nuclei=f["nuclei"][None])
        s = np.load(cache)
        scenes.append(np.concatenate([s["bf"], s["phase"], s["nuclei"]], axis=0))  # (4, H, W) uint16

    def write(i: int) -> None:
        rng = np.random.default_rng([seed, i])
        shift = (int(rng.integers(0, size)), int(rng.integers(0, size)))
        stack = np.roll(scenes[i % 2], shift, axis=(1, 2))
        folder = data / f"f{i:04d}"
        folder.mkdir(exist_ok=True)
        for c, name in enumerate(FILES):
            if name == "nuclei.tif":
                tifffile.imwrite(folder / name, stack[c], compression="zlib", compressionargs={"level": 1})
            else:
                noisy = stack[c] + rng.integers(0, 32, stack[c].shape, dtype=np.uint16)  # no overflow: < 65504
                tifffile.imwrite(folder / name, noisy)

    with ThreadPoolExecutor(2) as pool:
        for i, _ in enumerate(pool.map(write, range(n))):
            if (i + 1) % 50 == 0:
                print(f"  wrote {i + 1}/{n} fields ({time.perf_counter() - start:.0f} s)", flush=True)
    items = [{"image": [f"f{i:04d}/{c}" for c in FILES[:3]], "label": f"f{i:04d}/nuclei.tif"} for i in range(n)]
    doc = {"training": items, "validation": items[:1], "test": items[:1]}
    (data / "nucleus_seg.json").write_text(json.dumps(doc))
    done.write_text("ok\n")
    gb = sum(f.stat().st_size for f in data.rglob("*.tif")) / 2**30
    print(f"wrote {n} fields ({gb:.1f} GB) in {time.perf_counter() - start:.0f} s", flush=True)
    return data


# ---------------------------------------------------------------------------------------------------- memory
def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    kids = [int(k) for k in f.read().split()]
                out += kids
                todo += kids
        except OSError:
            continue
    return out


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE


def _pss(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    return 0


class TreeMemory(threading.Thread):
    """Samples the summed RSS and PSS of this process and all its descendants; keeps the peaks."""

    def __init__(self, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.interval, self.stop_flag = interval, threading.Event()
        self.peak_rss = self.peak_pss = 0
        self.max_children = 0

    def sample(self) -> None:
        pids = [os.getpid(), *_descendants(os.getpid())]
        rss = pss = 0
        for pid in pids:
            try:
                rss += _rss(pid)
                pss += _pss(pid)
            except OSError:  # a worker that just exited
                continue
        self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
        self.max_children = max(self.max_children, len(pids) - 1)

    def run(self) -> None:
        while not self.stop_flag.is_set():
            self.sample()
            time.sleep(self.interval)

    def peaks(self, reset: bool = False) -> dict[str, float]:
        """Peaks so far in GB (and the most descendants seen); ``reset`` starts a new measurement."""
        self.sample()
        out = {"rss_gb": self.peak_rss / 2**30, "pss_gb": self.peak_pss / 2**30, "workers": self.max_children}
        if reset:
            self.peak_rss = self.peak_pss = self.max_children = 0
        return out

    def stop(self) -> dict[str, float]:
        self.stop_flag.set()
        self.join()
        return self.peaks()


# ---------------------------------------------------------------------------------------------------- phases
def _parser(args: argparse.Namespace) -> Any:
    from monai.bundle import ConfigParser

    from monai_isl.bundle import workflow_configs

    parser = ConfigParser()
    parser.read_config(workflow_configs(ROOT / "bundles" / args.task, "train"))
    parser["bundle_root"] = str(ROOT / "bundles" / args.task)
    parser["dataset_dir"] = str(Path(args.root) / "data")
    parser["cache_dir"] = str(Path(args.root) / "cache")  # never the repository's bundle folder
    parser["ckpt_dir"] = str(Path(args.root) / "models")
    parser["output_dir"] = str(Path(args.root) / "runs")
    parser["init"] = "none"
    if args.limit:
        parser["train#dataset#data"] = f"$monai_isl.data.load_datalist(@datalist, 'training')[:{args.limit}]"
    if args.cache == "legacy":  # the bundles' dataset before the disk cache: MONAI's CacheDataset, as configured then
        parser["train#dataset"] = {
            "_target_": "CacheDataset",
            "data": f"$monai_isl.data.load_datalist(@datalist, 'training')[:{args.limit or 10**9}]",
            "transform": "@train#preprocessing",
            "cache_rate": 1.0,
            "progress": False,
        }
    elif args.cache:
        parser["cache"] = args.cache
    return parser


def phase_data(args: argparse.Namespace) -> dict[str, Any]:
    """Build the real train dataloader (fills the cache) and iterate ``--batches`` batches; memory and times."""
    import torch

    torch.manual_seed(0)
    parser = _parser(args)
    monitor = TreeMemory()
    monitor.start()
    start = time.perf_counter()
    loader = parser.get_parsed_content("train#dataloader")
    build = time.perf_counter() - start
    build_mem = monitor.peaks(reset=True)  # filling the cache (first run) is measured apart from the epochs
    kind = type(loader.dataset).__name__
    waits = []
    it = iter(loader)
    for _ in range(args.batches):
        t = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:  # fewer batches than asked in one epoch: go on with the next epoch
            it = iter(loader)
            batch = next(it)
        waits.append(time.perf_counter() - t)
    shape = tuple(batch["image"].shape)
    del it, batch
    mem = monitor.stop()
    result = {"build_s": build, "build_rss_gb": build_mem["rss_gb"], "dataset": kind, "batch_shape": shape}
    result.update(first_s=waits[0], median_batch_s=float(np.median(waits[1:] or waits)), **mem)
    return result


def phase_train(args: argparse.Namespace) -> dict[str, Any]:
    """The bundle's SupervisedTrainer for ``--steps`` + 1 iterations; time waiting for data vs per iteration."""
    import torch
    from ignite.engine import Events

    torch.manual_seed(0)
    parser = _parser(args)
    parser["train#handlers"] = []  # validation, checkpoints, logging, progress bar: off
    parser["train#trainer#epoch_length"] = args.steps + 1
    parser["train#trainer#max_epochs"] = 1
    if args.train_batch:
        parser["batch_size"] = args.train_batch
    monitor = TreeMemory(interval=0.5)
    monitor.start()
    trainer = parser.get_parsed_content("train#trainer")
    marks: dict[str, float] = {}
    rows: list[tuple[float, float]] = []
    trainer.add_event_handler(Events.GET_BATCH_STARTED, lambda e: marks.__setitem__("a", time.perf_counter()))
    trainer.add_event_handler(Events.GET_BATCH_COMPLETED, lambda e: marks.__setitem__("b", time.perf_counter()))

    def done(engine: Any) -> None:
        now = time.perf_counter()
        rows.append((marks["b"] - marks["a"], now - marks["a"]))
        print(f"  iteration {len(rows)}: data {rows[-1][0]:.2f} s of {rows[-1][1]:.2f} s", flush=True)

    trainer.add_event_handler(Events.ITERATION_COMPLETED, done)
    trainer.run()
    mem = monitor.stop()
    timed = rows[1:] or rows
    wait, total = sum(r[0] for r in timed), sum(r[1] for r in timed)
    crops = int(parser.get_parsed_content("batch_size")) * int(parser.get_parsed_content("num_samples"))
    result = {"wait_s": wait / len(timed), "step_s": total / len(timed), "share": wait / total, "crops": crops}
    result.update(first_wait_s=rows[0][0], **mem)
    return result


def run_phase(args: argparse.Namespace, phase: str, **extra: Any) -> dict[str, Any]:
    """Run one phase in a fresh interpreter (its own peak memory) and return its JSON result."""
    cmd = [sys.executable, __file__, "--phase", phase, "--root", str(args.root), "--task", args.task]
    cmd += ["--batches", str(args.batches), "--steps", str(args.steps), "--train-batch", str(args.train_batch)]
    for key, value in extra.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    lines = proc.stdout.strip().splitlines()
    for line in lines[:-1]:
        print(line)
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"phase {phase} {extra} failed (exit {proc.returncode})")
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="/tmp/monai_isl_bench", help="data and cache folder (outside the repo)")
    parser.add_argument("--n", type=int, default=500, help="number of fields")
    parser.add_argument("--size", type=int, default=2160)
    parser.add_argument("--task", default="nucleus_seg", choices=["nucleus_seg"])
    parser.add_argument("--baseline-n", default="8,16", help="field counts for the in-RAM baseline (extrapolated)")
    parser.add_argument("--batches", type=int, default=10, help="batches drawn in the memory phases")
    parser.add_argument("--steps", type=int, default=3, help="timed training iterations (after a warm-up one)")
    parser.add_argument("--train-batch", type=int, default=0, help="fields per batch in the training phase (0: config)")
    parser.add_argument("--skip-train", action="store_true", help="memory phases only")
    parser.add_argument("--phase", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--cache", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        os.environ.setdefault("MONAI_ISL_DEVICE", "cpu")
        result = phase_data(args) if args.phase == "data" else phase_train(args)
        print(json.dumps(result, default=str))
        return 0

    root = Path(args.root)
    write_fields(root, args.n, args.size)
    base_ns = [int(v) for v in args.baseline_n.split(",")]
    base = {n: run_phase(args, "data", limit=n, cache="legacy") for n in base_ns}
    for n, r in base.items():
        print(f"baseline (RAM cache) N={n}: {r}", flush=True)
    print(f"default data path, N={args.n} (first run fills the disk cache) ...", flush=True)
    new = run_phase(args, "data", limit=args.n)
    print(f"default N={args.n}: {new}", flush=True)
    train = None if args.skip_train else run_phase(args, "train", limit=args.n)

    (n0, r0), (n1, r1) = sorted(base.items())[0], sorted(base.items())[-1]
    slope = {k: (r1[k] - r0[k]) / max(n1 - n0, 1) for k in ("rss_gb", "pss_gb")}
    extra = {k: r1[k] + slope[k] * (args.n - n1) for k in slope}
    print(f"\ntraining data path, {args.task}, {args.n} fields of {args.size} x {args.size} (3 x uint16 + labels)")
    print("| data path | fields | peak RSS (sum) | peak PSS (sum) | dataset | build | batch |")
    print("|---|---|---|---|---|---|---|")
    for n, r in sorted(base.items()):
        mem = f"{r['rss_gb']:.2f} GB | {r['pss_gb']:.2f} GB"
        row = f"{r['dataset']} | {r['build_s']:.0f} s | {r['median_batch_s']:.3f} s"
        print(f"| baseline: in RAM | {n} | {mem} | {row} |")
    print(f"| baseline, extrapolated linearly | {args.n} | {extra['rss_gb']:.1f} GB | {extra['pss_gb']:.1f} GB | | | |")
    mem = f"{new['rss_gb']:.2f} GB | {new['pss_gb']:.2f} GB"
    row = f"{new['dataset']} | {new['build_s']:.0f} s | {new['median_batch_s']:.3f} s"
    print(f"| default (cache: auto) | {args.n} | {mem} | {row} |")
    print(f"memory ratio (baseline extrapolated / default, RSS): {extra['rss_gb'] / new['rss_gb']:.1f}x")
    missed = []
    if new["rss_gb"] > TARGET_GB:
        missed.append(f"peak RSS {new['rss_gb']:.2f} GB > {TARGET_GB} GB")
    if train is not None:
        print(f"\ntraining iterations ({train['crops']} crops each, median of {args.steps} after a warm-up):")
        share = f"{100 * train['share']:.1f} % (target < {100 * TARGET_SHARE:.0f} %)"
        print(f"  waiting for data {train['wait_s']:.3f} s of {train['step_s']:.2f} s per iteration: {share}")
        print(f"  first batch (workers starting) {train['first_wait_s']:.2f} s")
        print(f"  peak memory with the network training: RSS {train['rss_gb']:.2f} GB, PSS {train['pss_gb']:.2f} GB")
        if train["share"] >= TARGET_SHARE:
            missed.append(f"data share {100 * train['share']:.1f} %")
    if missed:
        print("TARGET MISSED: " + "; ".join(missed))
        return 1
    print("targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
