"""Reading and writing microscopy images (TIFF, PNG, NIfTI) with errors that name the file.

Why not MONAI's ``LoadImage``: its PIL reader swaps the two spatial axes of a PNG, ITK takes 15 s to
import, and neither reports a corrupt 16-bit TIFF or a NaN pixel by file name. These readers keep the
native dtype (uint8/uint16/float32), so decoded images can be cached compactly.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

TIFF_SUFFIXES = (".tif", ".tiff")
PNG_SUFFIXES = (".png",)
NIFTI_SUFFIXES = (".nii", ".nii.gz")
SUPPORTED_SUFFIXES = TIFF_SUFFIXES + PNG_SUFFIXES + NIFTI_SUFFIXES
SUPPORTED_DTYPES = (np.uint8, np.uint16, np.int16, np.uint32, np.int32, np.float32, np.float64, np.bool_)
# a 3D array whose last axis is at most this long is read as (H, W, C); otherwise as (C, H, W)
MAX_CHANNELS_LAST = 4


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _to_channel_first(array: np.ndarray, path: Path) -> np.ndarray:
    """Return ``(C, H, W)``: 2D images get one channel; 3D ones are channels-last if the last axis is short."""
    array = np.squeeze(array) if array.ndim > 3 else array
    if array.ndim == 2:
        return array[None]
    if array.ndim == 3:
        if _is_channels_last(array):
            return np.ascontiguousarray(np.moveaxis(array, -1, 0))
        return array
    raise ValueError(f"image '{path}': expected a 2D image or a 2D multi-channel stack, got shape {array.shape}")


def _is_channels_last(array: np.ndarray) -> bool:
    """Whether :func:`_to_channel_first` reads this (squeezed) 3D array as ``(H, W, C)``: colour samples, not pages."""
    return array.ndim == 3 and array.shape[-1] <= MAX_CHANNELS_LAST < min(array.shape[:2])


def describe_planes(path: str | os.PathLike) -> str:
    """What the planes of a multi-plane file are, in words for an error message: an RGB(A) image (colour samples in
    the last axis, as a PNG or a colour TIFF stores them) or a stack of pages (a z-stack, time series or channels).

    Reads the file again (only called when a channel count is wrong); an unreadable file is described as such.
    """
    path = Path(path)
    try:
        array = np.asarray(_read_array(path))
    except (OSError, ValueError):
        return "an unreadable file"
    array = np.squeeze(array) if array.ndim > 3 else array
    if array.ndim < 3:
        return "a single-plane image"
    if _is_channels_last(array):
        colour = {3: "an RGB image", 4: "an RGBA image", 2: "a grey image with an alpha channel"}
        return f"{colour.get(array.shape[-1], 'a colour image')} ({array.shape[-1]} colour channels)"
    return f"a stack of {array.shape[0]} pages (a z-stack? a time series? several channels in one file?)"


def _read_array(path: Path) -> np.ndarray:
    """The file's pixels as the reader library returns them (no axis reordering); errors name the file."""
    suffix = _suffix(path)
    if suffix not in SUPPORTED_SUFFIXES:
        raise ValueError(f"image '{path}': unsupported file type '{suffix}', expected one of {SUPPORTED_SUFFIXES}")
    try:
        if suffix in TIFF_SUFFIXES:
            import tifffile

            return tifffile.imread(path)
        if suffix in PNG_SUFFIXES:
            from PIL import Image

            with Image.open(path) as img:
                return np.asarray(img)
        import nibabel as nib

        return np.asanyarray(nib.load(str(path)).dataobj)
    except Exception as err:  # corrupt, truncated or not an image at all
        raise ValueError(f"could not read image '{path}': {type(err).__name__}: {err}") from err


def read_image(path: str | os.PathLike, check_finite: bool = True) -> np.ndarray:
    """Read a 2D (multi-channel) image as a ``(C, H, W)`` array in its native dtype.

    Args:
        path: a ``.tif``/``.tiff``, ``.png`` or ``.nii``/``.nii.gz`` file.
        check_finite: raise if a floating-point image holds NaN or inf (they would poison training).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: unsupported extension or dtype, unreadable/corrupt file, not 2D, or non-finite values.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: '{path}'")
    array = np.asarray(_read_array(path))
    if array.size == 0:
        raise ValueError(f"could not read image '{path}': no pixel data (empty, truncated or corrupt file)")
    if not any(array.dtype == d for d in SUPPORTED_DTYPES):
        raise ValueError(f"image '{path}': unsupported dtype {array.dtype}, expected 8/16/32-bit integer or float")
    array = _to_channel_first(array, path)
    if check_finite and np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise ValueError(f"image '{path}' contains NaN or infinite values")
    return array


def umask_mode(path: str | os.PathLike) -> None:
    """Give a file written through ``tempfile.mkstemp`` (mode 0600) the mode a plain ``open`` would: 0666 & ~umask.

    Predictions, labels, models and exports are shared with colleagues on the same server; a private temp-file mode
    would follow them through the atomic rename.
    """
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def write_image(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write a ``(H, W)`` or ``(C, H, W)`` array atomically (temp file + rename) as TIFF or PNG.

    TIFF keeps any dtype (float32 predictions, uint16/uint32 labels); PNG takes uint8/uint16 only.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    suffix = _suffix(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        if suffix in TIFF_SUFFIXES:
            import tifffile

            tifffile.imwrite(tmp, array, compression="zlib" if array.dtype != np.float32 else None)
        elif suffix in PNG_SUFFIXES:
            from PIL import Image

            if array.dtype not in (np.uint8, np.uint16):
                raise ValueError(f"PNG '{path}' must be uint8 or uint16, got {array.dtype}")
            Image.fromarray(np.moveaxis(array, 0, -1) if array.ndim == 3 else array).save(tmp, format="PNG")
        else:
            raise ValueError(f"cannot write '{path}': expected a .tif/.tiff or .png file name")
        umask_mode(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
