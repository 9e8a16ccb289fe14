"""Does the cell network's distance output reach the target's 0..255 scale, and what does ``h: auto`` give?

Short CPU runs on Usiigaci (Tsai et al. 2019): one training field (random 256x256 crops, flips), ``h`` fitted
on a validation field (:func:`monai_isl.instance_fit.fit_watershed_params`), scored on a held-out field.
Variants (paper loss MSE(distance) + 2000 * BCE(mask) throughout):

- ``isl_head_lr1e-3``      the paper's 1 -> 2 -> 2 BatchNorm head, gain 1, Adam lr 1e-3 (today's defaults)
- ``isl_head_groups``      same, head lr 1e-2 / network lr 1e-4 (:func:`monai_isl.networks.transfer.param_groups`)
- ``isl_gain_groups``      + distance gain 255 (:class:`monai_isl.networks.transfer.CellOutput`)
- ``isl_gain_lr1e-3``      gain 255, one lr 1e-3
- ``isl_gain_groups_w8``   gain 255, groups, hidden width 8 instead of 2 (a deviation from the paper's head)
- ``none_lr1e-3``          random-init FlexibleUNet with 2 outputs, gain 1, lr 1e-3 (the old baseline)
- ``none_gain_lr1e-3``     the same with gain 255

No cellmask_isl checkpoint exists here: the ISL variants use a *random-weight* FlexibleUNet with the ISL head
structure, so they answer whether the head and its parametrisation reach the distance scale, not how good ISL
transfer is. One seed each.

Measured (2 shared cores, 1 thread, 100 steps, seed 0; target mean inside cells 89.6; true target on set22: best
h 70.7, mAP 0.915, h=10 0.488; d_train: last training crop, train-mode BN; d_in/IoU/mAP: set25, eval mode)::

    variant             d_train  d_in  mask%   IoU  mAP h=10  mAP auto  (h)
    isl_head_lr1e-3         3.7   1.7   56.8  0.253   0.028    0.037    1.09
    isl_head_groups        62.8  46.0   17.7  0.686   0.024    0.037    45.2
    isl_gain_groups        93.9  52.0   10.3  0.419   0.000    0.012    87.9
    isl_gain_lr1e-3        99.0  61.9   98.9  0.172   0.002    0.004    20
    isl_gain_groups_w8    119.8 168.9   21.1  0.648   0.000    0.028    122
    none_lr1e-3            25.7  16.5   75.2  0.234   0.010    0.009    5.9
    none_gain_lr1e-3       87.4 143.1   18.8  0.635   0.019    0.105    90

Hence the baselines' gain of 255 (``DEFAULT_DISTANCE_GAIN``), param groups (head 1e-2, network 1e-4) for the ISL
head, and no distance smoothing (sigma never won on the validation field). With random-weight "ISL" networks this
bench does not separate the heads: the ISL head's width 8 and gain 255 (``DEFAULT_HEAD_CHANNELS``) were chosen on
the synthetic sweeps with real pretext models (``docs/results/synthetic_cell_disjoint``). Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_cell_head.py [--steps 100] [--variants a,b] [--data DIR]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from monai_isl.instance_fit import fit_watershed_params
from monai_isl.losses import CombinedLoss
from monai_isl.metrics.instance import mean_average_precision
from monai_isl.networks.transfer import cell_network, param_groups
from monai_isl.postprocessing import fitted_instances, hmaxima_watershed
from monai_isl.transforms.instance import instance_distance

VARIANTS = {
    # name: (init, gain, lr, head_lr, head width)
    "isl_head_lr1e-3": ("isl", 1.0, 1e-3, None, 2),
    "isl_head_groups": ("isl", 1.0, 1e-4, 1e-2, 2),
    "isl_gain_groups": ("isl", 255.0, 1e-4, 1e-2, 2),
    "isl_gain_lr1e-3": ("isl", 255.0, 1e-3, None, 2),
    "isl_gain_groups_w8": ("isl", 255.0, 1e-4, 1e-2, 8),
    "none_lr1e-3": ("none", 1.0, 1e-3, None, 2),
    "none_gain_lr1e-3": ("none", 255.0, 1e-3, None, 2),
}


def load_field(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Phase contrast scaled to its 1..99.8 percentiles (as the bundle does) and the instance labels."""
    import imageio.v3 as iio
    import tifffile

    image = tifffile.imread(folder / "phase.tif").astype(np.float32)
    low, high = np.percentile(image, [1.0, 99.8])
    labels = np.asarray(iio.imread(folder / "cells.png")).astype(np.int32)
    return ((image - low) / (high - low)).astype(np.float32), labels


