"""cell_instance_seg's augmentation for unseen fields: the zoom moves image and targets alike, the intensity changes
touch the image only, and ``zoom_range: [1, 1]`` with ``intensity_augmentation: false`` leaves flips and rotations."""

from __future__ import annotations

import numpy as np
import torch
from helpers import REPO
from monai.bundle import ConfigParser
from monai.transforms import Compose


def _augmentation(**overrides: object) -> Compose:
    config = ConfigParser()
    config.read_config(str(REPO / "bundles/cell_instance_seg/configs/train.yaml"))
    config.update(overrides)
    transforms = config.get_parsed_content("train#augmentation")[1:]  # after DeleteItemsd(instances)
    compose = Compose(transforms)
    compose.set_random_state(0)
    return compose


def _dihedral(x: torch.Tensor) -> list[torch.Tensor]:
    """The 8 flips / 90-degree rotations of a (C, H, W) tensor."""
    out = []
    for k in range(4):
        r = torch.rot90(x, k, (1, 2))
        out += [r, torch.flip(r, (1,))]
    return out


def test_zoom_moves_image_and_targets_alike_and_intensity_touches_the_image_only() -> None:
    x = torch.rand(1, 64, 64)
    augment = _augmentation(intensity_augmentation=False)
    zoomed = 0
    for _ in range(20):
        out = augment({"image": x.clone(), "label": torch.cat([x, x])})
        assert out["image"].shape == (1, 64, 64) and out["label"].shape == (2, 64, 64)
        torch.testing.assert_close(out["label"], torch.cat([out["image"], out["image"]]))
        zoomed += not any(torch.allclose(out["image"], d) for d in _dihedral(x))
    assert 3 <= zoomed <= 17  # half the crops, p = 0.5
    augment = _augmentation(zoom_range=[1, 1])
    changed = 0
    for _ in range(20):
        label = torch.cat([x, x])
        out = augment({"image": x.clone(), "label": label.clone()})
        assert any(torch.equal(out["label"], d) for d in _dihedral(label))  # targets: flips / rotations only
        changed += not any(torch.allclose(out["image"][0], d[0]) for d in _dihedral(out["label"]))
    assert changed >= 5  # gamma, contrast, offset, blur, noise on the image


def test_no_zoom_and_no_intensity_leaves_flips_and_rotations() -> None:
    x = torch.from_numpy(np.random.default_rng(0).random((1, 32, 32), dtype=np.float32))
    augment = _augmentation(zoom_range=[1, 1], intensity_augmentation=False)
    for _ in range(10):
        out = augment({"image": x.clone(), "label": torch.cat([x, x])})
        assert any(torch.equal(out["image"], d) for d in _dihedral(x))
