"""Benchmark: instance mAP (10 IoU thresholds) on a 2160 x 2160 pair with ~1000 objects.

Times :func:`monai_isl.metrics.match_instances` against Cellpose's ``average_precision`` (the baseline) and
StarDist's ``matching`` on the same pair in the same run (median of ``--repeat`` runs after one warm-up run
each), prints the speed-up, and asserts identical TP/FP/FN at every threshold.

Run: ``python benchmarks/bench_map.py [--size 2160] [--repeat 5]`` (needs cellpose; stardist optional).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_postprocessing import network_like  # noqa: E402

from monai_isl.metrics import DEFAULT_THRESHOLDS, match_instances  # noqa: E402
from monai_isl.postprocessing import hmaxima_watershed  # noqa: E402
from monai_isl.synthetic import touching_cells  # noqa: E402


def _median_time(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Median wall time of ``repeat`` calls after one warm-up call, and the last result."""
    out = fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def main() -> None:
    """Build the pair, time the three implementations, and check that their counts agree."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2160)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    from cellpose.metrics import average_precision

    truth = touching_cells(args.size).astype(np.int32)
    # a realistic prediction: the post-processed output of noisy network-like maps, plus a shift
    distance, prob = network_like(truth, noise=10.0)
    pred = np.roll(hmaxima_watershed(distance, prob, h=10.0), (1, 2), (0, 1)).astype(np.int32)
    thresholds = list(DEFAULT_THRESHOLDS)
    n_true, n_pred = len(np.unique(truth)) - 1, len(np.unique(pred)) - 1
    print(f"pair {args.size}x{args.size}: {n_true} true, {n_pred} predicted objects")

    t_ours, ours = _median_time(lambda: match_instances(truth, pred, thresholds), args.repeat)
    t_cp, cp = _median_time(lambda: average_precision(truth, pred, threshold=thresholds), args.repeat)
    ap_cp, tp_cp, fp_cp, fn_cp = cp
    np.testing.assert_array_equal(ours.tp, tp_cp)
    np.testing.assert_array_equal(ours.fp, fp_cp)
    np.testing.assert_array_equal(ours.fn, fn_cp)
    print(f"match_instances (ours):          {t_ours:6.3f} s   mAP {ours.mean_ap:.4f}")
    print(f"cellpose average_precision:      {t_cp:6.3f} s   mAP {float(np.mean(ap_cp)):.4f}   counts identical")
    try:
        from stardist.matching import matching
    except ImportError:
        print("stardist not installed: skipped")
    else:
        t_sd, sd = _median_time(lambda: matching(truth, pred, thresh=thresholds), args.repeat)
        np.testing.assert_array_equal(ours.tp, [s.tp for s in sd])
        map_sd = np.mean([s.accuracy for s in sd])
        print(f"stardist matching:               {t_sd:6.3f} s   mAP {map_sd:.4f}   counts identical")
    print(f"speed-up vs cellpose:            {t_cp / t_ours:6.1f} x   (median of {args.repeat} after a warm-up)")
    print("AP per threshold:", " ".join(f"{t:.2f}:{a:.3f}" for t, a in zip(ours.thresholds, ours.ap, strict=True)))


if __name__ == "__main__":
    main()
