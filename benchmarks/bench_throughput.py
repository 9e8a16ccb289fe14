"""Benchmark: training throughput of a bundle's trainer against a bare PyTorch loop over the same network.

* bundle: ``train#trainer`` of ``bundles/<task>/configs/train.yaml`` parsed with ``monai.bundle.ConfigParser``: MONAI's
  Ignite ``SupervisedTrainer`` with the bundle's DataLoader (workers, cache, crops, augmentation), network, loss
  and optimiser; validation, checkpoints and logging handlers off.
* bare: ``for x, y in batches: zero_grad; loss(net(x), y).backward(); step`` over the same network, loss and
  optimiser objects, on tensors built before the loop (same batch and crop size).

Both run on the CPU in the same process, in alternating blocks (``--blocks`` x ``--steps`` iterations, each block
after one warm-up iteration); the script prints samples (crops) per second of each and the ratio bundle / bare
(target >= 0.9). The bundle trains on the datalist's training fields repeated to whole batches only, so every
timed iteration trains on as many crops as the bare loop's batch (checked). With CUDA present it also times the
bare loop in fp32 against AMP (bf16/fp16 autocast + GradScaler) with ``channels_last`` on the GPU (target ratio
>= 2); that part was not measured on the development machine.

Run: ``python benchmarks/bench_throughput.py [--task nucleus_seg] [--steps 2] [--blocks 2] [--roi 512]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGET_RATIO = 0.9
TARGET_GPU = 2.0


def make_parser(args: argparse.Namespace, dataset_dir: Path, scratch: Path) -> Any:
    from monai.bundle import ConfigParser

    from monai_isl.bundle import workflow_configs

    parser = ConfigParser()
    parser.read_config(workflow_configs(ROOT / "bundles" / args.task, "train"))
    parser["bundle_root"] = str(ROOT / "bundles" / args.task)
    parser["dataset_dir"] = str(dataset_dir)
    for key in ("ckpt_dir", "output_dir", "cache_dir"):  # nothing is written into the repository
        parser[key] = str(scratch / key)
    parser["device"] = "$torch.device('cpu')"
    parser["init"] = "none"
    if args.roi:
        parser["roi_size"] = [args.roi, args.roi]
    if args.num_samples:
        parser["num_samples"] = args.num_samples
    if args.batch_size:
        parser["batch_size"] = args.batch_size
    if args.num_workers >= 0:
        parser["num_workers"] = args.num_workers
    if args.channels_last in ("true", "false"):
        parser["channels_last"] = args.channels_last == "true"
    parser["train#dataset#data"] = whole_batches(dataset_dir, args.task, parser["batch_size"], args.steps + 1)
    parser["train#handlers"] = []
    parser["train#trainer#max_epochs"] = 1
    return parser


def whole_batches(dataset_dir: Path, task: str, batch_size: Any, iterations: int) -> list[dict[str, Any]]:
    """The dataset's training items (``monai_isl.data.load_datalist``: absolute paths) repeated in order to exactly
    ``iterations`` whole batches: one epoch is then the timed run, and no iteration trains on the half batch that
    ends a pass over, e.g., 5 fields in batches of 2, which must not be timed against the bare loop's full batch."""
    from monai_isl.data import find_datalist, load_datalist

    fields = load_datalist(find_datalist(dataset_dir, task), "training")
    return [fields[i % len(fields)] for i in range(int(batch_size) * iterations)]


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _children_cpu() -> float:
    """CPU seconds (user + system) used so far by the live descendants of this process (DataLoader workers)."""
    total, todo = 0.0, [os.getpid()]
    while todo:
        pid = todo.pop()
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    todo += [int(k) for k in f.read().split()]
            if pid != os.getpid():
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        except OSError:  # a worker that just exited
            continue
    return total


def _crops(batch: Any) -> int:
    """Crops in the batch an iteration trained on (collated dict, or the list MONAI decollates it into)."""
    if isinstance(batch, dict):
        return int(batch["image"].shape[0])
    return len(batch)


