"""The training loss: pixel-wise cross-entropy over (mask - border, border, background) plus soft
Dice over the first two channels.

The cross-entropy is weighted either per class, ``(1, border_weight, 1)`` (default), or per pixel
by the U-Net weight map (Ronneberger et al. 2015, arXiv:1505.04597, eq. 2), normalised by the sum
of the weights. Soft Dice (Milletari et al., "V-Net", 3DV 2016, eq. 1, with +1 smoothing) is
1 - 2 |P T| / (|P| + |T|) per channel over the batch, averaged over the channels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..targets.border import BORDER, INTERIOR


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, channels: tuple[int, ...] = (INTERIOR, BORDER),
                   eps: float = 1.0) -> torch.Tensor:
    """1 - mean soft Dice over ``channels`` of softmax(logits) vs one-hot(target).

    ``logits`` (N, C, H, W), ``target`` (N, H, W) int64 class indices -> scalar tensor.
    """
    prob = torch.softmax(logits.float(), dim=1)
    losses = []
    for c in channels:
        p, t = prob[:, c], (target == c).float()
        inter = (p * t).sum()
        losses.append(1 - (2 * inter + eps) / (p.sum() + t.sum() + eps))
    return torch.stack(losses).mean()


class SegmentationLoss:
    """Weighted cross-entropy + ``dice_weight`` x soft Dice (see the module docstring).

    ``border_weight`` weighs the border class of the cross-entropy when no pixel weights are
    given; ``device`` is where the class weights live.
    """

    def __init__(self, border_weight: float, dice_weight: float, device: torch.device):
        self.class_weights = torch.ones(3, device=device)
        self.class_weights[BORDER] = border_weight
        self.dice_weight = dice_weight

    def __call__(self, logits: torch.Tensor, target: torch.Tensor,
                 pixel_weights: torch.Tensor | None = None) -> torch.Tensor:
        """``logits`` (N, 3, H, W), ``target`` (N, H, W) int64, ``pixel_weights`` (N, H, W) or None."""
        if pixel_weights is None:
            ce = F.cross_entropy(logits.float(), target, weight=self.class_weights)
        else:
            ce = (F.cross_entropy(logits.float(), target, reduction="none") * pixel_weights).sum() / pixel_weights.sum()
        return ce + self.dice_weight * soft_dice_loss(logits, target)
