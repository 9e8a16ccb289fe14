"""The transfer activation's calibration recovers a known threshold and writes it into the network."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.inferers import SimpleInferer

from monai_isl.calibration import best_threshold, calibrate_transfer, fit_transfer_activation
from monai_isl.networks.transfer import ShiftedSigmoid


def _blobs(rng: np.random.Generator, shape=(128, 128), n=12) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.int32)
    for i in range(n):
        cy, cx, r = rng.uniform(10, shape[0] - 10), rng.uniform(10, shape[1] - 10), rng.uniform(4, 9)
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] = i + 1
    return labels


@pytest.mark.parametrize("threshold", [0.27, 0.5, 0.8])
def test_known_threshold_is_recovered(threshold: float) -> None:
    """Outputs that exceed ``threshold`` exactly on the labels: the fit finds it (within noise) with IoU 1."""
    rng = np.random.default_rng(0)
    labels = [_blobs(rng) for _ in range(3)]
    # foreground in (t + 0.05, 1.2), background in (-0.1, t - 0.05): the only perfect thresholds lie in between
    outputs = [
        np.where(lab > 0, rng.uniform(threshold + 0.05, 1.2, lab.shape), rng.uniform(-0.1, threshold - 0.05, lab.shape))
        for lab in labels
    ]
    fit = fit_transfer_activation(outputs, labels)
    assert fit.shift == pytest.approx(threshold, abs=0.01)  # the middle of the gap
    assert fit.train_iou == pytest.approx(1.0)
    # independent check: thresholding by hand at the fitted shift gives the same IoU
    x, y = np.concatenate([o.ravel() for o in outputs]), np.concatenate([lab.ravel() for lab in labels]) > 0
    assert np.sum((x >= fit.shift) & y) / np.sum((x >= fit.shift) | y) == pytest.approx(fit.train_iou, abs=1e-6)
    # the paper's fixed 0.5 is only perfect when the threshold is 0.5
    assert (fit.train_iou_paper > 0.99) == (threshold == 0.5)
    assert fit.slope > 1.0  # clean separation: a steeper sigmoid lowers the soft Jaccard loss


def test_noisy_threshold_matches_brute_force() -> None:
    """With overlapping classes the histogram search agrees with a brute-force scan of all thresholds."""
    rng = np.random.default_rng(1)
    lab = _blobs(rng, n=20)
    out = (lab > 0) * 0.4 + rng.normal(0, 0.15, lab.shape)
    t, iou = best_threshold(out, lab)
    x, y = out.ravel(), lab.ravel() > 0
    brute = max(np.sum((x >= c) & y) / np.sum((x >= c) | y) for c in np.linspace(x.min(), x.max(), 400))
    assert iou == pytest.approx(brute, abs=0.01)
    assert 0.0 < t < 0.4


def test_no_foreground_is_refused() -> None:
    with pytest.raises(ValueError, match="no foreground"):
        fit_transfer_activation([np.ones((8, 8))], [np.zeros((8, 8))])


def test_calibration_writes_the_activation_buffers() -> None:
    """calibrate_transfer runs the unet, stores shift/slope in ShiftedSigmoid, and they survive a state dict."""
    rng = np.random.default_rng(2)
    lab = _blobs(rng)

    class Scale(torch.nn.Module):  # a stand-in "ISL network": predicts 0.3 * label + small noise
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, :1] * 0.3

    network = torch.nn.Sequential(Scale(), ShiftedSigmoid(0.5, 1.0))
    image = torch.as_tensor((lab > 0)[None] + rng.normal(0, 0.02, (1, *lab.shape)), dtype=torch.float32)
    fit = calibrate_transfer(network, [{"image": image, "label": torch.as_tensor(lab[None])}], SimpleInferer())
    assert fit is not None and 0.1 < fit["shift"] < 0.2  # the middle of the gap between noise (~0) and 0.3
    assert float(network[1].shift) == pytest.approx(fit["shift"])
    assert float(network[1].slope) == pytest.approx(fit["slope"])
    restored = torch.nn.Sequential(Scale(), ShiftedSigmoid(0.5, 1.0))
    restored.load_state_dict(network.state_dict())
    assert float(restored[1].shift) == pytest.approx(fit["shift"])
    # disabled: the paper's fixed activation stays
    fixed = torch.nn.Sequential(Scale(), ShiftedSigmoid(0.5, 1.0))
    assert calibrate_transfer(fixed, [], SimpleInferer(), enabled=False) is None
    assert float(fixed[1].shift) == 0.5
