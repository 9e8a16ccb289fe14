"""Setting checks and the error hook: wrong values and misspelt settings are named before any work starts."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from monai_isl import settings
from monai_isl.errors import MonaiIslError, SettingError, format_user_error, user_message

BUNDLE = ["/site-packages/monai/bundle/__main__.py", "run"]


@pytest.mark.parametrize(
    "name, value",
    [
        ("learning_rate", "abc"),
        ("learning_rate", 0),
        ("learning_rate", float("nan")),
        ("max_epochs", -1),
        ("max_epochs", 2.5),
        ("roi_size", [0, 0]),
        ("roi_size", [256]),
        ("roi_size", "256"),
        ("sw_roi_size", [16, 16]),
        ("sw_overlap", 1.0),
        ("h", "abc"),
        ("h", -1),
        ("min_area", "small"),
        ("min_area", -5),
        ("input_percentiles", [99, 1]),
        ("init", "imagenette"),
        ("preset", "fast"),
        ("amp", "maybe"),
        ("batch_size", True),
        ("zoom_range", [1.3, 0.7]),
        ("zoom_range", [0, 1.3]),
        ("zoom_range", 1.3),
        ("zoom_range", "12"),
        ("intensity_augmentation", "sometimes"),
    ],
)
def test_wrong_values_name_the_setting(name: str, value: object) -> None:
    with pytest.raises(SettingError, match=f"setting .{name}.*{re.escape(repr(value)[:3])}"):
        settings.check(**{name: value})


@pytest.mark.parametrize(
    "name, value",
    [
        ("learning_rate", "1e-4"),
        ("roi_size", [256, 320]),
        ("h", "auto"),
        ("h", 10),
        ("min_area", 250),
        ("amp", "false"),
        ("seed", 0),
        ("zoom_range", [0.75, 1.33]),
        ("zoom_range", [1, 1]),
        ("intensity_augmentation", False),
    ],
)
def test_right_values_pass(name: str, value: object) -> None:
    settings.check(**{name: value})


def test_misspelt_setting_names_the_nearest(tmp_path) -> None:
    train = "bundles/dapi_isl/configs/train.yaml"
    with pytest.raises(SettingError, match="--max_epoch is not a setting of train.yaml; did you mean --max_epochs"):
        settings.check_command_line([*BUNDLE, "--config_file", train, "--max_epoch", "1"])
    with pytest.raises(SettingError, match="not used by inference.yaml: it is a setting of train.yaml"):
        settings.check_command_line(
            [*BUNDLE, "--config_file=bundles/dapi_isl/configs/inference.yaml", "--learning_rate=1"]
        )
    # known ids, nested ids, new keys under an existing id and monai.bundle's own arguments pass
    settings.check_command_line(
        [*BUNDLE, "--config_file", train, "--train#trainer#max_epochs", "2", "--train#new_key", "1", "--run_id", "run"]
    )
    # not a bundle command (the sweep and MONAI Label run bundles in-process): nothing is checked
    settings.check_command_line(["pytest", "--max_epoch", "1"])


def test_user_message_is_found_through_wrappers() -> None:
    try:
        try:
            settings.check(learning_rate="abc")
        except SettingError as err:
            raise RuntimeError("Failed to instantiate component 'x'") from err
    except RuntimeError as wrapped:
        assert user_message(wrapped) == "setting 'learning_rate': expected a number, got 'abc'"
    assert user_message(RuntimeError("a bug elsewhere")) is None
    assert format_user_error("a\nb") == "monai-isl: error: a\n  b"
    assert issubclass(SettingError, (MonaiIslError, ValueError))


def test_hook_prints_the_cause_last() -> None:
    """An uncaught error in a process that imported monai_isl ends with the project's message."""
    code = (
        "import monai_isl\n"
        "from monai_isl.settings import check\n"
        "try:\n    check(roi_size=[0, 0])\n"
        "except Exception as e:\n    raise RuntimeError('Failed to evaluate ConfigExpression') from e\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("monai-isl: error: setting 'roi_size'"), proc.stderr[-2000:]
    assert "Traceback" in proc.stderr  # the traceback stays, for bug reports
