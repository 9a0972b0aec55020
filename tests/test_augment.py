"""Grey-image augmentations: seeded, shape-preserving, different from the input yet recognisable."""
import numpy as np
import torch

from explorer import data
from explorer.augment import GreyAugment, augment, augment_vectors


def _digits(n=64):
    return torch.from_numpy(np.asarray(data.load("digits").base[:n]))


def test_same_generator_seed_gives_the_same_views():
    x = _digits()
    a = augment(x, (8, 8), torch.Generator().manual_seed(5))
    b = augment(x, (8, 8), torch.Generator().manual_seed(5))
    c = augment(x, (8, 8), torch.Generator().manual_seed(6))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_a_view_changes_the_pixels_but_keeps_the_digit():
    """On 8×8 images a one-pixel shift moves most pixels, so a view is far from its image in L2;
    still its nearest original is its own image 30× more often than chance (1/200; measured 15%) and
    a digit of the same class most of the time (chance 10%; measured 58%)."""
    ds = data.load("digits")
    x, y = _digits(200), ds.labels[:200]
    v = augment(x, (8, 8), torch.Generator().manual_seed(0))
    assert (v - x).abs().mean() > 0.5                       # pixels in 0..16: clearly changed
    nearest = torch.cdist(v, x).argmin(dim=1)
    assert (nearest == torch.arange(len(x))).float().mean() > 30 / 200
    assert (y[nearest.numpy()] == y).mean() > 0.5


def test_without_any_augmentation_the_image_is_returned():
    x = _digits()
    still = GreyAugment(max_shift=0, max_rotation=0, zoom=(1, 1), contrast=0, brightness=0, erase_prob=0, noise=0)
    torch.testing.assert_close(still(x, (8, 8), torch.Generator().manual_seed(0)), x, atol=1e-4, rtol=0)


def test_erasing_fills_with_the_background():
    x = _digits()
    only_erase = GreyAugment(max_shift=0, max_rotation=0, zoom=(1, 1), contrast=0, brightness=0, erase_prob=1.0,
                             erase_area=(0.2, 0.2), noise=0)
    v = only_erase(x, (8, 8), torch.Generator().manual_seed(0))
    changed = (v - x).abs() > 1e-4
    assert changed.any()
    assert torch.all(v[changed] == 0)                       # digits' background is 0


def test_vector_views_keep_shape_and_seed():
    x = torch.randn(50, 12)
    a = augment_vectors(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, augment_vectors(x, torch.Generator().manual_seed(1)))
    assert not torch.equal(a, x)
