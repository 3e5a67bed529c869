"""The U-Net of nucleiseg models: the layers of :mod:`~nucleiseg.model.unet_core` (Ronneberger
et al. 2015, arXiv:1505.04597, Fig. 1) built from a :class:`~nucleiseg.model.config.UNetConfig`.
Inputs of any size are padded to a multiple of ``2**depth`` (mirrored where possible, the rule of
:mod:`nucleiseg.transforms`) and the logits cropped back.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..transforms import can_mirror, padding_to_multiple
from .config import UNetConfig
from .unet_core import UNetCore


class UNet(UNetCore):
    """U-Net mapping (N, in_channels, H, W) float images to (N, out_channels, H, W) logits.

    Any H, W >= 1: the input is mirror-padded (edge-padded where it is too small to mirror) to a
    multiple of ``2**depth`` and the logits are cropped back.
    """

    def __init__(self, config: UNetConfig | None = None):
        config = config or UNetConfig()
        super().__init__(config.in_channels, config.out_channels, config.features, config.block)
        self.config = config

    @property
    def depth(self) -> int:
        """Number of 2x2 poolings."""
        return self.config.depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = padding_to_multiple((h, w), 2**self.depth)
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect" if can_mirror((h, w), (ph, pw)) else "replicate")
        return self.logits(x)[..., :h, :w]


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` for inference with every BatchNorm2d that directly follows a Conv2d in
    an ``nn.Sequential`` folded into that convolution's weights and bias (PyTorch's
    ``torch.nn.utils.fusion.fuse_conv_bn_eval``) and replaced by an identity: the same function in
    eval mode, one pass over the activations fewer per convolution (13 % less time for two
    880 x 880 tiles in bf16 on a 2-core AMD EPYC; float32 logits within 4e-5 of the unfolded
    network's). ``model`` itself is unchanged; the copy is in eval mode, so it must not be trained
    and does not follow later changes to ``model``'s weights."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded = copy.deepcopy(model).eval()
    for sequence in folded.modules():
        if not isinstance(sequence, nn.Sequential):
            continue
        names = list(sequence._modules)
        for first, second in zip(names, names[1:]):
            conv, norm = sequence._modules[first], sequence._modules[second]
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d) and norm.track_running_stats:
                sequence._modules[first] = fuse_conv_bn_eval(conv, norm)
                sequence._modules[second] = nn.Identity()
    return folded
