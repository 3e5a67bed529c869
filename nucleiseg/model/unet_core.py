"""The U-Net's layers (Ronneberger et al. 2015, arXiv:1505.04597, Fig. 1), with padded convolutions.

This file imports nothing but PyTorch, so exported model packages can ship it as their network
source (bioimage.io's ``pytorch_state_dict`` weights load it as a stand-alone file) and ONNX
export traces it without nucleiseg's Python-side padding. :class:`~nucleiseg.model.unet.UNet`,
which the package uses, adds the padding of any-size inputs and its configuration on top.

Each level has one block of two 3x3 convolutions with BatchNorm and ReLU; 2x2 max pooling goes
down, a 2x2 transposed convolution goes up, skips are concatenated, and a 1x1 convolution gives
the logits. The network is defined by its tuple of feature widths (as MONAI's BasicUNet,
``monai/networks/nets/basic_unet.py``): depth is ``len(features) - 1`` poolings, and by the kind
of block (:data:`BLOCKS`): the plain block of the U-Net paper ("conv"), a residual block (He et
al. 2016, arXiv:1512.03385, Fig. 2, with a 1x1 projection shortcut where the width changes), and
either followed by concurrent spatial and channel squeeze & excitation (Roy et al. 2018,
arXiv:1803.02579: "+scse", as in the encoder-decoder networks of the TGS Salt and DSB2018
winners).
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


class ResidualBlock(nn.Module):
    """(3x3 conv, BatchNorm, ReLU, 3x3 conv, BatchNorm) plus the input, then ReLU (He et al. 2016,
    arXiv:1512.03385, Fig. 2); the input goes through a 1x1 conv and BatchNorm where the width
    changes (their projection shortcut, eq. 2). Keeps the spatial size."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.shortcut = (nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))
                         if cin != cout else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class SqueezeExcitation(nn.Module):
    """Concurrent spatial and channel squeeze & excitation, scSE (Roy et al. 2018,
    arXiv:1803.02579, eq. 1-3): the input scaled per channel by a gate from its spatial mean
    (two 1x1 convs, reduction 2) plus the input scaled per pixel by a gate from a 1x1 conv to one
    channel; the two recalibrations are added (their "addition" aggregation)."""

    def __init__(self, channels: int, reduction: int = 2):
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.channel = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True),
                                     nn.Conv2d(hidden, channels, 1), nn.Sigmoid())
        self.spatial = nn.Sequential(nn.Conv2d(channels, 1, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (self.channel(x) + self.spatial(x))


#: The kinds of block a U-Net level can have (see the module docstring).
BLOCKS = ("conv", "residual", "conv+scse", "residual+scse")


def conv_block(cin: int, cout: int, block: str = "conv") -> nn.Module:
    """One level's block, (N, cin, H, W) -> (N, cout, H, W), of kind ``block`` (one of
    :data:`BLOCKS`). "conv" is :class:`DoubleConv` itself, so plain U-Nets keep their weights' names.

    Raises
    ------
    ValueError
        if ``block`` is not one of :data:`BLOCKS`.
    """
    if block not in BLOCKS:
        raise ValueError(f"block must be one of {', '.join(BLOCKS)}, got {block!r}")
    kind, _, gate = block.partition("+")
    body = DoubleConv(cin, cout) if kind == "conv" else ResidualBlock(cin, cout)
    return nn.Sequential(body, SqueezeExcitation(cout)) if gate else body


class Up(nn.Module):
    """2x2 transposed convolution up, concatenate the skip, one block (:func:`conv_block`)."""

    def __init__(self, cin: int, cskip: int, cout: int, block: str = "conv"):
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cskip, 2, stride=2)
        self.conv = conv_block(2 * cskip, cout, block)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([self.up(x), skip], dim=1))


class UNetCore(nn.Module):
    """U-Net mapping (N, in_channels, H, W) float images to (N, out_channels, H, W) logits.

    H and W must be multiples of ``2**(len(features) - 1)`` (no padding here). ``block`` is the
    kind of every level's block, one of :data:`BLOCKS`.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 3,
                 features: tuple[int, ...] | list[int] = (16, 32, 64, 128, 256), block: str = "conv"):
        super().__init__()
        f = tuple(int(v) for v in features)
        self.inc = conv_block(in_channels, f[0], block)
        self.downs = nn.ModuleList(conv_block(f[i], f[i + 1], block) for i in range(len(f) - 1))
        self.ups = nn.ModuleList(Up(f[i + 1], f[i], f[i], block) for i in reversed(range(len(f) - 1)))
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
