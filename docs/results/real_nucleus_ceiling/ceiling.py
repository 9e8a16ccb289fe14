"""How far the calibrated ISL start can go on the real nucleus test half: threshold ceilings of a dapi_isl model.

For the annotated tiles, the validation strip and the test half of a ``nucleus_seg`` datalist (``isl_nuclei_256``,
``docs/results/real_nucleus_cpu/make_tiles.py``), predict the stain with the dapi_isl model, fit the transfer
threshold (``monai_isl.calibration.best_threshold``, what ``calibrate: true`` uses for the shift) on each of them,
and score the test half at each threshold. The test half's own best threshold ("oracle") is the ceiling of any
calibration of this model; the registered DAPI itself, through the same procedure, is the ceiling of a perfect
ISL model (the labels are derived from DAPI). Also with 8-fold test-time augmentation (flips x 90-degree
rotations, averaged). The numbers say whether the missing IoU is in the calibration, in fine-tuning, or in the
pretext model.

    python docs/results/real_nucleus_ceiling/ceiling.py --datalist outputs/isl_nuclei_256/nucleus_seg.json \
        --isl_checkpoint outputs/exp/pretext_dapi/models/model.pt [--inferer window --tta false]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from monai.inferers import SlidingWindowInferer

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_nucleus_transfer import _field, _scale  # noqa: E402

from monai_isl.calibration import best_threshold  # noqa: E402
from monai_isl.data import load_datalist  # noqa: E402
from monai_isl.io import read_image  # noqa: E402
from monai_isl.metrics import iou_score  # noqa: E402
from monai_isl.networks import load_isl_weights, nucleus_network  # noqa: E402
from monai_isl.runtime import WindowParallelInferer  # noqa: E402


def predict(unet: torch.nn.Module, image: np.ndarray, tta: bool, inferer: str = "one_pass") -> np.ndarray:
    """The predicted stain of one scaled (C, H, W) field, optionally averaged over the 8 flips/rotations.

    ``inferer``: ``one_pass`` (the whole field at once), ``window`` (the bundles' 512x512 sliding window,
    ``monai_isl.runtime.WindowParallelInferer``) or ``monai_window`` (MONAI's, which zero-pads a smaller field).
    """
    x = torch.from_numpy(image)[None]
    windows = {"window": WindowParallelInferer, "monai_window": SlidingWindowInferer}
    if inferer in windows:
        run = windows[inferer](roi_size=(512, 512), sw_batch_size=4, overlap=0.1875, mode="gaussian")
    outs = []
    with torch.no_grad():
        for k in range(4) if tta else [0]:
            for flip in (False, True) if tta else (False,):
                xx = torch.rot90(x, k, (2, 3))
                xx = xx.flip(3) if flip else xx
                o = run(xx, unet) if inferer in windows else unet(xx)
                o = o.flip(3) if flip else o
                outs.append(torch.rot90(o, -k, (2, 3)))
    return torch.stack(outs).mean(0)[0, 0].numpy()


def iou(pred: np.ndarray, mask: np.ndarray, t: float) -> float:
    """IoU of ``pred > t`` with the (bool) nucleus mask."""
    return iou_score(pred > t, mask)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datalist", required=True)
    p.add_argument("--isl_checkpoint", required=True)
    p.add_argument("--dapi_dir", default="outputs/isl_condition_b", help="prepare isl_example folder (dapi.tif)")
    p.add_argument("--percentiles", default="1.0,99.8")
    p.add_argument("--inferer", default="one_pass", choices=["one_pass", "window", "monai_window"])
    p.add_argument("--tta", default="true", help="also the 8-fold test-time augmentation rows")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    pct = tuple(float(v) for v in args.percentiles.split(","))
    fields = {f"tile{i}": _field(it) for i, it in enumerate(load_datalist(args.datalist, "training"))}
    fields["validation"] = _field(load_datalist(args.datalist, "validation")[0])
    fields["test"] = _field(load_datalist(args.datalist, "test")[0])
    masks = {k: m for k, (_, m) in fields.items()}
    net = nucleus_network(in_channels=next(iter(fields.values()))[0].shape[0], init="isl", load_pretrained=False)
    load_isl_weights(net[0], args.isl_checkpoint, bundle="dapi_isl")
    unet = net[0].eval()
    sources = {}
    for tta in (False, True) if args.tta.lower() == "true" else (False,):
        name = "ISL + TTA (8 dihedral)" if tta else "ISL"
        sources[name] = {k: predict(unet, _scale(im, pct), tta, args.inferer) for k, (im, _) in fields.items()}
    # the registered DAPI of the same pixels (the labels' source): a perfect ISL model. Tiles sit in the training
    # image; find each by matching its phase pixels.
    dapi_dir = Path(args.dapi_dir)
    dapi = {}
    for split in ("training", "validation", "test"):
        d = np.asarray(read_image(dapi_dir / split / "dapi.tif"), np.float32).squeeze()
        ph = np.asarray(read_image(dapi_dir / split / "phase_z00.tif"), np.float32).squeeze()
        dapi[split] = (_scale(d[None], (1.0, 99.9))[0], ph)
    perfect = {"validation": dapi["validation"][0], "test": dapi["test"][0]}
    d_tr, ph_tr = dapi["training"]
    for k, (im, _) in fields.items():
        if not k.startswith("tile"):
            continue
        hits = np.argwhere(ph_tr == im[0, 0, 0])
        for y, x in hits:
            h, w = im.shape[1:]
            if np.array_equal(ph_tr[y : y + h, x : x + w], im[0]):
                perfect[k] = d_tr[y : y + h, x : x + w]
                break
    if len(perfect) == len(fields):
        sources = {"registered DAPI (perfect ISL)": perfect, **sources}
    tiles = [k for k in fields if k.startswith("tile")]
    fits = " | ".join(f"fit on {k}" for k in tiles)
    print(f"| prediction | p99 on test | {fits} | fit on all tiles | fit on validation | test's own best (ceiling) |")
    print("|---" * (len(tiles) + 5) + "|")
    for name, pred in sources.items():
        cells = []
        for k in tiles:
            t, _ = best_threshold(pred[k], masks[k])
            cells.append(f"{iou(pred['test'], masks['test'], t):.3f} (t {t:.3f})")
        all_pred = np.concatenate([pred[k].ravel() for k in tiles])
        t_all, _ = best_threshold(all_pred, np.concatenate([masks[k].ravel() for k in tiles]))
        t_val, _ = best_threshold(pred["validation"], masks["validation"])
        t_te, best = best_threshold(pred["test"], masks["test"])
        test, truth = pred["test"], masks["test"]
        row = [f"{np.percentile(test, 99):.3f}", *cells, f"{iou(test, truth, t_all):.3f}"]
        row += [f"{iou(test, truth, t_val):.3f} (t {t_val:.3f})", f"**{best:.3f}** (t {t_te:.3f})"]
        print(f"| {name} | " + " | ".join(row) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