def time_bundle(trainer: Any) -> tuple[list[float], list[float], list[int]]:
    """Run the trainer for one epoch of ``steps + 1`` iterations. Per timed iteration (the first one starts the
    workers and is left out): wall seconds (data wait included), CPU seconds of this process plus its DataLoader
    workers (the work the loop costs the machine, whatever else runs on it), and the crops it trained on."""
    from ignite.engine import Events

    marks: list[tuple[float, float, float, int]] = []

    def stamp(engine: Any) -> None:
        marks.append((time.perf_counter(), time.process_time(), _children_cpu(), _crops(engine.state.batch)))

    handle = trainer.add_event_handler(Events.ITERATION_COMPLETED, stamp)
    trainer.run()
    handle.remove()
    wall = [b[0] - a[0] for a, b in zip(marks, marks[1:])]
    cpu = [(b[1] - a[1]) + (b[2] - a[2]) for a, b in zip(marks, marks[1:])]
    return wall, cpu, [b[3] for b in marks[1:]]


def time_bare(
    network: torch.nn.Module, loss_fn: Any, optimizer: Any, x: torch.Tensor, y: torch.Tensor, steps: int
) -> tuple[list[float], list[float]]:
    """The plain loop on pre-built tensors: one warm-up iteration, then ``steps`` timed ones (wall, CPU seconds)."""
    network.train()
    wall, cpu = [], []
    for i in range(steps + 1):
        start, start_cpu = time.perf_counter(), time.process_time()
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(network(x), y)
        loss.backward()
        optimizer.step()
        if i:
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
    return wall, cpu


