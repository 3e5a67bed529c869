"""The U-Net (Ronneberger et al. 2015, arXiv:1505.04597, Fig. 1), with padded convolutions.

Each level has two 3x3 convolutions with BatchNorm and ReLU; 2x2 max pooling goes down, a
2x2 transposed convolution goes up, skips are concatenated, and a 1x1 convolution gives the
logits. The network is defined by its tuple of feature widths (as MONAI's BasicUNet,
``monai/networks/nets/basic_unet.py``): depth is ``len(features) - 1`` poolings. Inputs of any
size are padded to a multiple of ``2**depth`` (mirrored where possible, the rule of
:mod:`nucleiseg.transforms`) and the logits cropped back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..transforms import can_mirror, padding_to_multiple
from .config import UNetConfig


class DoubleConv(nn.Sequential):
    """(3x3 conv, BatchNorm, ReLU) twice; keeps the spatial size."""

    def __init__(self, cin: int, cout: int):
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class Up(nn.Module):
    """2x2 transposed convolution up, concatenate the skip, DoubleConv."""

    def __init__(self, cin: int, cskip: int, cout: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cskip, 2, stride=2)
        self.conv = DoubleConv(2 * cskip, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([self.up(x), skip], dim=1))


class UNet(nn.Module):
    """U-Net mapping (N, in_channels, H, W) float images to (N, out_channels, H, W) logits.

    Any H, W >= 1: the input is mirror-padded (edge-padded where it is too small to mirror) to a
    multiple of ``2**depth`` and the logits are cropped back.
    """

    def __init__(self, config: UNetConfig | None = None):
        super().__init__()
        self.config = config or UNetConfig()
        f = self.config.features
        self.inc = DoubleConv(self.config.in_channels, f[0])
        self.downs = nn.ModuleList(DoubleConv(f[i], f[i + 1]) for i in range(len(f) - 1))
        self.ups = nn.ModuleList(Up(f[i + 1], f[i], f[i]) for i in reversed(range(len(f) - 1)))
        self.head = nn.Conv2d(f[0], self.config.out_channels, 1)

    @property
    def depth(self) -> int:
        """Number of 2x2 poolings."""
        return self.config.depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = padding_to_multiple((h, w), 2**self.depth)
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect" if can_mirror((h, w), (ph, pw)) else "replicate")
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(F.max_pool2d(skips[-1], 2)))
        y = skips.pop()
        for up in self.ups:
            y = up(y, skips.pop())
        return self.head(y)[..., :h, :w]
