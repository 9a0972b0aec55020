"""Small feature networks for the deep methods, sized for a laptop CPU.

``make_backbone(kind, in_dim, out_dim, image_shape)`` returns an ``nn.Module`` mapping a batch
(b, in_dim) float32 to features (b, out_dim). Kinds:

* ``"cnn"``: two 3×3 conv blocks (32 and 64 channels, batch norm, ReLU), max-pooling when
  the image is at least 16 px, adaptive average pooling to 4×4, then a linear layer. For
  digits (8×8) and Fashion-MNIST (28×28); the input is reshaped to (b, 1, h, w).
* ``"mlp"``: in_dim → hidden → hidden → out_dim with batch norm and ReLU, for plain vectors.
* ``"linear"``: one linear layer, for frozen pre-computed features (PCA, raw descriptors).
* ``"auto"``: ``"cnn"`` when ``image_shape`` is known, else ``"mlp"``.

The papers use ImageNet-scale CNNs (AlexNet/VGG/ResNet); these are the CPU-sized stand-ins.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .errors import InvalidParameter

BACKBONES = ("auto", "cnn", "mlp", "linear")


def infer_image_shape(dim: int) -> tuple[int, int] | None:
    """(s, s) when ``dim`` is a perfect square s² with s ≥ 8 (8×8 digits, 28×28 MNIST), else None."""
    s = int(math.isqrt(dim))
    return (s, s) if s * s == dim and s >= 8 else None


class SmallCNN(nn.Module):
    """(b, h·w) grey images → (b, out_dim) features."""

    def __init__(self, image_shape: tuple[int, int], out_dim: int):
        super().__init__()
        self.image_shape = tuple(image_shape)
        pool = nn.MaxPool2d(2) if min(image_shape) >= 16 else nn.Identity()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(inplace=True), pool,
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(),
        )
        self.head = nn.Linear(64 * 16, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.reshape(len(x), 1, *self.image_shape)))


def make_mlp(in_dim: int, out_dim: int, hidden: int = 256) -> nn.Module:
    """in_dim → hidden → hidden → out_dim, batch norm and ReLU between layers."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
        nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
        nn.Linear(hidden, out_dim),
    )


def make_backbone(kind: str, in_dim: int, out_dim: int, image_shape: tuple[int, int] | None = None) -> nn.Module:
    """A feature network (b, in_dim) → (b, out_dim); see the module docstring for the kinds."""
    if kind == "auto":
        kind = "cnn" if image_shape is not None else "mlp"
    if kind == "cnn":
        if image_shape is None or image_shape[0] * image_shape[1] != in_dim:
            raise InvalidParameter(f"backbone='cnn' needs square images; d={in_dim} is not h×w of a known image shape. "
                                   "Use backbone='mlp' for plain vectors")
        return SmallCNN(image_shape, out_dim)
    if kind == "mlp":
        return make_mlp(in_dim, out_dim)
    if kind == "linear":
        return nn.Linear(in_dim, out_dim)
    raise InvalidParameter(f"backbone={kind!r} is not known; use one of {', '.join(BACKBONES)}")