def gpu_section(parser: Any, x: torch.Tensor, y: torch.Tensor, steps: int) -> float | None:
    """fp32 NCHW vs AMP + channels_last on CUDA, bare loop; samples/s ratio (None without CUDA)."""
    if not torch.cuda.is_available():
        print("\nGPU: no CUDA device here; the AMP + channels_last comparison was not run")
        return None
    dev = torch.device("cuda:0")
    rates = {}
    for name, amp, fmt in (
        ("fp32, NCHW", False, torch.contiguous_format),
        ("AMP, channels_last", True, torch.channels_last),
    ):
        net = parser.get_parsed_content("network_def", lazy=False).to(dev).to(memory_format=fmt).train()
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        loss_fn = parser.get_parsed_content("loss", lazy=False)
        scaler = torch.amp.GradScaler("cuda", enabled=amp)
        xd, yd = x.to(dev).contiguous(memory_format=fmt), y.to(dev)
        times = []
        for i in range(steps + 2):
            torch.cuda.synchronize()
            start = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cuda", enabled=amp):
                loss = loss_fn(net(xd), yd)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            torch.cuda.synchronize()
            if i >= 2:
                times.append(time.perf_counter() - start)
        rates[name] = x.shape[0] / statistics.median(times)
        print(f"GPU {name}: {rates[name]:.1f} samples/s")
    ratio = rates["AMP, channels_last"] / rates["fp32, NCHW"]
    print(f"GPU AMP + channels_last / fp32: {ratio:.2f}x (target >= {TARGET_GPU})")
    return ratio


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--task", default="nucleus_seg", choices=["dapi_isl", "nucleus_seg", "cellmask_isl", "cell_instance_seg"]
    )
    ap.add_argument("--steps", type=int, default=2, help="timed iterations per block (after one warm-up)")
    ap.add_argument("--blocks", type=int, default=2, help="alternating bundle / bare blocks")
    ap.add_argument("--roi", type=int, default=0, help="crop size (0: the config's, 512)")
    ap.add_argument("--num-samples", type=int, default=0, help="crops per field (0: the config's, 5)")
    ap.add_argument("--batch-size", type=int, default=0, help="fields per batch (0: the config's, 2)")
    ap.add_argument("--num-workers", type=int, default=-1, help="DataLoader workers (-1: the config's)")
    ap.add_argument("--channels-last", default="config", choices=["config", "true", "false"])
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    ap.add_argument("--dataset-dir", default=None, help="a dataset for the task (default: synthetic, written once)")
    args = ap.parse_args(argv)
    os.environ.setdefault("MONAI_ISL_DEVICE", "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    scratch = Path(tempfile.mkdtemp(prefix="bench_throughput_"))
    if args.dataset_dir:
        dataset_dir = Path(args.dataset_dir)
    else:
        from monai_isl.synthetic import write_dataset

        dataset_dir = Path(tempfile.gettempdir()) / "monai_isl_bench_throughput"
        if not (dataset_dir / f"{args.task}.json").is_file():
            print("writing a synthetic dataset (8 fields of 640 x 640) ...", flush=True)
            write_dataset(dataset_dir, n_images=8, size=640, seed=0)

    torch.manual_seed(0)
    parser = make_parser(args, dataset_dir, scratch)
    trainer = parser.get_parsed_content("train#trainer")
    network, loss_fn, optimizer = trainer.network, trainer.loss_function, trainer.optimizer
    # pre-loaded tensors of the bundle's batch shape: one real batch from its own dataloader, kept
    batch = next(iter(parser.get_parsed_content("train#dataloader")))
    x, y = batch["image"].as_tensor() if hasattr(batch["image"], "as_tensor") else batch["image"], batch["label"]
    x, y = torch.as_tensor(x).contiguous(), torch.as_tensor(y).contiguous()
    samples = x.shape[0]
    fmt = "channels_last" if next(network.parameters()).is_contiguous(memory_format=torch.channels_last) else "NCHW"
    print(
        f"{args.task}: {samples} crops of {tuple(x.shape[1:])} per iteration, network in {fmt}, "
        f"{torch.get_num_threads()} torch threads, {parser.get_parsed_content('num_workers')} DataLoader workers",
        flush=True,
    )
    wall: dict[str, list[float]] = {"bare": [], "bundle": []}
    cpu: dict[str, list[float]] = {"bare": [], "bundle": []}
    for block in range(args.blocks):
        for name in ("bare", "bundle"):
            if name == "bare":
                w, c = time_bare(network, loss_fn, optimizer, x, y, args.steps)
            else:
                w, c, crops = time_bundle(trainer)
                if set(crops) != {samples}:  # the ratio is per iteration: both loops must train on equal batches
                    raise RuntimeError(f"bundle iterations trained on {crops} crops, the bare loop on {samples}")
            wall[name] += w
            cpu[name] += c
            timings = ", ".join(f"{a:.2f} s (CPU {b:.2f} s)" for a, b in zip(w, c))
            print(f"block {block + 1} {name}: {timings} per iteration of {samples} crops", flush=True)

    rate = {k: samples / statistics.median(v) for k, v in wall.items()}
    cpu_rate = {k: samples / statistics.median(v) for k, v in cpu.items()}
    ratio = rate["bundle"] / rate["bare"]
    print(f"\n| loop | samples/s (median of {len(wall['bare'])} iterations) | s / iteration | samples per CPU second |")
    print("|---|---|---|---|")
    names = {"bare": "bare PyTorch, pre-loaded tensors", "bundle": "bundle SupervisedTrainer + DataLoader"}
    for k, label in names.items():
        print(f"| {label} | {rate[k]:.3f} | {statistics.median(wall[k]):.2f} | {cpu_rate[k]:.3f} |")
    print(
        f"\nbundle / bare: {ratio:.3f} (target >= {TARGET_RATIO}); by CPU time (main process + DataLoader workers): "
        f"{cpu_rate['bundle'] / cpu_rate['bare']:.3f}"
    )
    # the data path's own cost, in the main process (num_workers 0): an upper bound of what the workers add
    loader = parser.get_parsed_content("train#dataloader")
    loader = torch.utils.data.DataLoader(loader.dataset, batch_size=loader.batch_size, collate_fn=loader.collate_fn)
    start, n = time.process_time(), 0
    for n, _ in enumerate(loader, start=1):
        if n == 2 * args.steps:
            break
    data_cpu = (time.process_time() - start) / max(n, 1)
    step_cpu = statistics.median(cpu["bare"])
    print(
        f"data loading + augmentation: {data_cpu:.3f} CPU s per batch = {100 * data_cpu / step_cpu:.1f} % of the "
        f"training step's {step_cpu:.2f} CPU s"
    )
    missed = ratio < TARGET_RATIO
    gpu = gpu_section(parser, x, y, args.steps)
    missed |= gpu is not None and gpu < TARGET_GPU
    if missed:
        print("TARGET MISSED")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
