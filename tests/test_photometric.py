"""The fast view operations against the reference operations they stand for: the bounds
that adasim_ray/augmentations/photometric.py and geometry.py state."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image, ImageDraw, ImageFilter, ImageOps

from adasim_ray.augmentations import GlobalViews
from adasim_ray.augmentations import photometric as P
from adasim_ray.augmentations.geometry import (
    CROP_DRAWS,
    crop_box,
    decode_rgb,
    draft_scale,
    image_size,
)
from adasim_ray.data import ArraySource

IMAGENET = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}


def _photo(seed: int, width: int = 224, height: int = 224) -> np.ndarray:
    """Smooth colour field, saturated shapes, a little noise: the colours a photo has."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width] / max(width, height)
    field = np.stack([np.sin(2 * np.pi * (rng.uniform(0.5, 2) * xx + rng.uniform(0.5, 2) * yy)
                             + rng.uniform(0, 6)) for _ in range(3)], axis=-1)
    image = Image.fromarray(((field + 1) * 110 + 15).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(8):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        draw.ellipse([x0, y0, x0 + int(rng.integers(10, 90)), y0 + int(rng.integers(10, 90))],
                     fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    image = image.filter(ImageFilter.GaussianBlur(1.0))
    noisy = np.asarray(image).astype(np.int16) + rng.integers(-6, 7, (height, width, 3))
    return np.clip(noisy, 0, 255).astype(np.uint8)


def _jitter(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    factors = np.array([rng.uniform(0.6, 1.4), rng.uniform(0.6, 1.4), rng.uniform(0.8, 1.2),
                        rng.uniform(-0.1, 0.1)])
    return rng.permutation(4), factors


def test_jitter_chain_is_torchvisions_colour_jitter():
    """The exact chain (what the table is built from) equals torchvision's four functional
    ops in the same order, on float images."""
    rng = np.random.default_rng(0)
    for seed in range(6):
        image = _photo(seed, 64, 48)
        order, factors = _jitter(rng)
        ours = P.jitter_chain(image.reshape(-1, 3).T.astype(np.float32) / 255, order, factors,
                              image.shape[0] * image.shape[1], grayscale=seed % 2 == 0)
        x = torch.from_numpy(image).permute(2, 0, 1).float() / 255
        ops = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
        for op in order:
            x = ops[op](x, float(factors[op]))
        if seed % 2 == 0:
            x = TF.rgb_to_grayscale(x, num_output_channels=3)
        theirs = x.reshape(3, -1).numpy()
        assert np.abs(ours - theirs).max() < 5e-4  # float rounding and 0.299 vs 0.2989 luma


def test_lookup_table_jitter_stays_within_its_stated_bound():
    """The one-table jitter against the exact chain on every pixel: under a grey level on
    average and 12 at the 99.9th percentile (photometric.LUT_SIZE's comment)."""
    rng = np.random.default_rng(1)
    means, tails = [], []
    for seed in range(8):
        image = _photo(seed)
        order, factors = _jitter(rng)
        fast = P.colour_rgb(image, (order, factors), grayscale=seed % 4 == 0).astype(np.float32)
        pixels = image.reshape(-1, 3).T.astype(np.float32) / 255
        exact = P.jitter_chain(pixels, order, factors, pixels.shape[1], seed % 4 == 0)
        diff = np.abs(fast - np.round(exact.T * 255).reshape(image.shape))
        means.append(diff.mean())
        tails.append(np.percentile(diff, 99.9))
    assert np.mean(means) < 1.0 and max(tails) <= 12
    # and the jitter is really applied: far from the input
    assert np.abs(fast - image).mean() > 5


def test_grey_jitter_is_exact():
    rng = np.random.default_rng(2)
    image = _photo(3)[:, :, :1]
    order, factors = _jitter(rng)
    order = order[order < 2]
    ours = P.colour_grey(image, (order, factors)).astype(np.float32)
    x = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    for op in order:
        x = (TF.adjust_brightness(x, factors[0]) if op == 0
             else TF.adjust_contrast(x, factors[1]))
    assert np.abs(ours[:, :, 0] - np.round(x[0].numpy() * 255)).max() <= 1


def test_blur_matches_the_full_gaussian_kernel():
    """3-sigma taps against torchvision's blur with the kernel of the largest sigma (what the
    views used before): at most 2 grey levels apart, and a real blur."""
    image = torch.from_numpy(_photo(4))
    for sigma in (0.1, 0.7, 1.3, 2.0):
        ours = P.blur(image, sigma).float()
        reference = TF.gaussian_blur(image.permute(2, 0, 1), [13, 13], [sigma, sigma])
        assert (ours - reference.permute(1, 2, 0).float()).abs().max() <= 2
    assert (P.blur(image, 2.0).float() - image.float()).abs().mean() > 2
    assert P.blur(image[:3, :3], 2.0).shape == (3, 3, 3)  # taps shortened to fit the image


def test_solarize_is_pils():
    image = _photo(5)
    ours = P.solarize(torch.from_numpy(image)).numpy()
    assert np.array_equal(ours, np.asarray(ImageOps.solarize(Image.fromarray(image), 128)))


def test_crop_box_follows_random_resized_crop():
    rng = np.random.default_rng(0)
    areas, ratios = [], []
    for _ in range(2000):
        left, top, w, h = crop_box(500, 375, (0.25, 1.0), rng.random(CROP_DRAWS))
        assert left >= 0 and left + w <= 500 and top >= 0 and top + h <= 375
        areas.append(w * h / (500 * 375))
        ratios.append(w / h)
    assert min(areas) > 0.24 and max(areas) <= 1.0
    assert min(ratios) > 3 / 4 - 0.02 and max(ratios) < 4 / 3 + 0.02
    # no draw fits a 1000 x 10 strip: the largest centred crop of aspect 4/3
    assert crop_box(1000, 10, (0.9, 1.0), np.full(CROP_DRAWS, 0.99)) == (493, 0, 13, 10)


def test_draft_decode_of_a_large_jpeg_is_close_to_a_full_decode():
    photo = Image.fromarray(_photo(6, 1600, 1200))
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=90)
    data = buffer.getvalue()
    assert image_size(data, "big") == (1600, 1200)
    box = (100, 100, 1000, 1000)
    scale = draft_scale([box], 224)
    assert scale == 4  # 1000 / 4 = 250 >= 224
    reduced = decode_rgb(data, scale, "big")
    assert reduced.shape == (3, 300, 400)
    full = decode_rgb(data, 1, "big")
    views = GlobalViews(size=224, channels=3, **IMAGENET)
    from adasim_ray.augmentations.geometry import rescale_box, resized_crop

    a = resized_crop(full, box, 224, flip=False).float()
    b = resized_crop(reduced, rescale_box(box, (1600, 1200), (400, 300)), 224, flip=False).float()
    assert (a - b).abs().mean() < 3
    assert views.size == 224


def test_pair_views_are_reproducible_and_decode_a_shared_image_once():
    images = np.stack([_photo(s, 40, 30) for s in range(6)])
    source = ArraySource("photos", images, np.arange(6) % 2, 2, IMAGENET["mean"],
                         IMAGENET["std"])
    views = GlobalViews(size=24, channels=3, **IMAGENET)
    anchors, partners = np.arange(6), np.array([0, 2, 1, 3, 5, 4])
    a1, p1 = views.pair_views(source, anchors, partners, np.random.default_rng(7))
    a2, p2 = views.pair_views(source, anchors, partners, np.random.default_rng(7))
    assert torch.equal(a1, a2) and torch.equal(p1, p2)
    assert a1.dtype == torch.uint8 and a1.shape == (6, 3, 24, 24)
    a3, _ = views.pair_views(source, anchors, partners, np.random.default_rng(8))
    assert not torch.equal(a1, a3)
    # the normalised values are (x / 255 - mean) / std
    norm = views.normalize(a1)
    expected = (a1.float() / 255 - torch.tensor(IMAGENET["mean"]).view(1, 3, 1, 1)) / torch.tensor(
        IMAGENET["std"]).view(1, 3, 1, 1)
    torch.testing.assert_close(norm, expected, atol=1e-5, rtol=0)
    out = torch.empty_like(norm)
    assert views.normalize(a1, out).data_ptr() == out.data_ptr()


def test_blur_sigma_budget_is_three_sigma():
    assert len(P.gaussian_taps(2.0, 224)) == 2 * math.ceil(6.0) + 1
    assert len(P.gaussian_taps(0.1, 224)) == 3
    assert P.gaussian_taps(1.0, 224).sum().item() == pytest.approx(1.0)
