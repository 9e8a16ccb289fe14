"""Benchmark: one training step of our FlexibleUNet-densenet121 against the paper's ``smp.Unet("densenet121")``.

The paper's code used ``segmentation_models_pytorch`` (smp). smp needs torchvision, which does not import beside
this project's CPU torch, so run this script in a separate environment (see ``benchmarks/README.md``)::

    python -m venv /tmp/smp-venv
    /tmp/smp-venv/bin/pip install torch==2.14.1 torchvision==0.29.1 segmentation-models-pytorch==0.6.0 monai==1.6.1
    PYTHONPATH=. /tmp/smp-venv/bin/python benchmarks/bench_smp.py

Both networks run in that same environment, on the same input, with the same loss (MSE) and optimiser (Adam),
alternately (``--repeat`` steps each after one warm-up step), and the script prints the median step time of each,
the ratio ours / smp (target <= 1: ours costs no more than the paper's model) and the parameter counts. Default:
the nucleus_seg setting, 3 input channels and 1 output, one training batch of the bundle (2 fields x 5 crops of
512 x 512); ``--batch`` / ``--roi`` make it shorter.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _step(net: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """One training step; (wall seconds, CPU seconds of this process: robust when other work shares the cores)."""
    start, cpu = time.perf_counter(), time.process_time()
    opt.zero_grad(set_to_none=True)
    loss = torch.nn.functional.mse_loss(net(x), y)
    loss.backward()
    opt.step()
    return time.perf_counter() - start, time.process_time() - cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=10, help="crops per step (bundle: batch_size 2 x num_samples 5)")
    parser.add_argument("--roi", type=int, default=512, help="crop size")
    parser.add_argument("--in-channels", type=int, default=3)
    parser.add_argument("--out-channels", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3, help="timed steps per network (after one warm-up)")
    parser.add_argument("--channels-last", action="store_true", help="both networks and the input in channels_last")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    args = parser.parse_args(argv)

    try:
        import segmentation_models_pytorch as smp
    except ImportError as err:  # the usual case in the project's own environment
        print(f"segmentation_models_pytorch is not importable ({err}); see the README for the separate venv")
        return 2
    from monai_isl.networks import PaddedFlexibleUNet

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    nets = {
        "smp Unet('densenet121')": smp.Unet(
            "densenet121", encoder_weights=None, in_channels=args.in_channels, classes=args.out_channels
        ),
        "monai_isl FlexibleUNet-densenet121": PaddedFlexibleUNet(
            in_channels=args.in_channels, out_channels=args.out_channels, backbone="densenet121", spatial_dims=2
        ),
    }
    params = {name: sum(p.numel() for p in net.parameters()) for name, net in nets.items()}
    opts = {}
    for name, net in nets.items():
        net.train().to(memory_format=fmt)
        opts[name] = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.rand(args.batch, args.in_channels, args.roi, args.roi).contiguous(memory_format=fmt)
    y = torch.rand(args.batch, args.out_channels, args.roi, args.roi)
    print(
        f"torch {torch.__version__}, smp {smp.__version__}, {torch.get_num_threads()} threads, batch {args.batch} x "
        f"{args.in_channels} x {args.roi} x {args.roi}, {'channels_last' if args.channels_last else 'NCHW'}"
    )
    times: dict[str, list[float]] = {name: [] for name in nets}
    cpu: dict[str, list[float]] = {name: [] for name in nets}
    for rep in range(args.repeat + 1):
        for name, net in nets.items():
            t, c = _step(net, opts[name], x, y)
            if rep > 0:  # the first step allocates and warms up
                times[name].append(t)
                cpu[name].append(c)
            print(f"  step {rep} {name}: {t:.2f} s, CPU {c:.2f} s{' (warm-up)' if rep == 0 else ''}", flush=True)

    ours, theirs = "monai_isl FlexibleUNet-densenet121", "smp Unet('densenet121')"
    med = {name: statistics.median(v) for name, v in times.items()}
    med_cpu = {name: statistics.median(v) for name, v in cpu.items()}
    print(f"\n| network | parameters | training step (median of {args.repeat}) | per crop | CPU time per step |")
    print("|---|---|---|---|---|")
    for name in nets:
        row = f"{med[name]:.2f} s | {med[name] / args.batch:.3f} s | {med_cpu[name]:.2f} s"
        print(f"| {name} | {params[name] / 1e6:.2f} M | {row} |")
    ratio = med[ours] / med[theirs]
    print(f"\nours / smp step time: {ratio:.3f} (target <= 1.0); CPU time: {med_cpu[ours] / med_cpu[theirs]:.3f}")
    if ratio > 1.0:
        print("TARGET MISSED: our network costs more per training step than smp's Unet('densenet121')")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
