"""Learning curves of nucleus segmentation from one annotated tile: ISL start vs random start, per learning rate.

Measures what the nucleus_seg defaults (learning rate, transfer activation) are chosen by: for each *variant* (init,
transfer activation fixed or calibrated, learning rate) and seed, fine-tune on N annotated tiles cut at random
(seeded) from the training field(s) of a ``nucleus_seg`` datalist, and score the IoU of the whole test field(s) at a
list of training steps, step 0 (the untrained start) included. The pieces are the bundle's own: ``nucleus_network``,
``SoftJaccardLoss``, ``calibrate_transfer``, the percentile scaling of ``PercentileStatsd``/``ApplyPercentilesd``,
random crops with flips/rotations. One row per (variant, seed, step) is appended to ``--out`` (CSV) as it comes, so
a killed run resumes where it stopped (finished variant/seed pairs are skipped).

    python benchmarks/bench_nucleus_transfer.py --datalist outputs/isl_condition_b/nucleus_seg.json \
        --isl_checkpoint outputs/exp/pretext_dapi/models/model.pt --out docs/results/real_nucleus_curves/curves.csv

CPU-sized by default (160 px crops, 5 per step, 150 steps = 750 training samples); prints a table at the end.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monai_isl.calibration import calibrate_transfer  # noqa: E402
from monai_isl.data import load_datalist  # noqa: E402
from monai_isl.io import read_image  # noqa: E402
from monai_isl.losses import SoftJaccardLoss  # noqa: E402
from monai_isl.networks import load_isl_weights, nucleus_network  # noqa: E402
from monai_isl.transforms.field import channel_percentiles, scale_by_percentiles  # noqa: E402

#: name -> (init, calibrate, learning rate[, BatchNorm frozen (running statistics while training)[, fit the slope
#: (else 1)[, linear learning-rate warm-up steps]]])
VARIANTS: dict[str, tuple] = {
    "isl_fixed_lr1e-3": ("isl", False, 1e-3),  # the bundle's former defaults (paper activation, lr 1e-3)
    "isl_cal_lr1e-2": ("isl", True, 1e-2),  # the paper's learning rate
    "isl_cal_lr1e-3": ("isl", True, 1e-3),
    "isl_cal_lr1e-4": ("isl", True, 1e-4),
    "none_lr1e-2": ("none", False, 1e-2),
    "none_lr1e-3": ("none", False, 1e-3),
    "none_lr1e-4": ("none", False, 1e-4),
    "isl_cal_frozenbn_lr1e-2": ("isl", True, 1e-2, True),
    "isl_cal_frozenbn_lr1e-3": ("isl", True, 1e-3, True),
    "isl_cal_frozenbn_lr1e-4": ("isl", True, 1e-4, True),
    "none_frozenbn_lr1e-3": ("none", False, 1e-3, True),
    "isl_cal_lr1e-5": ("isl", True, 1e-5),
    "isl_calshift_lr1e-4": ("isl", True, 1e-4, False, False),
    "isl_cal_warmup50_lr1e-4": ("isl", True, 1e-4, False, True, 50),
    "isl_calshift_warmup50_lr1e-3": ("isl", True, 1e-3, False, False, 50),
}
FIELDS = [
    "variant",
    "init",
    "calibrate",
    "lr",
    "frozen_bn",
    "seed",
    "step",
    "samples",
    "test_iou",
    "train_loss",
    "seconds",
]


def _eval_only(self: nn.Module, mode: bool = True) -> nn.Module:
    return nn.Module.train(self, False)


def freeze_batchnorm(network: nn.Module, enabled: bool = True) -> int:
    """Keep every BatchNorm layer of ``network`` in eval mode (running statistics) while the rest trains.

    Fine-tuning from one annotated image gives batches of crops of that one image: their statistics are not those
    the pretrained network normalised with, so in training mode the calibrated prior is not what the optimiser sees
    (and what it learns does not hold in eval mode). Frozen, the network computes during training what it computes
    at inference; the affine weights still train. Measured as one of the variants here (it did not help, so the
    bundles do not use it). Returns the number of layers frozen.
    """
    if not enabled:
        return 0
    layers = [m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in layers:
        m.train = _eval_only.__get__(m)  # Module.train(mode) of the parents calls this: stays in eval mode
        m.eval()
    return len(layers)


def _field(item: dict) -> tuple[np.ndarray, np.ndarray]:
    """(C, H, W) raw image and (H, W) bool nucleus mask of one datalist item (one file per channel)."""
    image = np.stack([np.asarray(read_image(f), np.float32).squeeze() for f in item["image"]])
    label = np.asarray(read_image(item["label"] if isinstance(item["label"], str) else item["label"][0])).squeeze()
    return image, label > 0


def _scale(image: np.ndarray, percentiles: tuple[float, float]) -> np.ndarray:
    stats = channel_percentiles(image.reshape(image.shape[0], -1), list(percentiles))
    return scale_by_percentiles(image, stats).astype(np.float32)


def _tiles(fields: list[tuple[np.ndarray, np.ndarray]], n: int, size: int, rng: np.random.Generator) -> list:
    """``n`` annotated tiles of ``size``^2 at random positions (each with nuclei), as a user would annotate them."""
    tiles = []
    while len(tiles) < n:
        image, mask = fields[int(rng.integers(len(fields)))]
        y, x = (int(rng.integers(0, s - size + 1)) for s in mask.shape)
        if mask[y : y + size, x : x + size].mean() > 0.02:
            tiles.append((image[:, y : y + size, x : x + size], mask[y : y + size, x : x + size]))
    return tiles


def _batch(tiles: list, crop: int, count: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for _ in range(count):
        image, mask = tiles[int(rng.integers(len(tiles)))]
        y, x = (int(rng.integers(0, s - crop + 1)) for s in mask.shape)
        im, m = image[:, y : y + crop, x : x + crop], mask[None, y : y + crop, x : x + crop]
        k = int(rng.integers(4))
        im, m = np.rot90(im, k, (1, 2)), np.rot90(m, k, (1, 2))
        if rng.random() < 0.5:
            im, m = im[:, ::-1], m[:, ::-1]
        xs.append(np.ascontiguousarray(im))
        ys.append(np.ascontiguousarray(m))
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys).astype(np.float32))


def _test_iou(network: torch.nn.Module, tests: list) -> float:
    """Mean IoU over the whole test fields, probability > 0.5, network in eval mode (as evaluate.yaml)."""
    network.eval()
    scores = []
    with torch.no_grad():
        for image, mask in tests:
            pred = network(torch.from_numpy(image)[None])[0, 0].numpy() > 0.5
            union = np.logical_or(pred, mask).sum()
            scores.append(1.0 if union == 0 else np.logical_and(pred, mask).sum() / union)
    network.train()
    return float(np.mean(scores))


def run_one(variant: str, seed: int, args: argparse.Namespace, train_fields: list, tests: list) -> list[dict]:
    given = VARIANTS[variant]
    init, calibrate, lr, frozen_bn, fit_slope, warmup = (*given, *(False, True, 0)[len(given) - 3 :])
    torch.manual_seed(seed)
    tiles = _tiles(train_fields, args.n, args.tile, np.random.default_rng(seed))  # same tiles for every variant
    rng = np.random.default_rng(1000 + seed)
    network = nucleus_network(in_channels=tests[0][0].shape[0], init=init, load_pretrained=False)
    if init == "isl":
        load_isl_weights(network[0], args.isl_checkpoint, bundle="dapi_isl")
        items = [{"image": torch.from_numpy(im), "label": torch.from_numpy(m[None])} for im, m in tiles]
        calibrate_transfer(network, items, lambda x, net: net(x), enabled=calibrate, fit_slope=fit_slope)
    if frozen_bn:
        freeze_batchnorm(network)
    opt = torch.optim.Adam(network.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / warmup) if warmup else 1.0)
    loss_fn = SoftJaccardLoss()
    rows, loss, start = [], float("nan"), time.time()
    eval_at = sorted({int(s) for s in args.eval_at.split(",")} | {0, args.steps})
    for step in range(args.steps + 1):
        if step in eval_at:
            rows.append(
                {
                    "variant": variant, "init": init, "calibrate": calibrate, "lr": lr, "frozen_bn": frozen_bn,
                    "seed": seed, "step": step,
                    "samples": step * args.batch, "test_iou": round(_test_iou(network, tests), 4),
                    "train_loss": round(loss, 4), "seconds": round(time.time() - start, 1),
                }
            )  # fmt: skip
            print(rows[-1], flush=True)
        if step == args.steps:
            break
        x, y = _batch(tiles, args.crop, args.batch, rng)
        opt.zero_grad(set_to_none=True)
        out = loss_fn(network(x), y)
        out.backward()
        opt.step()
        sched.step()
        loss = float(out)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--datalist", required=True, help="nucleus_seg datalist: 'training' fields to cut tiles from, 'test'"
    )
    p.add_argument(
        "--isl_checkpoint", required=True, help="dapi_isl models/model.pt trained on the same kind of images"
    )
    p.add_argument("--out", required=True, help="CSV to append rows to (resumes: finished variant/seed are skipped)")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of {list(VARIANTS)}")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--n", type=int, default=1, help="annotated tiles (N)")
    p.add_argument("--tile", type=int, default=256, help="annotated tile size")
    p.add_argument("--crop", type=int, default=160, help="training crop size")
    p.add_argument("--batch", type=int, default=5, help="crops per step (the paper: 5 crops per image)")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--eval_at", default="0,10,25,50,100,150")
    p.add_argument("--percentiles", default="1.0,99.8", help="input percentiles (as the bundles)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    pct = tuple(float(v) for v in args.percentiles.split(","))
    train_items = load_datalist(args.datalist, "training")
    test_items = load_datalist(args.datalist, "test")
    # each annotated tile is scaled by its own percentiles, as the bundle scales an image it is given
    train_fields = [(_RawField(im, pct), m) for im, m in (_field(it) for it in train_items)]
    tests = [(_scale(im, pct), m) for im, m in (_field(it) for it in test_items)]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if out.is_file():
        with open(out, newline="") as f:
            done = {(r["variant"], int(r["seed"])) for r in csv.DictReader(f) if int(r["step"]) == args.steps}
    for seed in (int(s) for s in args.seeds.split(",")):
        for variant in args.variants.split(","):
            if (variant, seed) in done:
                continue
            rows = run_one(variant, seed, args, train_fields, tests)
            new = not out.is_file()
            with open(out, "a", newline="") as f:
                w = csv.DictWriter(f, fieldnames=FIELDS)
                if new:
                    w.writeheader()
                w.writerows(rows)
    _print_table(out)
    return 0


class _RawField:
    """A raw field whose slices come back scaled by the slice's own percentiles (the tile is the user's image)."""

    def __init__(self, image: np.ndarray, pct: tuple[float, float]) -> None:
        self.image, self.pct, self.shape = image, pct, image.shape

    def __getitem__(self, index: tuple) -> np.ndarray:
        return _scale(self.image[index], self.pct)


def _print_table(path: Path) -> None:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    steps = sorted({int(r["step"]) for r in rows})
    print("\nmean test IoU (+- std over seeds) by training step")
    print("variant".ljust(20) + "".join(f"{s:>14d}" for s in steps))
    for variant in dict.fromkeys(r["variant"] for r in rows):
        cells = []
        for s in steps:
            v = [float(r["test_iou"]) for r in rows if r["variant"] == variant and int(r["step"]) == s]
            cells.append(f"{np.mean(v):.3f}+-{np.std(v):.3f}".rjust(14) if v else " " * 14)
        print(variant.ljust(20) + "".join(cells))


if __name__ == "__main__":
    raise SystemExit(main())
