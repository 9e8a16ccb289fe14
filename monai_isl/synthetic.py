"""Deterministic synthetic microscopy fields for training the ISL and segmentation bundles without any download.

Each field is a set of co-registered channels rendered from one random scene of touching, variably sized cells:

* label-free channels (two defocused bright-field planes, phase contrast, DIC) computed from an optical-path-length
  (OPL) map through simple optical models (transport-of-intensity defocus, high-pass halo, shear derivative),
* fluorescence channels (a 3-plane DAPI z-stack, a CellMask membrane stain) rendered from the same objects with their
  own, partly independent, appearance (per-nucleus brightness, chromatin texture, dim nucleoli, focus per nucleus),
* instance labels for nuclei and cells (a nucleus carries the id of its cell).

The label-free images therefore *predict* the fluorescence (the nucleus and the cell boundaries change the OPL) without
being a copy of it, which is what In Silico Labeling has to learn. :func:`write_dataset` writes the fields as uint16
TIFFs plus MONAI decathlon-style datalists for the four bundles.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import scipy.fft
import tifffile
from scipy import ndimage
from skimage.segmentation import find_boundaries, watershed

__all__ = ["generate_field", "write_dataset", "split_counts", "FIELD_FILES"]

#: File name of every channel of a field folder, in write order.
FIELD_FILES: tuple[str, ...] = (
    "brightfield_z0.tif",
    "brightfield_z1.tif",
    "phase.tif",
    "dic.tif",
    "dapi_z0.tif",
    "dapi_z1.tif",
    "dapi_z2.tif",
    "cellmask.tif",
    "nuclei.tif",
    "cells.tif",
)

_MIN_SIZE = 64


# ----------------------------------------------------------------------------------------------------------- helpers
def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-std Gaussian-correlated noise; FFT filtering for large ``sigma`` keeps 2k fields fast."""
    white = rng.standard_normal(shape, dtype=np.float32)
    if sigma <= 4.0:
        out = ndimage.gaussian_filter(white, sigma, mode="wrap")
    else:
        fy = np.fft.fftfreq(shape[0]).astype(np.float32)[:, None]
        fx = np.fft.rfftfreq(shape[1]).astype(np.float32)[None, :]
        transfer = np.exp(-2.0 * np.pi**2 * sigma**2 * (fy**2 + fx**2)).astype(np.float32)
        out = scipy.fft.irfft2(scipy.fft.rfft2(white) * transfer, s=shape).astype(np.float32)
    out -= out.mean()
    out /= out.std() + 1e-8
    return out


def _spots(shape: tuple[int, int], ys: np.ndarray, xs: np.ndarray, amps: np.ndarray, sigma: float) -> np.ndarray:
    """Render Gaussian spots with peak value ``amps`` at (sub-pixel rounded) positions, in one filter pass."""
    img = np.zeros(shape, np.float32)
    if len(ys):
        iy = np.clip(np.rint(ys).astype(np.intp), 0, shape[0] - 1)
        ix = np.clip(np.rint(xs).astype(np.intp), 0, shape[1] - 1)
        np.add.at(img, (iy, ix), amps.astype(np.float32) * np.float32(2.0 * np.pi * sigma**2))
        img = ndimage.gaussian_filter(img, sigma)
    return img


def _illumination(rng: np.random.Generator, shape: tuple[int, int], strength: float) -> np.ndarray:
    """Smooth multiplicative illumination: a random linear gradient plus vignetting, mean about 1."""
    y = np.linspace(-0.5, 0.5, shape[0], dtype=np.float32)[:, None]
    x = np.linspace(-0.5, 0.5, shape[1], dtype=np.float32)[None, :]
    gy, gx = rng.uniform(-strength, strength, 2)
    vignette = rng.uniform(0.0, strength)
    cy, cx = rng.uniform(-0.15, 0.15, 2)
    illum = 1.0 + gy * y + gx * x - vignette * ((y - cy) ** 2 + (x - cx) ** 2) * 2.0
    return illum.astype(np.float32)