def predict(network: torch.nn.Module, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Whole-field distance and mask probability, eval mode (the network pads to a multiple of 32 itself)."""
    network.eval()
    with torch.no_grad():
        out = network(torch.from_numpy(image)[None, None])[0]
    network.train()
    return out[0].numpy(), torch.sigmoid(out[1]).numpy()


def run_variant(name: str, fields: dict, steps: int, roi: int, seed: int) -> dict:
    init, gain, lr, head_lr, width = VARIANTS[name]
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = cell_network(1, init, load_pretrained=False, distance_gain=gain, head_channels=width)
    groups = param_groups(net, lr, head_lr) if head_lr is not None else [{"params": net.parameters(), "lr": lr}]
    opt = torch.optim.Adam(groups)
    loss_fn = CombinedLoss(2000.0)
    image, labels = fields["train"]
    target = np.stack([instance_distance(labels), (labels > 0).astype(np.float32)])
    t0 = time.perf_counter()
    net.train()
    for _ in range(steps):
        y, x = rng.integers(0, image.shape[0] - roi), rng.integers(0, image.shape[1] - roi)
        img = image[y : y + roi, x : x + roi]
        tgt = target[:, y : y + roi, x : x + roi]
        if rng.random() < 0.5:
            img, tgt = img[::-1], tgt[:, ::-1]
        if rng.random() < 0.5:
            img, tgt = img[:, ::-1], tgt[:, :, ::-1]
        inp = torch.from_numpy(np.ascontiguousarray(img))[None, None]
        out = net(inp)
        loss = loss_fn(out, torch.from_numpy(np.ascontiguousarray(tgt))[None])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if not torch.isfinite(loss):
            break
    seconds = time.perf_counter() - t0
    # training-mode distance inside cells on the last crop (BatchNorm batch statistics, as in training)
    train_inside = float(out[0, 0].detach()[torch.from_numpy(np.ascontiguousarray(tgt[1])) > 0].mean())
    v_dist, v_prob = predict(net, fields["val"][0])
    fit = fit_watershed_params([v_dist], [v_prob], [fields["val"][1]])
    t_img, t_lab = fields["test"]
    dist, prob = predict(net, t_img)
    inside = t_lab > 0
    pred_mask = prob > 0.5
    iou = float((pred_mask & inside).sum() / max((pred_mask | inside).sum(), 1))
    map10 = mean_average_precision(t_lab, hmaxima_watershed(dist, prob, h=10.0))
    fitted = fitted_instances(dist, prob, fit["h"], fit["sigma"], fit["min_area"], fit["min_area_fraction"] or 0.0)
    map_auto = mean_average_precision(t_lab, fitted)
    best_sigma0 = max(r[-1] for r in fit["table"] if r[0] == 0.0)
    return {
        "name": name,
        "loss": loss.item(),
        "seconds": seconds,
        "train_inside": train_inside,
        "dist_inside": float(dist[inside].mean()),
        "target_inside": float(instance_distance(t_lab)[inside].mean()),
        "mask_frac": float(pred_mask.mean()),
        "iou": iou,
        "map10": map10,
        "map_auto": map_auto,
        "h": fit["h"],
        "sigma": fit["sigma"],
        "val_map_sigma0": best_sigma0,
        "val_map": fit["map"],
        "scale": fit["scale"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="/work/shared/data/usiigaci")
    parser.add_argument("--train", default="set01")
    parser.add_argument("--val", default="set22")
    parser.add_argument("--test", default="set25")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--roi", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", default=",".join(v for v in VARIANTS if not v.endswith("_w8")))
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = Path(args.data)
    fields = {k: load_field(data / getattr(args, k)) for k in ("train", "val", "test")}
    truth = [instance_distance(fields["val"][1])]
    ref = fit_watershed_params(truth, [(fields["val"][1] > 0).astype(np.float32)], [fields["val"][1]], sigmas=(0.0,))
    print(
        f"Usiigaci train {args.train} ({args.steps} steps, {args.roi}^2 crops, batch 1), h fitted on {args.val}, "
        f"scored on {args.test}. ISL variants: random-weight FlexibleUNet + ISL head (no cellmask_isl checkpoint "
        f"here): they test whether head + parametrisation reach the distance scale, not ISL transfer."
    )
    print(f"true target on {args.val}: best h {ref['h']:.3g} mAP {ref['map']:.3f} (h=10: {ref['map_h10']:.3f})")
    header = (
        f"{'variant':18s} {'s':>5s} {'loss':>8s} {'d_train':>7s} {'d_in':>6s} {'tgt_in':>6s} {'mask%':>6s} "
        f"{'IoU':>5s} {'mAP10':>6s} {'mAPauto':>7s} {'h':>6s} {'sig':>4s} {'v_s0':>5s} {'v_best':>6s}"
    )
    print(header, flush=True)
    for name in args.variants.split(","):
        r = run_variant(name, fields, args.steps, args.roi, args.seed)
        print(
            f"{r['name']:18s} {r['seconds']:5.0f} {r['loss']:8.0f} {r['train_inside']:7.1f} {r['dist_inside']:6.1f} "
            f"{r['target_inside']:6.1f} {100 * r['mask_frac']:6.1f} {r['iou']:5.3f} {r['map10']:6.3f} "
            f"{r['map_auto']:7.3f} {r['h']:6.3g} {r['sigma']:4.1f} {r['val_map_sigma0']:5.3f} {r['val_map']:6.3f}",
            flush=True,
        )
    print(
        "d_train: distance inside cells on the last training crop (train-mode BN); d_in / tgt_in: predicted / "
        "target distance mean inside cells on the test field (eval mode); mAPauto: h (and sigma) fitted on the "
        "validation field; v_s0 / v_best: validation mAP of the best h without / with the sigma search."
    )


if __name__ == "__main__":
    main()
