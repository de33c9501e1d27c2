"""Frozen-feature extraction and the raw-pixel baseline on in-memory sources."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from adasim_ray.evaluation.features import extract_features, iter_chunks, raw_pixel_features


def tiny_images(n: int, size: int = 6, channels: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, channels), np.uint8)


class TinyBackbone(nn.Module):
    """BatchNorm + dropout make train mode visible in the output; records its mode."""

    def __init__(self, in_features: int, dim: int = 5) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_features, dim),
                                 nn.BatchNorm1d(dim), nn.Dropout(0.5))
        self.seen_training: list[bool] = []
        self.seen_grad: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen_training.append(self.training)
        self.seen_grad.append(torch.is_grad_enabled())
        return self.net(x)


class NaNBackbone(nn.Module):
    """What a diverged checkpoint produces."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) * float("nan")


def test_chunks_cover_everything_without_empty_ones():
    assert [c.tolist() for c in iter_chunks(5, 2)] == [[0, 1], [2, 3], [4]]
    assert [c.tolist() for c in iter_chunks(3, 10)] == [[0, 1, 2]]
    assert list(iter_chunks(0, 4)) == []
    with pytest.raises(ValueError):
        list(iter_chunks(3, 0))


@pytest.mark.parametrize("batch_size", [1, 4, 7, 100])
def test_features_are_unit_rows_in_index_order_whatever_the_batch(make_source, batch_size):
    images = tiny_images(7)
    source = make_source(images, np.arange(7) % 3)
    backbone = TinyBackbone(36)
    feats, labels = extract_features(backbone, source, batch_size=batch_size)
    assert feats.shape == (7, 5) and feats.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, rtol=1e-5)
    assert labels.dtype == np.int64 and labels.tolist() == [0, 1, 2, 0, 1, 2, 0]
    # Eval mode: each row depends on its own image only, so it equals a one-image pass.
    backbone.eval()
    with torch.no_grad():
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
        expected = nn.functional.normalize(backbone(x), dim=1).numpy()
    np.testing.assert_allclose(feats, expected, rtol=1e-5, atol=1e-6)
    assert all(len(call) > 0 for call in source.calls)
    assert np.concatenate(source.calls).tolist() == list(range(7))


def test_backbone_runs_in_eval_without_grad_and_mode_is_restored(make_source):
    backbone = TinyBackbone(36)
    backbone.train()
    extract_features(backbone, make_source(tiny_images(5), None), batch_size=2)
    assert backbone.seen_training == [False] * 3
    assert backbone.seen_grad == [False] * 3
    assert backbone.training  # restored for the training loop that called us


def test_transform_progress_and_unlabelled_source(make_source):
    calls: list[tuple[int, int]] = []
    source = make_source(tiny_images(5, size=4, channels=3), None)

    def transform(image: np.ndarray) -> torch.Tensor:
        assert image.dtype == np.uint8 and image.shape == (4, 4, 3)
        return torch.ones(3, 2, 2) * float(image.mean())

    feats, labels = extract_features(nn.Flatten(), source, transform, batch_size=2,
                                     progress=lambda done, total: calls.append((done, total)))
    assert labels is None
    assert feats.shape == (5, 12)
    np.testing.assert_allclose(feats, 1 / np.sqrt(12), rtol=1e-6)  # constant rows
    assert calls == [(2, 5), (4, 5), (5, 5)]


def test_bad_backbone_outputs_and_sources_are_clear_errors(make_source):
    source = make_source(tiny_images(3), np.zeros(3))
    with pytest.raises(ValueError, match=r"\(B, d\)"):
        extract_features(nn.Identity(), source)  # (B, C, H, W), not (B, d)
    with pytest.raises(ValueError, match="non-finite"):
        extract_features(NaNBackbone(), source)
    with pytest.raises(ValueError, match="empty"):
        extract_features(nn.Flatten(), make_source(tiny_images(0), None))
    with pytest.raises(ValueError, match="batch_size"):
        extract_features(nn.Flatten(), source, batch_size=0)
    with pytest.raises(ValueError, match="labels have shape"):
        extract_features(nn.Flatten(), make_source(tiny_images(3), np.zeros(2)))


def test_raw_pixels_are_flattened_normalised_pixels(make_source):
    images = tiny_images(9, size=3, channels=3, seed=1)
    feats, labels = raw_pixel_features(make_source(images, np.arange(9)), batch_size=4)
    flat = images.reshape(9, -1).astype(np.float64)
    np.testing.assert_allclose(feats, flat / np.linalg.norm(flat, axis=1, keepdims=True),
                               rtol=1e-5)
    assert labels.tolist() == list(range(9))


def test_raw_pixels_of_mixed_sizes_need_a_size(make_source):
    images = [tiny_images(1, size=4)[0], tiny_images(1, size=6)[0]]
    with pytest.raises(ValueError, match="pass size="):
        raw_pixel_features(make_source(images, None))
    feats, _ = raw_pixel_features(make_source(images, None), size=5)
    assert feats.shape == (2, 25)
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, rtol=1e-5)
