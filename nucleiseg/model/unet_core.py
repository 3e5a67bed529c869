"""The U-Net's layers (Ronneberger et al. 2015, arXiv:1505.04597, Fig. 1), with padded convolutions.

This file imports nothing but PyTorch, so exported model packages can ship it as their network
source (bioimage.io's ``pytorch_state_dict`` weights load it as a stand-alone file) and ONNX
export traces it without nucleiseg's Python-side padding. :class:`~nucleiseg.model.unet.UNet`,
which the package uses, adds the padding of any-size inputs and its configuration on top.

Each level has two 3x3 convolutions with BatchNorm and ReLU; 2x2 max pooling goes down, a
2x2 transposed convolution goes up, skips are concatenated, and a 1x1 convolution gives the
logits. The network is defined by its tuple of feature widths (as MONAI's BasicUNet,
``monai/networks/nets/basic_unet.py``): depth is ``len(features) - 1`` poolings.
"""

from __future__ import annotations

import torch
from torch import nn


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


class UNetCore(nn.Module):
    """U-Net mapping (N, in_channels, H, W) float images to (N, out_channels, H, W) logits.

    H and W must be multiples of ``2**(len(features) - 1)`` (no padding here).
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 3,
                 features: tuple[int, ...] | list[int] = (16, 32, 64, 128, 256)):
        super().__init__()
        f = tuple(int(v) for v in features)
        self.inc = DoubleConv(in_channels, f[0])
        self.downs = nn.ModuleList(DoubleConv(f[i], f[i + 1]) for i in range(len(f) - 1))
        self.ups = nn.ModuleList(Up(f[i + 1], f[i], f[i]) for i in reversed(range(len(f) - 1)))
        self.head = nn.Conv2d(f[0], out_channels, 1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of an input whose sides are multiples of 2**depth."""
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(nn.functional.max_pool2d(skips[-1], 2)))
        y = skips.pop()
        for up in self.ups:
            y = up(y, skips.pop())
        return self.head(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x)


class SoftmaxUNet(UNetCore):
    """:class:`UNetCore` whose output is the softmax over channels: (N, out_channels, H, W)
    probabilities (of mask - border, border, background for nucleiseg models). The network of
    exported models (ONNX, bioimage.io); same weights (state-dict keys) as the U-Net."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(x), dim=1)
