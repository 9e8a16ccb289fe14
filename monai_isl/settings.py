"""Checks of the user-facing bundle settings, run first in every config's ``initialize``, before any file is written.

Two kinds of mistakes fail late or not at all without them: a value of the wrong type or range (``--learning_rate
abc`` fails inside ``torch.optim.Adam``; ``--roi_size "[0,0]"`` inside a convolution after TensorBoard files were
written) and a misspelt or misplaced setting (``--max_epoch 1`` silently trains the default 100 epochs;
``--learning_rate`` given to inference is silently unused). :func:`check` validates values by the setting's name
(one rule per name, :data:`RULES`); :func:`check_command_line` compares the command line's ``--key`` overrides with
the ids of the config files being run and names the nearest known id. Both raise
:class:`~monai_isl.errors.SettingError`, whose message ends the run (``monai_isl.errors``).
"""

from __future__ import annotations

import ast
import difflib
import math
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from .errors import SettingError

#: ``monai.bundle run``'s own arguments (not config ids)
RUN_ARGUMENTS = frozenset(
    {"run_id", "init_id", "final_id", "meta_file", "config_file", "logging_file", "tracking", "args_file"}
)
#: the network's total stride (densenet121 encoder: 5 halvings); crops and windows smaller than this are refused
MIN_SIZE = 32
BOOLEAN_WORDS = {"true", "false", "1", "0", "yes", "no", "on", "off"}


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise SettingError(f"setting '{name}': expected a number, got {value!r}")
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise SettingError(f"setting '{name}': expected a number, got {value!r}") from None
    if not math.isfinite(out):
        raise SettingError(f"setting '{name}': expected a finite number, got {value!r}")
    return out


def _integer(name: str, value: Any, minimum: int) -> None:
    number = _number(name, value)
    if number != int(number) or number < minimum:
        raise SettingError(f"setting '{name}': expected a whole number >= {minimum}, got {value!r}")


def positive_int(name: str, value: Any) -> None:
    _integer(name, value, 1)


def non_negative_int(name: str, value: Any) -> None:
    _integer(name, value, 0)


def positive_float(name: str, value: Any) -> None:
    if _number(name, value) <= 0:
        raise SettingError(f"setting '{name}': expected a number > 0, got {value!r}")


def non_negative(name: str, value: Any) -> None:
    if _number(name, value) < 0:
        raise SettingError(f"setting '{name}': expected a number >= 0, got {value!r}")


def unit_interval(name: str, value: Any) -> None:
    if not 0.0 <= _number(name, value) <= 1.0:
        raise SettingError(f"setting '{name}': expected a number in [0, 1], got {value!r}")


def fraction(name: str, value: Any) -> None:
    if not 0.0 <= _number(name, value) < 1.0:
        raise SettingError(f"setting '{name}': expected a number in [0, 1), got {value!r}")


def size_2d(name: str, value: Any) -> None:
    """A crop or window size: two whole numbers >= :data:`MIN_SIZE` (the network's stride), e.g. ``[256, 256]``."""
    ok = isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2
    if ok:
        try:
            ok = all(not isinstance(v, bool) and float(v) == int(float(v)) and int(float(v)) >= MIN_SIZE for v in value)
        except (TypeError, ValueError):
            ok = False
    if not ok:
        raise SettingError(
            f"setting '{name}': expected two whole numbers >= {MIN_SIZE} (height, width; the network halves the "
            f"image 5 times), e.g. [256, 256], got {value!r}"
        )


def percentiles(name: str, value: Any) -> None:
    ok = isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2
    if ok:
        try:
            lo, hi = (_number(name, v) for v in value)
            ok = 0.0 <= lo < hi <= 100.0
        except SettingError:
            ok = False
    if not ok:
        raise SettingError(f"setting '{name}': expected [low, high] with 0 <= low < high <= 100, got {value!r}")


