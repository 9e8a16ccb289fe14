"""Data preparation: turn example or user images into dataset folders with datalists the bundles read.

``isl_example`` prepares the public In Silico Labeling sample (Christiansen et al., Cell 2018) shipped in
``../shared/data/isl_condition_b`` for the real-data check: three phase-contrast focal planes as the label-free
input, a confocal stain as the target, the top half of the field for training and validation and the bottom
half for testing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .bundle import as_bool
from .io import read_image, write_image

# measured on the sample: the fluorescence must move by (+6, -2) px (rows, columns) to overlay the phase planes
# (skimage.registration.phase_cross_correlation of smoothed phase_z00 / phase_z06 against dapi gave (7, -1), (5, -2))
ISL_EXAMPLE_OFFSET = (6, -2)


def _parse_ints(value: str | int | Sequence[int | str]) -> list[int]:
    """Integers from a command-line value: ``7``, ``"0,6,12"``, ``(6, -2)`` or ranges such as ``"1-21"``."""
    parts = value if isinstance(value, (list, tuple)) else str(value).replace(" ", "").split(",")
    numbers: list[int] = []
    for part in parts:
        text = str(part).strip()
        if not text:
            continue
        span = re.fullmatch(r"(-?\d+)-(-?\d+)", text)
        numbers += list(range(int(span[1]), int(span[2]) + 1)) if span else [int(text)]
    return numbers


def shift_image(image: np.ndarray, offset: Sequence[int]) -> np.ndarray:
    """Move a ``(C, H, W)`` image by whole pixels, ``out[y, x] = image[y - dy, x - dx]``, zero-filling the edge."""
    dy, dx = (int(o) for o in offset)
    out = np.zeros_like(image)
    h, w = image.shape[-2:]
    out[..., max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = image[
        ..., max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def nuclei_from_fluorescence(
    image: np.ndarray,
    sigma: float = 2.0,
    threshold: float | None = None,
    min_size: int = 30,
    min_distance: int = 5,
) -> np.ndarray:
    """Nucleus instance labels from a nuclear stain (DAPI, Hoechst): the paper made its ground truth with Cellpose
    on DAPI plus manual correction; this is a classical stand-in for when neither is at hand.

    Gaussian smoothing -> threshold (Otsu unless given, in the smoothed image's units) -> holes filled, objects
    under ``min_size`` pixels removed -> distance transform -> one marker per local maximum at least
    ``min_distance`` apart -> watershed of the negative distance inside the foreground -> size filter again.

    Args:
        image: the nuclear stain, 2D (or with single-sized extra axes).
        sigma: width (pixels) of the Gaussian smoothing before thresholding; 0 to smooth nothing.
        threshold: foreground level in the smoothed image's intensity units; default Otsu's threshold.
        min_size: smallest nucleus kept, in pixels.
        min_distance: smallest distance in pixels between two nucleus centres (markers of the watershed).

    Returns:
        uint16 (uint32 past 65535 nuclei) instance labels, 0 = background.
    """
    from scipy import ndimage as ndi
    from skimage.feature import peak_local_max
    from skimage.filters import threshold_otsu
    from skimage.morphology import remove_small_objects
    from skimage.segmentation import relabel_sequential, watershed

    image = np.squeeze(np.asarray(image, dtype=np.float32))
    if image.ndim != 2:
        raise ValueError(f"expected a 2D nuclear stain image, got shape {image.shape}")
    smooth = ndi.gaussian_filter(image, sigma) if sigma > 0 else image
    level = threshold_otsu(smooth) if threshold is None else float(threshold)
    foreground = remove_small_objects(ndi.binary_fill_holes(smooth > level), max_size=max(int(min_size) - 1, 0))
    if not foreground.any():
        return np.zeros(image.shape, np.uint16)
    distance = ndi.distance_transform_edt(foreground)
    components, _ = ndi.label(foreground)
    peaks = peak_local_max(distance, min_distance=int(min_distance), labels=components, exclude_border=False)
    markers = np.zeros(image.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    labels = watershed(-distance, markers, mask=foreground)
    sizes = np.bincount(labels.ravel())
    labels[sizes[labels] < int(min_size)] = 0
    labels = relabel_sequential(labels)[0]
    return labels.astype(np.uint16 if labels.max() <= np.iinfo(np.uint16).max else np.uint32)


def nuclei(
    src: str, out: str, sigma: float = 2.0, threshold: float | None = None, min_size: int = 30, min_distance: int = 5
) -> str:
    """Derive nucleus instance labels from a nuclear-stain image file and write them as a uint16 TIFF.

    Args:
        src: DAPI/Hoechst image (TIFF, PNG or NIfTI; a multi-channel file is max-projected).
        out: output ``.tif``.
        sigma: width (pixels) of the Gaussian smoothing before thresholding; 0 to smooth nothing.
        threshold: foreground level in the smoothed image's intensity units; default Otsu's threshold.
        min_size: smallest nucleus kept, in pixels (smaller objects are noise and are removed).
        min_distance: smallest distance in pixels between two nucleus centres; a larger value splits touching
            nuclei less often, a smaller one may cut a large nucleus in two.
    """
    image = read_image(src).max(axis=0)
    labels = nuclei_from_fluorescence(image, sigma, threshold, min_size, min_distance)
    write_image(out, labels)
    print(f"{int(labels.max())} nuclei from {src} -> {out}")
    return out


def isl_example(
    src: str = "../shared/data/isl_condition_b",
    out: str = "outputs/isl_condition_b",
    planes: str | Sequence[int] = "0,6,12",
    target: str = "dapi",
    offset: str | Sequence[int] = ISL_EXAMPLE_OFFSET,
    margin: int = 16,
    validation_width: int = 256,
    nuclei_labels: bool = True,
    tile: int = 0,
    drop_empty: bool | str = False,
) -> str:
    """Prepare the ISL sample: registered, margin-cropped halves, written as TIFFs with a datalist.

    The field is registered (``target`` moved by ``offset``), ``margin`` pixels are cut from every side (to drop
    the shifted-in border), then: top half -> training (left part) and validation (rightmost ``validation_width``
    columns); bottom half -> test. The datalist ``<out>/dapi_isl.json`` (or ``<target>_isl.json``) lists
    ``image``: the phase planes, ``label``: the target.

    Args:
        src: folder with ``phase_zNN.png`` and ``<target>.png``.
        out: output folder.
        planes: phase-contrast focal planes to use as input channels (comma-separated indices).
        target: fluorescence image name: ``dapi``, ``map2`` or ``nfh``.
        offset: (rows, columns) by which the fluorescence is moved onto the phase planes.
        margin: pixels cut from each side after registration.
        validation_width: width of the validation strip taken from the right of the top half.
        nuclei_labels: also derive nucleus instance labels from DAPI (:func:`nuclei_from_fluorescence`, on the
            whole registered field) and write ``nucleus_seg.json`` with them as the target.
        tile: cut the training and test regions into non-overlapping ``tile`` x ``tile`` images (``training/r0c1``
            ...; the remainder at the right and bottom is dropped), e.g. for the N-sweep, which needs several
            training images; 0 keeps one image per region.
        drop_empty: with ``tile``, leave out tiles without any nucleus (needs ``nuclei_labels``): an annotated
            training image shows nuclei, and an empty test tile scores only 0 or 1.
    """
    src_path, out_path = Path(src), Path(out)
    plane_ids = _parse_ints(planes)
    offset = _parse_ints(offset)
    phase = np.concatenate([read_image(src_path / f"phase_z{z:02d}.png") for z in plane_ids])
    fluorescence = shift_image(read_image(src_path / f"{target}.png"), offset)
    if fluorescence.shape[1:] != phase.shape[1:]:
        raise ValueError(f"'{target}.png' is {fluorescence.shape[1:]} but the phase planes are {phase.shape[1:]}")
    h, w = phase.shape[1:]
    m = int(margin)
    rows_mid = h // 2
    regions = {
        "training": (slice(m, rows_mid), slice(m, w - m - validation_width)),
        "validation": (slice(m, rows_mid), slice(w - m - validation_width, w - m)),
        "test": (slice(rows_mid, h - m), slice(m, w - m)),
    }
    datalist: dict[str, list] = {
        "description": (
            f"In Silico Labeling sample (Christiansen et al., Cell 2018, Apache-2.0): phase planes {plane_ids} -> "
            f"{target}, fluorescence moved by {tuple(offset)} px, margin {m}; top half train/val, "
            "bottom half test"
        )
    }
    labels = None
    nucleus_list: dict[str, object] = {}
    if nuclei_labels:
        dapi = fluorescence[0] if target == "dapi" else shift_image(read_image(src_path / "dapi.png"), offset)[0]
        labels = nuclei_from_fluorescence(dapi)
        nucleus_list["description"] = datalist["description"] + "; nucleus labels derived from DAPI"
    skip_empty = bool(tile) and as_bool(drop_empty)
    if skip_empty and labels is None:
        raise ValueError("--drop_empty needs the nucleus labels (--nuclei_labels true)")
    for section, (rows, cols) in regions.items():
        for suffix, (r, c) in _tiles(rows, cols, tile if section != "validation" else 0):
            if skip_empty and suffix and not labels[r, c].any():
                print(f"{section} tile {suffix}: no nucleus, left out")
                continue
            folder = out_path / section / suffix
            image_files = []
            for channel, z in enumerate(plane_ids):
                write_image(folder / f"phase_z{z:02d}.tif", phase[channel, r, c])
                image_files.append(f"{section}/{suffix}/phase_z{z:02d}.tif".replace("//", "/"))
            item_name = f"{section}_{suffix}" if suffix else section
            write_image(folder / f"{target}.tif", fluorescence[0, r, c])
            label_file = f"{section}/{suffix}/{target}.tif".replace("//", "/")
            datalist.setdefault(section, []).append({"image": image_files, "label": label_file, "name": item_name})
            if labels is not None:
                write_image(folder / "nuclei.tif", labels[r, c])
                item = {"image": image_files, "label": label_file.replace(f"{target}.tif", "nuclei.tif")}
                nucleus_list.setdefault(section, []).append({**item, "name": item_name})
    name = "dapi_isl" if target == "dapi" else f"{target}_isl"
    (out_path / f"{name}.json").write_text(json.dumps(datalist, indent=2))
    if labels is not None:
        (out_path / "nucleus_seg.json").write_text(json.dumps(nucleus_list, indent=2))
    print(
        f"wrote {out_path} ({name}.json): "
        + ", ".join(
            f"{k} {v[0].stop - v[0].start}x{v[1].stop - v[1].start} ({len(datalist[k])} image(s))"
            for k, v in regions.items()
        )
    )
    return str(out_path)


def _tiles(rows: slice, cols: slice, tile: int) -> list[tuple[str, tuple[slice, slice]]]:
    """``("rRcC", (rows, cols))`` for each whole ``tile`` x ``tile`` block of a region; ``[("", region)]`` for 0."""
    if not tile:
        return [("", (rows, cols))]
    n_rows, n_cols = (rows.stop - rows.start) // tile, (cols.stop - cols.start) // tile
    if n_rows < 1 or n_cols < 1:
        raise ValueError(f"--tile {tile} is larger than the region ({rows.stop - rows.start}x{cols.stop - cols.start})")
    return [
        (
            f"r{i}c{j}",
            (
                slice(rows.start + i * tile, rows.start + (i + 1) * tile),
                slice(cols.start + j * tile, cols.start + (j + 1) * tile),
            ),
        )
        for i in range(n_rows)
        for j in range(n_cols)
    ]


def usiigaci(
    src: str = "../shared/data/usiigaci",
    out: str = "outputs/usiigaci",
    train: str = "1-21",
    validation: str = "22-24",
    test: str = "25-30",
) -> str:
    """Datalist for the Usiigaci phase-contrast fields with hand-drawn cells (Tsai et al. 2019), read in place.

    Writes ``<out>/cell_instance_seg.json`` whose paths point at ``<src>/setNN/phase.tif`` (input, 1 channel)
    and ``cells.png`` (instance labels); nothing is copied. ``train``, ``validation`` and ``test`` are set-number
    ranges such as ``"1-21"`` or ``"25,27,30"``.
    """
    src_path, out_path = Path(src).resolve(), Path(out)

    doc: dict[str, object] = {
        "description": "Usiigaci 10x phase contrast with hand-drawn cell instances (Tsai et al. 2019, MIT)"
    }
    for section, spec in (("training", train), ("validation", validation), ("test", test)):
        items = []
        for n in _parse_ints(spec):
            folder = src_path / f"set{n:02d}"
            for f in ("phase.tif", "cells.png"):
                if not (folder / f).is_file():
                    raise FileNotFoundError(f"usiigaci set {n}: '{folder / f}' not found")
            items.append(
                {"image": [str(folder / "phase.tif")], "label": str(folder / "cells.png"), "name": f"set{n:02d}"}
            )
        doc[section] = items
    out_path.mkdir(parents=True, exist_ok=True)
    (out_path / "cell_instance_seg.json").write_text(json.dumps(doc, indent=2))
    print(
        f"wrote {out_path / 'cell_instance_seg.json'}: "
        + ", ".join(f"{k} {len(v)}" for k, v in doc.items() if k != "description")
    )
    return str(out_path)
