"""The ``paper`` preset reproduces every row of the paper's Supplementary Tables 1-2 (epochs from steps and N)."""

from __future__ import annotations

import pytest

from monai_isl import presets

# (bundle, init, training images N, epochs) transcribed from Supplementary Tables 1-2 (../shared/paper/)
PAPER_ROWS = [
    ("dapi_isl", "*", 384, 1000),
    ("nucleus_seg", "imagenet", 1, 5000),
    ("nucleus_seg", "imagenet", 2, 5000),
    ("nucleus_seg", "imagenet", 10, 1000),
    ("nucleus_seg", "imagenet", 50, 400),
    ("nucleus_seg", "imagenet", 100, 200),
    ("nucleus_seg", "isl", 1, 20000),
    ("nucleus_seg", "isl", 2, 20000),
    ("nucleus_seg", "isl", 10, 4000),
    ("nucleus_seg", "isl", 50, 800),
    ("nucleus_seg", "isl", 100, 400),
    ("cellmask_isl", "*", 65, 4000),
    ("cell_instance_seg", "imagenet", 1, 10000),
    ("cell_instance_seg", "imagenet", 10, 2000),
    ("cell_instance_seg", "imagenet", 50, 400),
    ("cell_instance_seg", "imagenet", 80, 250),
    ("cell_instance_seg", "isl", 2, 10000),
    ("cell_instance_seg", "isl", 80, 250),
]


@pytest.mark.parametrize("bundle, init, n, table_epochs", PAPER_ROWS)
def test_paper_preset_matches_the_supplementary_tables(bundle: str, init: str, n: int, table_epochs: int) -> None:
    steps = presets.training_steps("paper", bundle, init, n)
    assert presets.epochs(steps, n, presets.batch_size("paper", n)) == table_epochs
    assert presets.roi("paper") == [512, 512] and presets.num_samples("paper") == 5


def test_learning_rates_and_auto() -> None:
    assert presets.learning_rate("paper", "dapi_isl") == 0.1  # Supp. Table 1
    assert presets.learning_rate("paper", "nucleus_seg", "isl") == 0.01
    assert presets.learning_rate("cpu", "nucleus_seg", "isl") < presets.learning_rate("cpu", "nucleus_seg", "none")
    assert presets.resolve("auto", "cuda:0").name == "paper" and presets.resolve("auto", "cpu").name == "cpu"


@pytest.mark.parametrize("bad", ["fast", "", None])
def test_unknown_preset_names_the_choices(bad: object) -> None:
    with pytest.raises(ValueError, match="expected one of"):
        presets.resolve(bad)


def test_epochs_refuses_empty_training() -> None:
    with pytest.raises(ValueError, match="training images"):
        presets.epochs(100, 0, 1)
