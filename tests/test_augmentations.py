"""GlobalViews: shapes, dtype, normalisation, per-view operations, seeding."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from adasim_ray.augmentations import GlobalViews

MNIST = {"mean": (0.1307,), "std": (0.3081,)}
IMAGENET = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}


def _grey(size: int = 28) -> GlobalViews:
    return GlobalViews(size=size, channels=1, flip=False, **MNIST)


def _digit() -> np.ndarray:
    image = np.zeros((28, 28, 1), dtype=np.uint8)
    image[6:22, 12:16] = 255  # a "1"
    return image


def test_grey_28_view_shape_dtype_and_normalisation() -> None:
    views = _grey()
    black = np.zeros((28, 28, 1), dtype=np.uint8)
    for which in (0, 1):
        out = views.view(black, which)
        assert out.shape == (1, 28, 28) and out.dtype == torch.float32
        # Every operation maps black to black (jitter scales, blur averages, solarise
        # only inverts >= 128), so the view is exactly the normalised 0.
        torch.testing.assert_close(out, torch.full_like(out, -0.1307 / 0.3081))


def test_rgb_224_view_and_eval_transform() -> None:
    views = GlobalViews(size=224, channels=3, **IMAGENET)
    image = np.random.default_rng(0).integers(0, 256, (180, 260, 3), dtype=np.uint8)
    out = views.views([image, image, image], 1)
    assert out.shape == (3, 3, 224, 224) and out.dtype == torch.float32
    grey_photo = np.full((300, 200, 3), 128, dtype=np.uint8)
    evaluated = views.eval_transform(grey_photo)
    expected = (128 / 255 - torch.tensor(IMAGENET["mean"])) / torch.tensor(IMAGENET["std"])
    torch.testing.assert_close(evaluated, expected[:, None, None].expand(3, 224, 224),
                               atol=1e-5, rtol=0)


def test_channel_conversion() -> None:
    rgb_views = GlobalViews(size=16, channels=3, **IMAGENET)
    assert rgb_views.eval_transform(np.zeros((16, 16, 1), np.uint8)).shape == (3, 16, 16)
    grey_views = _grey(16)
    assert grey_views.eval_transform(np.zeros((20, 20, 3), np.uint8)).shape == (1, 16, 16)
    with pytest.raises(ValueError, match="shape"):
        grey_views.eval_transform(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(TypeError, match="uint8"):
        grey_views.eval_transform(np.zeros((4, 4, 1), np.float32))


def test_eval_transform_of_native_size_is_plain_normalisation() -> None:
    source = SimpleNamespace(name="mnist:test", channels=1, native_size=28,
                             mirror_invariant=False, **MNIST)
    views = GlobalViews.for_source(source)
    image = _digit()
    expected = (torch.from_numpy(image).permute(2, 0, 1).float() / 255 - 0.1307) / 0.3081
    torch.testing.assert_close(views.eval_transform(image), expected, atol=1e-5, rtol=0)


def test_for_source_turns_flip_off_for_digits_only() -> None:
    mnist = SimpleNamespace(name="mnist:train", channels=1, native_size=28,
                            mirror_invariant=False, **MNIST)
    folder = SimpleNamespace(name="folder:/data/x:train", channels=3, native_size=None,
                             mirror_invariant=True, **IMAGENET)
    assert not GlobalViews.for_source(mnist).flip
    natural = GlobalViews.for_source(folder)
    assert natural.flip and natural.size == 224 and natural.blur_sigma == (0.1, 2.0)
    assert GlobalViews.for_source(mnist).blur_sigma == (0.1, 1.0)


@pytest.mark.parametrize("flip", [False, True])
def test_flip_is_configurable(flip: bool) -> None:
    # Full-image crops and no photometric change: the view is the image or its mirror.
    views = GlobalViews(size=8, channels=1, flip=flip, crop_scale=(1.0, 1.0), jitter_p=0.0,
                        blur_p=(0.0, 0.0), solarize_p=(0.0, 0.0), mean=(0.0,), std=(1.0,))
    image = np.zeros((8, 8, 1), dtype=np.uint8)
    image[:, :2] = 255
    torch.manual_seed(0)
    outs = views.views([image] * 40, 0)
    left = outs[:, 0, :, 0] > 0.5
    mirrored = (~left.all(dim=1)).sum().item()
    assert (mirrored > 0) == flip
    if flip:
        assert 5 < mirrored < 35


def test_only_view_two_solarises() -> None:
    # A white image stays >= 0.6 * 255 under brightness jitter unless solarised (<= 102).
    views = _grey()
    white = [np.full((28, 28, 1), 255, dtype=np.uint8)] * 100
    torch.manual_seed(0)
    pixels = [views.views(white, which)[:, 0, 14, 14] * 0.3081 + 0.1307 for which in (0, 1)]
    assert (pixels[0] > 0.55).all()
    solarised = (pixels[1] < 0.45).float().mean().item()
    assert 0.08 < solarised < 0.35  # p = 0.2


def test_view_one_always_blurs() -> None:
    # Blur (p = 1) softens the digit's edge in view 1; view 2 keeps most edges hard.
    views = GlobalViews(size=28, channels=1, flip=False, crop_scale=(1.0, 1.0), jitter_p=0.0,
                        solarize_p=(0.0, 0.0), blur_sigma=(1.0, 1.0), mean=(0.0,), std=(1.0,))
    digit = [_digit()] * 30
    torch.manual_seed(0)
    for which, lo, hi in ((0, 1.0, 1.0), (1, 0.0, 0.3)):
        out = views.views(digit, which)
        blurred = (out.amax(dim=(1, 2, 3)) < 0.99).float().mean().item()
        assert lo <= blurred <= hi


def test_seeding_with_generator_and_global_rng() -> None:
    views = _grey()
    images = [_digit()] * 4
    state = torch.get_rng_state()
    a = views.views(images, 0, generator=torch.Generator().manual_seed(7))
    b = views.views(images, 0, generator=torch.Generator().manual_seed(7))
    c = views.views(images, 0, generator=torch.Generator().manual_seed(8))
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG was not consumed
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a[0], a[1])  # independent draws within a batch
    torch.manual_seed(3)
    d = views.view(images[0], 1)
    torch.manual_seed(3)
    assert torch.equal(d, views.view(images[0], 1))


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="mean and std"):
        GlobalViews(size=28, channels=3, **MNIST)
    with pytest.raises(ValueError, match="which"):
        _grey().view(_digit(), 2)
