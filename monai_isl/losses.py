"""Losses of the segmentation fine-tuning (paper, eq. 2) and a soft Jaccard loss on probabilities."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["CombinedLoss", "SoftJaccardLoss"]


class SoftJaccardLoss(nn.Module):
    """``1 - (sum(p * t) + smooth) / (sum(p) + sum(t) - sum(p * t) + smooth)`` per image, mean over the batch.

    ``input`` holds probabilities (after the activation), ``target`` 0/1, both ``(B, ...)``; all non-batch
    dimensions of an image are pooled. A differentiable surrogate of the IoU the segmentation is scored with;
    ``smooth`` keeps empty images finite (both empty gives loss 0, like the metric's both-empty rule). Same
    value as MONAI's ``DiceLoss(jaccard=True, sigmoid=False, smooth_nr=2 * smooth, smooth_dr=2 * smooth)`` for
    one channel (MONAI doubles numerator and denominator).
    """

    def __init__(self, smooth: float = 1.0) -> None:
        super().__init__()
        self.smooth = smooth

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if input.shape != target.shape:
            raise ValueError(f"input and target shapes differ: {tuple(input.shape)}, {tuple(target.shape)}")
        p = input.flatten(1)
        t = target.flatten(1).to(p.dtype)
        inter = (p * t).sum(1)
        union = p.sum(1) + t.sum(1) - inter
        return (1.0 - (inter + self.smooth) / (union + self.smooth)).mean()


class CombinedLoss(nn.Module):
    """Paper eq. 2: ``MSE(distance) + alpha * BCEWithLogits(mask)``.

    ``input`` ``(B, 2, H, W)``: channel 0 the predicted distance map, channel 1 the mask logit; ``target``
    ``(B, 2, H, W)``: channel 0 the distance target on the 0..255 scale, channel 1 the mask (0/1). The
    distance error is in squared 0..255 units (up to thousands early in training) while the BCE is below 1;
    ``alpha`` (2000 in the paper) rebalances the two so that the mask term is not drowned. Both terms are
    means over all pixels of the batch; the mask channel takes logits (the numerically stable BCE).
    """

    def __init__(self, alpha: float = 2000.0) -> None:
        super().__init__()
        self.alpha = alpha

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if input.ndim < 3 or input.shape[1] != 2 or input.shape != target.shape:
            raise ValueError(
                f"expected input and target (B, 2, ...), same shape, got {tuple(input.shape)}, {tuple(target.shape)}"
            )
        mse = F.mse_loss(input[:, 0], target[:, 0].to(input.dtype))
        bce = F.binary_cross_entropy_with_logits(input[:, 1], target[:, 1].to(input.dtype))
        return mse + self.alpha * bce
