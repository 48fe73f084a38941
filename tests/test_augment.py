"""Batched augmentation ops against per-image references."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lab.data.augment import BatchTransform, cutout, per_sample_transform, random_crop, random_flip


def test_random_crop_is_a_translation_with_zero_fill():
    x = torch.randint(1, 256, (16, 3, 8, 8), dtype=torch.uint8)
    out = random_crop(x, 2, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = F.pad(x, (2, 2, 2, 2))
    for i in range(16):  # each output is one of the 25 windows of its padded input
        windows = [padded[i, :, dy:dy + 8, dx:dx + 8] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)
    assert (out == 0).any()  # some images moved, bringing in zero padding


def test_random_flip_flips_about_half():
    x = torch.arange(64 * 4, dtype=torch.float32).view(64, 1, 1, 4)
    out = random_flip(x, torch.Generator().manual_seed(0))
    flipped = torch.tensor([torch.equal(out[i], x[i].flip(2)) for i in range(64)])
    kept = torch.tensor([torch.equal(out[i], x[i]) for i in range(64)])
    assert bool((flipped | kept).all()) and 16 < int(flipped.sum()) < 48


def test_cutout_zeroes_one_square_per_image():
    x = torch.ones(8, 3, 16, 16)
    out = cutout(x, 4, torch.Generator().manual_seed(0))
    zeros = (out[:, 0] == 0).sum(dim=(1, 2))
    assert bool((zeros <= 16).all()) and bool((zeros >= 4).all())  # clipped at borders, at least 2x2
    assert bool(((out == 0).all(dim=1) == (out[:, :1] == 0).squeeze(1)).all())  # same hole in every channel


def test_eval_transform_is_deterministic_and_matches_torchvision():
    x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    t = BatchTransform([0.5, 0.4, 0.3], [0.2, 0.25, 0.3], train=False, crop_padding=4, hflip=True, resize=(16, 16))
    a, b = t(x), t(x)
    assert torch.equal(a, b) and a.shape == (4, 3, 16, 16)
    reference = per_sample_transform([0.5, 0.4, 0.3], [0.2, 0.25, 0.3], train=False, image_size=(8, 8),
                                     resize=(16, 16))
    from PIL import Image

    for i in range(4):
        expected = reference(Image.fromarray(x[i].permute(1, 2, 0).numpy()))
        assert torch.allclose(a[i], expected, atol=1e-4)


def test_train_transform_is_seeded_and_grey_to_rgb():
    x = torch.randint(0, 256, (8, 1, 8, 8), dtype=torch.uint8)
    make = lambda: BatchTransform([0.5], [0.25], train=True, crop_padding=2, hflip=True, to_rgb=True, seed=3)  # noqa: E731
    a, b = make()(x), make()(x)
    assert torch.equal(a, b) and a.shape == (8, 3, 8, 8)
    assert torch.equal(a[:, 0], a[:, 2])
