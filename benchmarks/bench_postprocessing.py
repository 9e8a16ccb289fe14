"""Benchmark: h-maxima watershed post-processing on a 2160 x 2160 field of ~1000 touching cells.

Compares :func:`monai_isl.postprocessing.hmaxima_watershed` (numba union-find flooding) with the baseline the
paper's pipeline used, scikit-image ``h_maxima`` + ``label`` + ``watershed`` on float32, timed in the same run,
and checks its agreement (mAP) with the exact float64 definition ``hmaxima_watershed_reference``.

Run: ``python benchmarks/bench_postprocessing.py [--size 2160] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monai_isl.metrics import match_instances  # noqa: E402
from monai_isl.postprocessing import hmaxima_watershed, hmaxima_watershed_reference  # noqa: E402
from monai_isl.synthetic import touching_cells  # noqa: E402
from monai_isl.transforms import instance_distance  # noqa: E402


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    noise = ndi.gaussian_filter(rng.standard_normal(shape), sigma)
    return noise / noise.std()


def network_like(labels: np.ndarray, seed: int = 1, noise: float = 6.0) -> tuple[np.ndarray, np.ndarray]:
    """A (distance, mask probability) pair like a trained network's: smoothed targets plus smooth noise.

    ``noise`` is the standard deviation (0..255 scale) of the distance noise: at 6 many spurious bumps have a
    dynamic around h = 10, which exercises the marker selection.
    """
    rng = np.random.default_rng(seed)
    distance = ndi.gaussian_filter(instance_distance(labels), 1.5) + _smooth_noise(rng, labels.shape, 3) * noise
    fg = ndi.gaussian_filter((labels > 0).astype(np.float64), 1.5)
    prob = np.clip(fg + _smooth_noise(rng, labels.shape, 2) * 0.1, 0, 1)
    return distance.astype(np.float32), prob.astype(np.float32)


def skimage_baseline(distance: np.ndarray, mask: np.ndarray, h: float = 10.0) -> np.ndarray:
    """The usual pipeline: ``h_maxima`` markers, ``label``, ``watershed`` of ``-distance`` in the mask, float32."""
    from skimage.measure import label
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    markers = label(h_maxima(distance, h))
    return watershed(-distance, markers, mask=mask > 0.5)


def _best(fn, repeat: int) -> tuple[float, np.ndarray]:
    best, out = np.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2160)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--h", type=float, default=10.0)
    parser.add_argument("--noise", type=float, default=6.0, help="std of the distance noise, 0..255 scale")
    args = parser.parse_args()

    truth = touching_cells(args.size)
    distance, prob = network_like(truth, noise=args.noise)
    print(f"field {args.size}x{args.size}, {int(truth.max())} cells, h={args.h}, noise {args.noise}")

    t0 = time.perf_counter()
    hmaxima_watershed(distance[:64, :64], prob[:64, :64], h=args.h)  # numba compile / cache load
    print(f"numba compile or cache load: {time.perf_counter() - t0:.2f} s (once per process)")

    t_fast, fast = _best(lambda: hmaxima_watershed(distance, prob, h=args.h), args.repeat)
    t_base, base = _best(lambda: skimage_baseline(distance, prob, h=args.h), 1)
    t_ref, ref = _best(lambda: hmaxima_watershed_reference(distance, prob, h=args.h), 1)

    agree = match_instances(ref, fast)
    count = lambda labels: len(np.unique(labels)) - 1  # noqa: E731
    print(f"hmaxima_watershed (fast, numba):              {t_fast:7.3f} s   {count(fast)} instances")
    print(f"scikit-image h_maxima+label+watershed (f32):  {t_base:7.3f} s   {count(base)} instances")
    print(f"reference (scikit-image, float64, exact def): {t_ref:7.3f} s   {count(ref)} instances")
    print(f"speed-up vs scikit-image float32 baseline:    {t_base / t_fast:7.1f} x")
    print(
        f"agreement fast vs reference: mAP {agree.mean_ap:.4f} (AP@0.5 {agree.ap[0]:.4f}, AP@0.95 {agree.ap[-1]:.4f})"
    )
    print(
        f"vs ground truth: fast mAP {match_instances(truth, fast).mean_ap:.4f}, "
        f"reference {match_instances(truth, ref).mean_ap:.4f}, baseline {match_instances(truth, base).mean_ap:.4f}"
    )


if __name__ == "__main__":
    main()
