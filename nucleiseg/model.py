"""The U-Net (Ronneberger et al. 2015, arXiv:1505.04597, Fig. 1), with padded convolutions.

Each level has two 3x3 convolutions with BatchNorm and ReLU; 2x2 max pooling goes down, a
2x2 transposed convolution goes up, skips are concatenated, and a 1x1 convolution gives the
logits. The network is defined by its tuple of feature widths (as MONAI's BasicUNet): depth is
``len(features) - 1`` poolings. Inputs of any size are mirror-padded to a multiple of
``2**depth`` and the logits cropped back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class UNetConfig:
    """Everything needed to rebuild a :class:`UNet` (stored in model files as plain data)."""

    in_channels: int = 1
    out_channels: int = 3
    features: tuple[int, ...] = (16, 32, 64, 128, 256)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["features"] = list(self.features)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        return cls(int(d["in_channels"]), int(d["out_channels"]), tuple(int(f) for f in d["features"]))


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

    Any H, W >= 1: the input is mirror-padded (replicate-padded where it is too small to
    mirror) to a multiple of ``2**depth`` and the logits are cropped back.
    """

    def __init__(self, config: UNetConfig | None = None):
        super().__init__()
        self.config = config or UNetConfig()
        f = self.config.features
        if len(f) < 2:
            raise ValueError("a U-Net needs at least two feature widths (one pooling)")
        self.inc = DoubleConv(self.config.in_channels, f[0])
        self.downs = nn.ModuleList(DoubleConv(f[i], f[i + 1]) for i in range(len(f) - 1))
        self.ups = nn.ModuleList(Up(f[i + 1], f[i], f[i]) for i in reversed(range(len(f) - 1)))
        self.head = nn.Conv2d(f[0], self.config.out_channels, 1)

    @property
    def depth(self) -> int:
        return len(self.config.features) - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = 2**self.depth
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            mode = "reflect" if (ph < h and pw < w) else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(F.max_pool2d(skips[-1], 2)))
        y = skips.pop()
        for up in self.ups:
            y = up(y, skips.pop())
        return self.head(y)[..., :h, :w]