def _camera(rng: np.random.Generator, expected: np.ndarray, gain: float, read_sd: float, offset: float) -> np.ndarray:
    """Poisson-Gaussian sensor model (shot noise in electrons, Gaussian read noise, offset) quantised to uint16."""
    electrons = rng.poisson(np.maximum(expected, 0.0) / gain).astype(np.float32)
    dn = electrons * np.float32(gain) + rng.normal(offset, read_sd, expected.shape).astype(np.float32)
    return np.clip(np.rint(dn), 0, 65535).astype(np.uint16)


# ------------------------------------------------------------------------------------------------------------- scene
def _place_cells(
    rng: np.random.Generator, size: int, cell_radius: tuple[float, float], coverage: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dart-throwing with budding: new colonies start at random, others bud off an existing cell so they overlap.

    The overlap (centre distance 0.72-0.95 of the radius sum) makes touching cells after the watershed split, colonies
    of varying size and some isolated cells. Returns centres y, x and radii.
    """
    r_lo, r_hi = cell_radius
    target = coverage * size * size
    p_new = rng.uniform(0.1, 0.3)
    mean_r = 0.5 * (r_lo + r_hi)
    max_tries = int(60 * target / (np.pi * mean_r**2)) + 200
    ys, xs, rs = np.zeros(max_tries), np.zeros(max_tries), np.zeros(max_tries)
    n = 0
    area = 0.0
    for _ in range(max_tries):
        if area >= target:
            break
        r = r_lo + (r_hi - r_lo) * rng.beta(1.6, 2.0)
        if n == 0 or rng.random() < p_new:
            cy, cx = rng.uniform(0, size - 1, 2)
        else:
            j = int(rng.integers(n))
            ang = rng.uniform(0, 2 * np.pi)
            dist = (rs[j] + r) * rng.uniform(0.75, 0.95)
            cy, cx = ys[j] + dist * np.sin(ang), xs[j] + dist * np.cos(ang)
            if not (0 <= cy <= size - 1 and 0 <= cx <= size - 1):
                continue
        if n and np.any(np.hypot(ys[:n] - cy, xs[:n] - cx) < 0.72 * (rs[:n] + r)):
            continue
        ys[n], xs[n], rs[n] = cy, cx, r
        n += 1
        area += 0.85 * np.pi * r * r
    return ys[:n].copy(), xs[:n].copy(), rs[:n].copy()


def _rasterize(
    rng: np.random.Generator, size: int, ys: np.ndarray, xs: np.ndarray, rs: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per cell (small windows, no per-pixel loops): an irregular star-shaped normalised distance and a nucleus ellipse.

    Returns the min normalised distance to any cell centre ``best_d`` (<= 1 inside a cell), the raw nucleus id map, the
    normalised ellipse radius inside nuclei, the watershed markers and the nucleus semi-axes (for nucleoli placement).
    """
    shape = (size, size)
    best_d = np.full(shape, np.inf, np.float32)
    nuc_raw = np.zeros(shape, np.int32)
    nuc_q = np.full(shape, np.inf, np.float32)
    markers = np.zeros(shape, np.int32)
    n = len(rs)
    harm = rng.uniform(0, 1, (n, 3)) * np.array([0.25, 0.08, 0.06])  # amplitudes of cos(2,3,4 theta)
    harm[rng.random(n) < 0.2, 0] += 0.15  # some clearly elongated cells
    phases = rng.uniform(0, 2 * np.pi, (n, 3))
    nuc_frac = rng.uniform(0.35, 0.6, n)
    nuc_ecc = rng.uniform(0.0, 0.3, n)
    nuc_off = rng.uniform(0, 0.12, n) * rs
    nuc_off_ang = rng.uniform(0, 2 * np.pi, n)
    nuc_rot = phases[:, 0] / 2 + rng.normal(0, 0.3, n)  # nucleus roughly aligned with the cell's long axis
    axes = np.zeros((n, 5))  # ncy, ncx, a, b, angle
    for i in range(n):
        cy, cx, r = ys[i], xs[i], rs[i]
        half = int(np.ceil(r * (1.0 + harm[i].sum()) * 1.1)) + 2
        iy, ix = int(round(cy)), int(round(cx))
        y0, y1, x0, x1 = max(0, iy - half), min(size, iy + half + 1), max(0, ix - half), min(size, ix + half + 1)
        dy = (np.arange(y0, y1, dtype=np.float32) - np.float32(cy))[:, None]
        dx = (np.arange(x0, x1, dtype=np.float32) - np.float32(cx))[None, :]
        th = np.arctan2(dy, dx)
        rad = 1.0 + sum(harm[i, k] * np.cos((k + 2) * th - phases[i, k]) for k in range(3))
        d = np.hypot(dy, dx) / (np.float32(r) * rad)
        np.minimum(best_d[y0:y1, x0:x1], d, out=best_d[y0:y1, x0:x1])
        markers[iy, ix] = i + 1
        # nucleus: rotated ellipse, roughly centred, elongated along the cell
        ncy = cy + nuc_off[i] * np.sin(nuc_off_ang[i])
        ncx = cx + nuc_off[i] * np.cos(nuc_off_ang[i])
        a = nuc_frac[i] * r * (1 + nuc_ecc[i])
        b = nuc_frac[i] * r * (1 - nuc_ecc[i])
        ca, sa = np.cos(nuc_rot[i]), np.sin(nuc_rot[i])
        ndy, ndx = dy + np.float32(cy - ncy), dx + np.float32(cx - ncx)
        u = (ndx * ca + ndy * sa) / a
        v = (-ndx * sa + ndy * ca) / b
        q = np.sqrt(u * u + v * v).astype(np.float32)
        sub_q, sub_id = nuc_q[y0:y1, x0:x1], nuc_raw[y0:y1, x0:x1]
        upd = (q <= 1.0) & (q < sub_q)
        sub_q[upd] = q[upd]
        sub_id[upd] = i + 1
        axes[i] = (ncy, ncx, a, b, nuc_rot[i])
    return best_d, nuc_raw, nuc_q, markers, axes


def _points_in_nuclei(
    rng: np.random.Generator, axes: np.ndarray, counts: np.ndarray, max_q: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random points inside each nucleus ellipse (within ``max_q`` of its normalised radius); returns y, x, owner."""
    owner = np.repeat(np.arange(len(axes)), counts)
    rho = np.sqrt(rng.random(len(owner))) * max_q
    phi = rng.uniform(0, 2 * np.pi, len(owner))
    ncy, ncx, a, b, rot = (axes[owner, k] for k in range(5))
    u, v = rho * np.cos(phi) * a, rho * np.sin(phi) * b
    return ncy + u * np.sin(rot) + v * np.cos(rot), ncx + u * np.cos(rot) - v * np.sin(rot), owner


# -------------------------------------------------------------------------------------------------------- public API
def generate_field(
    rng: np.random.Generator,
    size: int = 256,
    cell_radius: tuple[float, float] = (10.0, 25.0),
    coverage: float | None = None,
) -> dict[str, np.ndarray]:
    """Render one square field of touching cells in every channel.

    Args:
        rng: source of all randomness (same generator state -> identical arrays).
        size: height and width in pixels (>= 64).
        cell_radius: (min, max) cell radius in pixels; texture and blur scales follow its mean (17.5 px = scale 1).
        coverage: target fraction of the field covered by cells; random in [0.3, 0.6] when ``None``.

    Returns:
        ``brightfield`` (2, H, W), ``phase``, ``dic`` (H, W), ``dapi`` (3, H, W), ``cellmask`` (H, W) as uint16
        intensities and ``nuclei``, ``cells`` (H, W) uint16 instance labels (a nucleus has its cell's id).
    """
    size = int(size)
    if size < _MIN_SIZE:
        raise ValueError(f"size must be >= {_MIN_SIZE}, got {size}")
    r_lo, r_hi = (float(v) for v in cell_radius)
    if not 3.0 <= r_lo <= r_hi <= size / 2:
        raise ValueError(f"cell_radius must satisfy 3 <= min <= max <= size/2, got {cell_radius} for size {size}")
    if coverage is None:
        coverage = float(rng.uniform(0.3, 0.6))
    if not 0.05 <= coverage <= 0.9:
        raise ValueError(f"coverage must be in [0.05, 0.9], got {coverage}")
    shape = (size, size)
    s = 0.5 * (r_lo + r_hi) / 17.5  # spatial scale of textures and optics relative to the default cells

    # --- scene: cells by seeded watershed on a jittered normalised distance, nuclei clipped to their cell ----------
    ys, xs, rs = _place_cells(rng, size, (r_lo, r_hi), coverage)
    n = len(rs)
    best_d, nuc_raw, nuc_q, markers, axes = _rasterize(rng, size, ys, xs, rs)
    elev = best_d + np.float32(0.07) * _smooth_noise(rng, shape, 2.5 * s)
    cells = watershed(elev, markers, mask=elev <= 1.0).astype(np.int32)
    nuclei = np.where((nuc_raw == cells) & (cells > 0), nuc_raw, 0).astype(np.int32)
    in_cell, in_nuc = cells > 0, nuclei > 0
    cyto = in_cell & ~in_nuc

    # per-object properties, indexed by label (index 0 = background)
    def per_label(values: np.ndarray) -> np.ndarray:
        return np.concatenate([[0.0], values]).astype(np.float32)

    height = per_label(rng.uniform(0.45, 1.0, n))
    nuc_excess = per_label(rng.uniform(0.25, 0.55, n))
    dapi_bright = per_label(np.minimum(rng.lognormal(np.log(12000.0), 0.3, n), 26000.0))
    chrom_contrast = per_label(rng.uniform(0.15, 0.45, n))
    memb_bright = per_label(rng.lognormal(np.log(9000.0), 0.3, n))
    cyto_frac = per_label(rng.uniform(0.12, 0.3, n))

    # --- optical path length: cell dome + nucleus excess + nucleoli + granules + texture ---------------------------
    d_clip = np.minimum(best_d, 1.0)
    dome = np.sqrt(1.0 - d_clip * d_clip)
    thickness = np.where(in_cell, height[cells] * (0.15 + 0.85 * dome), 0.0).astype(np.float32)
    nq = np.where(in_nuc, np.minimum(nuc_q, 1.0), 1.0)
    nuc_profile = np.sqrt(1.0 - nq * nq).astype(np.float32)  # ellipsoid thickness, 0 outside nuclei

    n_nucleoli = rng.integers(1, 5, n)
    nly, nlx, nlo = _points_in_nuclei(rng, axes, n_nucleoli, 0.55)
    nucleoli = _spots(shape, nly, nlx, rng.uniform(0.5, 1.0, len(nly)), 1.8 * s) * in_nuc
    n_gran = rng.poisson(0.006 * size * size)
    gy, gx = rng.uniform(0, size - 1, (2, n_gran))
    gran = _spots(shape, gy, gx, rng.uniform(0.3, 1.0, n_gran), 0.9 * s)
    gran *= cyto
    n_lip = rng.poisson(0.0008 * size * size)
    ly, lx = rng.uniform(0, size - 1, (2, n_lip))
    lipids = _spots(shape, ly, lx, rng.uniform(0.5, 1.0, n_lip), 1.4 * s) * cyto
    texture = _smooth_noise(rng, shape, 1.5 * s) * in_cell

    envelope = np.exp(-(((nq - 0.92) / 0.08) ** 2)) * in_nuc  # nuclear envelope / peripheral chromatin
    opl = thickness + nuc_excess[cells] * (nuc_profile + 0.3 * envelope) + 0.25 * nucleoli + 0.25 * gran + 0.5 * lipids
    opl = ndimage.gaussian_filter(opl + 0.04 * texture, 0.8 * s)
    absorb = ndimage.gaussian_filter(0.02 * thickness + 0.25 * lipids + 0.04 * gran, 0.8 * s)

    # --- label-free channels -------------------------------------------------------------------------------------
    out: dict[str, np.ndarray] = {}
    i0 = rng.uniform(15000, 24000)
    illum = _illumination(rng, shape, 0.25)
    bf_gain, bf_read = rng.uniform(2.0, 5.0), rng.uniform(8.0, 20.0)
    planes = []
    for sign, sig in ((-1.0, 1.6), (1.0, 2.1)):  # -dz plane and +dz plane (slightly different defocus blur)
        lap = ndimage.gaussian_laplace(opl, sig * s) * np.float32(s * s)
        contrast = np.clip(1.0 - sign * 3.0 * lap, 0.05, None)
        expected = i0 * illum * (1.0 - absorb) * contrast
        planes.append(_camera(rng, ndimage.gaussian_filter(expected, 0.7 * s), bf_gain, bf_read, 100.0))
    out["brightfield"] = np.stack(planes)

    halo = opl - ndimage.gaussian_filter(opl, 6.0 * s)  # phase ring: low frequencies lost -> halo + shade-off
    ip = rng.uniform(9000, 14000)
    expected = ip * _illumination(rng, shape, 0.25) * (1.0 - absorb) * np.clip(1.0 - 0.9 * halo, 0.05, None)
    out["phase"] = _camera(rng, ndimage.gaussian_filter(expected, 0.7 * s), bf_gain, bf_read, 100.0)

    # derivative of the OPL along the 45 degree shear direction (OPL per pixel): the DIC relief
    d_dy, d_dx = ndimage.gaussian_filter(opl, s, order=(1, 0)), ndimage.gaussian_filter(opl, s, order=(0, 1))
    shear = (d_dy + d_dx) / np.float32(np.sqrt(2.0))
    idic = rng.uniform(12000, 18000)
    expected = idic * _illumination(rng, shape, 0.2) * (1.0 - 0.5 * absorb) * np.clip(1.0 + 4.0 * s * shear, 0.05, None)
    out["dic"] = _camera(rng, expected, bf_gain, bf_read, 100.0)

    # --- DAPI: chromatin texture, chromocentres, dim nucleoli, per-nucleus focus in a 3-plane stack ----------------
    grain = 0.7 * _smooth_noise(rng, shape, 1.0 * s) + 0.5 * _smooth_noise(rng, shape, 3.0 * s)
    chrom = 1.0 + chrom_contrast[nuclei] * grain
    n_cc = rng.integers(2, 12, n)
    ccy, ccx, _ = _points_in_nuclei(rng, axes, n_cc, 0.85)
    chromocentres = _spots(shape, ccy, ccx, rng.uniform(0.3, 0.9, len(ccy)), 1.0 * s)
    nuc_signal = (0.35 + 0.65 * nuc_profile) * np.clip(chrom, 0.2, None) + chromocentres
    nuc_signal = dapi_bright[nuclei] * nuc_signal * np.clip(1.0 - 0.5 * nucleoli, 0.0, 1.0) * in_nuc
    autofluor = ndimage.gaussian_filter(250.0 * thickness, 1.5 * s)
    z_nuc = per_label(rng.uniform(-0.7, 0.7, n))  # focal position of each nucleus, in plane units
    dapi_bg, dapi_illum = rng.uniform(1200, 3000), _illumination(rng, shape, 0.3)
    f_gain, f_read = rng.uniform(1.0, 2.5), rng.uniform(3.0, 10.0)
    dapi_planes = []
    for plane in (-1.0, 0.0, 1.0):
        level = np.rint(np.abs(plane - z_nuc) / 0.3).astype(np.int32)  # quantised defocus per nucleus
        level_map = level[nuclei]
        img = np.zeros(shape, np.float32)
        for lv in np.unique(level[1:]):
            sigma = s * np.hypot(0.8, 2.0 * 0.3 * lv)
            img += ndimage.gaussian_filter(np.where(level_map == lv, nuc_signal, 0.0).astype(np.float32), sigma)
        expected = dapi_bg + dapi_illum * (img + autofluor)
        dapi_planes.append(_camera(rng, expected, f_gain, f_read, 100.0))
    out["dapi"] = np.stack(dapi_planes)

    # --- CellMask: bright membranes (incl. between touching cells), dim cytoplasm, endocytic puncta -----------------
    membrane = find_boundaries(cells, connectivity=1, mode="inner") & in_cell
    memb_var = np.clip(1.0 + 0.35 * _smooth_noise(rng, shape, 3.0 * s), 0.2, None)
    n_pun = rng.poisson(0.003 * size * size)
    py, px = rng.uniform(0, size - 1, (2, n_pun))
    puncta = _spots(shape, py, px, rng.uniform(0.2, 0.6, n_pun), 1.0 * s) * cyto
    height_safe = np.where(in_cell, height[cells], 1.0)
    cm_signal = memb_bright[cells] * (
        membrane * memb_var + cyto_frac[cells] * (thickness / height_safe) * (1.0 - 0.4 * nuc_profile) + puncta
    )
    cm_bg = rng.uniform(1000, 3000)
    expected = cm_bg + _illumination(rng, shape, 0.3) * ndimage.gaussian_filter(cm_signal.astype(np.float32), 1.0 * s)
    out["cellmask"] = _camera(rng, expected, f_gain, f_read, 100.0)

    out["nuclei"] = nuclei.astype(np.uint16)
    out["cells"] = cells.astype(np.uint16)
    return out


def touching_cells(
    size: int = 2160, spacing: float = 64.0, seed: int = 0, wobble: float = 60.0, drop: float = 0.1
) -> np.ndarray:
    """Instance labels (uint16, numbered 1..n) of round-ish cells that touch along straight borders, with gaps of
    background: the ground truth of the post-processing and instance-metric benchmarks and tests.

    Seeds on a jittered grid ``spacing`` apart; each pixel goes to its nearest seed (Voronoi) and is kept when it lies
    within a per-cell radius (0.45-0.8 ``spacing``) of that seed, perturbed by smooth noise (white noise smoothed with
    sigma 6 px, times ``wobble``: about 2.8 px standard deviation at the default 60); a fraction ``drop`` of the cells
    is left out. Deterministic for a given ``seed``.
    """
    rng = np.random.default_rng(seed)
    grid = np.arange(spacing / 2, size, spacing)
    gy, gx = np.meshgrid(grid, grid, indexing="ij")
    ys = np.clip(gy.ravel() + rng.uniform(-0.35, 0.35, gy.size) * spacing, 0, size - 1).astype(int)
    xs = np.clip(gx.ravel() + rng.uniform(-0.35, 0.35, gx.size) * spacing, 0, size - 1).astype(int)
    seeds = np.ones((size, size), bool)
    seeds[ys, xs] = False
    dist, (iy, ix) = ndimage.distance_transform_edt(seeds, return_indices=True)
    ids = np.zeros((size, size), np.int64)
    ids[ys, xs] = np.arange(1, len(ys) + 1)
    labels = ids[iy, ix]
    radius = rng.uniform(0.45, 0.8, len(ys) + 1) * spacing
    noise = ndimage.gaussian_filter(rng.standard_normal((size, size)), 6) * wobble
    labels[dist + noise > radius[labels]] = 0
    dropped = rng.random(len(ys) + 1) < drop
    labels[dropped[labels]] = 0
    ids, inverse = np.unique(labels, return_inverse=True)  # renumber 1..n
    return (inverse.reshape(labels.shape) + (ids[0] != 0)).astype(np.uint16)


def split_counts(n_images: int) -> tuple[int, int, int]:
    """(training, validation, test) sizes: test = max(1, round(0.2 n)), validation = max(1, round(0.1 n))."""
    n_test = max(1, round(0.2 * n_images))
    n_val = max(1, round(0.1 * n_images))
    n_train = n_images - n_test - n_val
    if n_train < 1:
        raise ValueError(f"n_images={n_images} leaves no training image; use n_images >= 3")
    return n_train, n_val, n_test


_README = """# Synthetic co-registered microscopy fields

Generated by `monai_isl.synthetic.write_dataset(n_images={n}, size={size}, seed={seed})`: {n} fields of {size}x{size}
pixels, uint16 single-page TIFFs in `fields/field_NNN/`, split {n_train}/{n_val}/{n_test} (training/validation/test)
by index in the four datalists (`dapi_isl.json`, `cellmask_isl.json`, `nucleus_seg.json`, `cell_instance_seg.json`).
Rerunning with the same arguments gives byte-identical files.

Scene: cells placed by dart throwing with budding (touching colonies and isolated cells, radii 10-25 px), split by a
seeded watershed; one elliptic nucleus per cell with the cell's id (`nuclei.tif`, `cells.tif`).

Optical model:
1. OPL = cell dome thickness + nucleus excess + nucleoli + granules/lipid droplets + texture; small absorption.
2. Bright-field z0/z1: I0 * illumination * (1 - absorption) * (1 -/+ dz * Laplacian(blurred OPL)) (TIE defocus).
3. Phase contrast: background * (1 - k * (OPL - blurred OPL)), which gives dark cells with bright halos.
4. DIC: bias * (1 + k * derivative of the OPL along the 45 degree shear).
5. DAPI z0-z2: textured nuclei with per-nucleus brightness and focus; CellMask: membranes + dim cytoplasm; all
   channels get illumination gradients and Poisson-Gaussian camera noise.
"""


def write_dataset(out: str | Path, n_images: int = 12, size: int = 256, seed: int = 0) -> Path:
    """Write ``n_images`` fields, four decathlon-style datalists and a README under ``out``; returns ``out``.

    Field ``i`` comes from ``SeedSequence(seed).spawn`` child ``i``, so it does not depend on ``n_images``, and the
    files are byte-identical for the same arguments. Existing files are overwritten; extra old fields are left alone.
    """
    if isinstance(n_images, bool) or int(n_images) != n_images or n_images < 3:
        raise ValueError(f"n_images must be an integer >= 3 (training, validation, test need one each), got {n_images}")
    if isinstance(size, bool) or int(size) != size or size < _MIN_SIZE:
        raise ValueError(f"size must be an integer >= {_MIN_SIZE}, got {size}")
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    n_images, size, seed = int(n_images), int(size), int(seed)
    out = Path(out)
    n_train, n_val, n_test = split_counts(n_images)

    children = np.random.SeedSequence(seed).spawn(n_images)
    names = []
    for i, child in enumerate(children):
        name = f"fields/field_{i:03d}"
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        field = generate_field(np.random.default_rng(child), size=size)
        arrays = [*field["brightfield"], field["phase"], field["dic"], *field["dapi"], field["cellmask"]]
        arrays += [field["nuclei"], field["cells"]]
        for fname, arr in zip(FIELD_FILES, arrays, strict=True):
            tifffile.imwrite(folder / fname, np.ascontiguousarray(arr), photometric="minisblack", metadata=None)
        names.append(name)

    lf3 = ["brightfield_z0.tif", "brightfield_z1.tif", "phase.tif"]
    items = {
        "dapi_isl": lambda f: {"image": [f"{f}/{c}" for c in lf3], "label": [f"{f}/dapi_z{z}.tif" for z in range(3)]},
        "cellmask_isl": lambda f: {"image": [f"{f}/dic.tif"], "label": f"{f}/cellmask.tif"},
        "nucleus_seg": lambda f: {"image": [f"{f}/{c}" for c in lf3], "label": f"{f}/nuclei.tif"},
        "cell_instance_seg": lambda f: {"image": [f"{f}/dic.tif"], "label": f"{f}/cells.tif"},
    }
    descriptions = {
        "dapi_isl": "ISL: bright-field z0/z1 + phase contrast -> 3-plane DAPI z-stack",
        "cellmask_isl": "ISL: DIC -> CellMask membrane stain",
        "nucleus_seg": "Nucleus instance segmentation from bright-field z0/z1 + phase contrast",
        "cell_instance_seg": "Cell instance segmentation from DIC",
    }
    parts = {
        "training": names[:n_train],
        "validation": names[n_train : n_train + n_val],
        "test": names[n_train + n_val :],
    }
    for key, make in items.items():
        doc: dict = {"description": f"Synthetic microscopy ({size}x{size}, seed {seed}). {descriptions[key]}"}
        doc.update({"seed": seed, "size": size})
        doc.update({part: [{**make(f), "name": Path(f).name} for f in fields] for part, fields in parts.items()})
        (out / f"{key}.json").write_text(json.dumps(doc, indent=2) + "\n")
    readme = _README.format(n=n_images, size=size, seed=seed, n_train=n_train, n_val=n_val, n_test=n_test)
    (out / "README.md").write_text(readme)
    return out
