"""Losses: CombinedLoss (paper eq. 2) against a hand computation; SoftJaccardLoss against MONAI and by hand."""

from __future__ import annotations

import math

import pytest
import torch
from monai.losses import DiceLoss

from monai_isl.losses import CombinedLoss, SoftJaccardLoss


def test_combined_loss_by_hand() -> None:
    # two pixels per image, one image: distance pred (10, 0) vs target (13, 1); mask logits (0, 2) vs (1, 0)
    pred = torch.tensor([[[[10.0, 0.0]], [[0.0, 2.0]]]])
    target = torch.tensor([[[[13.0, 1.0]], [[1.0, 0.0]]]])
    mse = ((10 - 13) ** 2 + (0 - 1) ** 2) / 2
    sig = 1 / (1 + math.exp(-2.0))
    bce = (-math.log(0.5) - math.log(1 - sig)) / 2
    assert float(CombinedLoss(alpha=2000.0)(pred, target)) == pytest.approx(mse + 2000.0 * bce, rel=1e-6)
    assert float(CombinedLoss(alpha=0.0)(pred, target)) == pytest.approx(mse, rel=1e-6)
    assert CombinedLoss().alpha == 2000.0


def test_combined_loss_gradients_and_shape_checks() -> None:
    pred = torch.randn(3, 2, 8, 8, requires_grad=True)
    target = torch.cat([torch.rand(3, 1, 8, 8) * 255, (torch.rand(3, 1, 8, 8) > 0.5).float()], 1)
    loss = CombinedLoss()(pred, target)
    loss.backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all()
    with pytest.raises(ValueError, match="B, 2"):
        CombinedLoss()(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4))


def test_soft_jaccard_by_hand_and_against_monai() -> None:
    p = torch.tensor([[[[0.5, 1.0], [0.0, 0.25]]]])
    t = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
    inter, union = 1.5, 1.75 + 2 - 1.5
    assert float(SoftJaccardLoss(smooth=0.0)(p, t)) == pytest.approx(1 - inter / union)
    assert float(SoftJaccardLoss(smooth=1.0)(p, t)) == pytest.approx(1 - (inter + 1) / (union + 1))
    torch.manual_seed(0)
    probs = torch.rand(4, 1, 16, 16)
    target = (torch.rand(4, 1, 16, 16) > 0.6).float()
    for smooth in (1e-5, 1.0):
        monai = DiceLoss(jaccard=True, sigmoid=False, smooth_nr=2 * smooth, smooth_dr=2 * smooth)(probs, target)
        assert float(SoftJaccardLoss(smooth)(probs, target)) == pytest.approx(float(monai), rel=1e-5)
    assert float(SoftJaccardLoss()(torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 4))) == 0.0