def auto_or_non_negative(name: str, value: Any) -> None:
    """A post-processing value fitted to the model after training (the h-maxima height, the minimum object area):
    ``auto`` or a number >= 0."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return
    try:
        ok = _number(name, value) >= 0
    except SettingError:
        ok = False
    if not ok:
        raise SettingError(f"setting '{name}': expected 'auto' or a number >= 0, got {value!r}")


def boolean(name: str, value: Any) -> None:
    if isinstance(value, bool) or (isinstance(value, (int, float)) and value in (0, 1)):
        return
    if not (isinstance(value, str) and value.strip().lower() in BOOLEAN_WORDS):
        raise SettingError(f"setting '{name}': expected true or false, got {value!r}")


def choice(*options: str) -> Callable[[str, Any], None]:
    def check_choice(name: str, value: Any) -> None:
        if str(value).lower() not in options:
            raise SettingError(f"setting '{name}': expected one of {list(options)}, got {value!r}")

    return check_choice


def zoom_range(name: str, value: Any) -> None:
    """``[min_zoom, max_zoom]``: two positive numbers, the first not above the second (``[1, 1]``: no zoom)."""
    expected = f"setting '{name}': expected [min_zoom, max_zoom] with 0 < min_zoom <= max_zoom, e.g. [0.75, 1.33]"
    try:
        if isinstance(value, str):
            raise TypeError
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise SettingError(f"{expected}, got {value!r}") from None
    if not 0 < low <= high < math.inf:
        raise SettingError(f"{expected}, got {value!r}")


def _preset(name: str, value: Any) -> None:
    from .presets import PRESETS

    choice("auto", *PRESETS)(name, value)


#: one rule per setting name, wherever it appears
RULES: dict[str, Callable[[str, Any], None]] = {
    "learning_rate": positive_float,
    "head_learning_rate": positive_float,
    "max_epochs": positive_int,
    "batch_size": positive_int,
    "num_samples": positive_int,
    "val_interval": positive_int,
    "sw_batch_size": positive_int,
    "in_channels": positive_int,
    "num_workers": non_negative_int,
    "save_every_n_iterations": non_negative_int,
    "seed": non_negative_int,
    "min_free_mb": non_negative,
    "cache_ram_gb": non_negative,
    "cache_rate": unit_interval,
    "sw_overlap": fraction,
    "roi_size": size_2d,
    "sw_roi_size": size_2d,
    "input_percentiles": percentiles,
    "target_percentiles": percentiles,
    "h": auto_or_non_negative,
    "min_area": auto_or_non_negative,
    "threshold": unit_interval,
    "mask_threshold": unit_interval,
    "init": choice("isl", "imagenet", "none"),
    "cache": choice("auto", "ram", "disk", "none"),
    "preset": _preset,
    "amp": boolean,
    "resume": boolean,
    "calibrate": boolean,
    "channels_last": boolean,
    "progress": boolean,
    "write_overlay": boolean,
    "zoom_range": zoom_range,
    "intensity_augmentation": boolean,
    "rescale_cells": boolean,
}


def check(**settings: Any) -> None:
    """Validate each named setting by its rule in :data:`RULES` (unknown names are a programming error).

    Raises:
        SettingError: the first wrong value, naming the setting and the value given.
    """
    for name, value in settings.items():
        if name not in RULES:
            raise KeyError(f"monai_isl.settings.check: no rule for {name!r}")
        RULES[name](name, value)


def check_file(name: str, path: Any, hint: str = "") -> None:
    """A setting that names an existing file (a checkpoint, weights)."""
    if path in (None, "") or not Path(str(path)).is_file():
        raise SettingError(f"setting '{name}': file not found: {path!r}" + (f"; {hint}" if hint else ""))


# ---------------------------------------------------------------------------------------------- command line
def _ids(node: Any, prefix: str = "") -> Iterable[str]:
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, list):
        items = ((str(i), v) for i, v in enumerate(node))
    else:
        return
    for key, value in items:
        if str(key).startswith("_") and prefix == "":
            continue
        name = f"{prefix}#{key}" if prefix else str(key)
        yield name
        yield from _ids(value, name)


def config_ids(config_files: Sequence[str | Path]) -> set[str]:
    """Every id (``a``, ``a#b``, ``a#0``, and overlay keys such as ``train#sampler``) of the merged config files."""
    from monai.bundle import ConfigParser

    ids: set[str] = set()
    for path in config_files:
        content = ConfigParser.load_config_file(str(path))
        ids.update(_ids(content))
    return ids


def _as_files(value: str) -> list[str]:
    text = value.strip()
    if text.startswith("["):
        try:
            return [str(v) for v in ast.literal_eval(text)]
        except (ValueError, SyntaxError):
            pass
    return [text]


def command_line_overrides(argv: Sequence[str]) -> dict[str, str]:
    """``{key: value}`` of the ``--key value`` / ``--key=value`` arguments after ``run``, as fire reads them."""
    args = list(argv)
    out: dict[str, str] = {}
    i = args.index("run") + 1 if "run" in args else 1
    while i < len(args):
        arg = args[i]
        if arg.startswith("--"):
            key, eq, value = arg[2:].partition("=")
            if not eq:
                has_value = i + 1 < len(args) and not args[i + 1].startswith("--")
                value = args[i + 1] if has_value else "true"
                i += 1 if has_value else 0
            out[key.replace("::", "#")] = value
        i += 1
    return out


def _is_bundle_command(argv: Sequence[str]) -> bool:
    return (
        len(argv) > 1 and Path(argv[0]).parent.name == "bundle" and "monai" in Path(argv[0]).parts and argv[1] == "run"
    )


def check_command_line(argv: Sequence[str] | None = None) -> None:
    """Refuse ``python -m monai.bundle run`` overrides that are no id of the configs being run.

    A key is known if it is an id of the loaded config files, or a new key under an existing id (``--train#x``
    adds to ``train``). Otherwise the message names the nearest id, or the sibling config that does use it
    (``--learning_rate`` given to inference). Does nothing outside ``monai.bundle run`` (the sweep, MONAI Label and
    the tests run bundles in-process with keyword overrides).

    Raises:
        SettingError: an unknown or unused setting.
    """
    argv = list(sys.argv if argv is None else argv)
    if not _is_bundle_command(argv):
        return
    overrides = command_line_overrides(argv)
    if "config_file" not in overrides:
        return
    files = _as_files(overrides["config_file"])
    ids = config_ids(files)
    for key in overrides:
        if key in RUN_ARGUMENTS or key in ids or ("#" in key and key.rsplit("#", 1)[0] in ids):
            continue
        used = _used_by_siblings(key, files)
        names = ", ".join(Path(f).name for f in files)
        if used:
            raise SettingError(f"--{key} is not used by {names}: it is a setting of {', '.join(used)}")
        nearest = difflib.get_close_matches(key, sorted(ids), n=1, cutoff=0.6)
        hint = f"; did you mean --{nearest[0]}?" if nearest else ""
        raise SettingError(f"--{key} is not a setting of {names}{hint}")


def _used_by_siblings(key: str, files: Sequence[str]) -> list[str]:
    folder = Path(files[0]).parent
    out = []
    for other in sorted(folder.glob("*.yaml")):
        if str(other) in map(str, files) or other.name in (Path(f).name for f in files):
            continue
        try:
            if key in config_ids([other]):
                out.append(other.name)
        except Exception:  # an unreadable sibling says nothing about this key
            continue
    return out
