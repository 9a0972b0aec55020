"""Random image augmentations for small grey images (8×8 digits, 28×28 Fashion-MNIST), batched in torch.

The contrastive methods (SSCQ) learn by asking two random views of one image to agree. The
papers use the SimCLR recipe for colour photographs (resized crop, flip, colour jitter, grey
scale, blur); for small grey images of digits and clothes we keep what makes sense there and
drop the rest (no flips: a mirrored 2 is not a 2; no colour):

* a random affine warp — shift (the "random crop"), small rotation and zoom — in one
  ``grid_sample``; pixels that come in from outside are filled with the image's background
  (its minimum), not with zero, so standardised inputs keep their background;
* a brightness/contrast jitter (the grey-level analogue of colour jitter);
* random erasing of one small rectangle (Zhong et al. 2020), filled with the background;
* additive Gaussian noise.

Every draw comes from the ``torch.Generator`` passed in, so a seeded generator gives the same
views on every run. Images travel flat: ``augment(x (b, h·w), image_shape=(h, w), gen)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class GreyAugment:
    """Strengths of each augmentation; ``GreyAugment()(x, (h, w), gen)`` returns a view (b, h·w).

    max_shift : largest translation, as a fraction of the image side (0.125 = 1 px on 8×8).
    max_rotation : largest rotation in degrees (either way).
    zoom : (low, high) scale factor; < 1 zooms in, i.e. crops a smaller window.
    contrast, brightness : multiplicative jitter in [1 − contrast, 1 + contrast] and additive
        jitter in ±brightness · (image std).
    erase_prob, erase_area : chance of erasing one rectangle, and its (low, high) area fraction.
    noise : standard deviation of the added Gaussian noise, in units of the image's std.
    """

    max_shift: float = 0.125
    max_rotation: float = 15.0
    zoom: tuple[float, float] = (0.85, 1.1)
    contrast: float = 0.3
    brightness: float = 0.2
    erase_prob: float = 0.5
    erase_area: tuple[float, float] = (0.05, 0.2)
    noise: float = 0.1

    def __call__(self, x: torch.Tensor, image_shape: tuple[int, int], gen: torch.Generator) -> torch.Tensor:
        b = len(x)
        h, w = image_shape
        img = x.reshape(b, 1, h, w)
        dev = x.device

        def uniform(low, high, *shape):
            return (torch.rand(shape, generator=gen) * (high - low) + low).to(dev)

        background = img.amin(dim=(1, 2, 3), keepdim=True)
        spread = img.std(dim=(1, 2, 3), keepdim=True) + 1e-6

        # affine warp: rotation θ, zoom s, shift t (in grid_sample's [-1, 1] coordinates)
        theta = uniform(-1, 1, b) * math.radians(self.max_rotation)
        scale = uniform(self.zoom[0], self.zoom[1], b)
        shift = uniform(-1, 1, b, 2) * (2 * self.max_shift)
        cos, sin = torch.cos(theta) * scale, torch.sin(theta) * scale
        affine = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
        grid = F.affine_grid(affine, (b, 1, h, w), align_corners=False)
        img = F.grid_sample(img - background, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + background

        # grey-level jitter around the image mean
        mean = img.mean(dim=(1, 2, 3), keepdim=True)
        img = (img - mean) * uniform(1 - self.contrast, 1 + self.contrast, b, 1, 1, 1) + mean \
            + uniform(-1, 1, b, 1, 1, 1) * self.brightness * spread

        # random erasing: one rectangle of erase_area of the image, aspect ratio in [1/2, 2]
        area = uniform(self.erase_area[0], self.erase_area[1], b) * h * w
        aspect = torch.exp(uniform(math.log(0.5), math.log(2.0), b))
        eh = torch.clamp(torch.round(torch.sqrt(area * aspect)), 1, h)
        ew = torch.clamp(torch.round(torch.sqrt(area / aspect)), 1, w)
        top = torch.floor(uniform(0, 1, b) * (h - eh + 1))
        left = torch.floor(uniform(0, 1, b) * (w - ew + 1))
        rows = torch.arange(h, device=dev)[None, :, None]
        cols = torch.arange(w, device=dev)[None, None, :]
        box = ((rows >= top[:, None, None]) & (rows < (top + eh)[:, None, None])
               & (cols >= left[:, None, None]) & (cols < (left + ew)[:, None, None]))
        box &= (uniform(0, 1, b) < self.erase_prob)[:, None, None]
        img = torch.where(box[:, None], background, img)

        img = img + torch.randn(img.shape, generator=gen).to(dev) * (self.noise * spread)
        return img.reshape(b, h * w)


def augment(x: torch.Tensor, image_shape: tuple[int, int], gen: torch.Generator,
            policy: GreyAugment | None = None) -> torch.Tensor:
    """One random view (b, h·w) float32 of the flat grey images ``x`` (b, h·w), drawn from ``gen``."""
    return (policy or GreyAugment())(x, image_shape, gen)


def augment_vectors(x: torch.Tensor, gen: torch.Generator, *, noise: float = 0.1, drop: float = 0.1) -> torch.Tensor:
    """One random view (b, d) of plain (non-image) standardised vectors: each feature is
    dropped to the batch mean with probability ``drop``, then Gaussian noise of ``noise`` ·
    (feature std) is added. Used when the data carry no image shape."""
    mean = x.mean(dim=0, keepdim=True)
    std = x.std(dim=0, keepdim=True) + 1e-6
    keep = (torch.rand(x.shape, generator=gen) >= drop).to(x.device)
    out = torch.where(keep, x, mean.expand_as(x))
    return out + torch.randn(x.shape, generator=gen).to(x.device) * (noise * std)
