"""Bad arguments raise a clear error that names the argument."""

from __future__ import annotations

import pytest
import torch

from adasim_ray.engine import BootstrapConfig, Bootstrapper, NeighbourWindow, SimilarityCache


@pytest.mark.parametrize(
    ("cfg", "word"),
    [
        (BootstrapConfig(tau=-0.1), "tau"),
        (BootstrapConfig(tau=float("nan")), "tau"),
        (BootstrapConfig(window=0), "window"),
        (BootstrapConfig(topk=0), "topk"),
        (BootstrapConfig(topk=11), "topk"),
        (BootstrapConfig(mode="knn"), "mode"),
    ],
)
def test_bad_config_names_the_argument(cfg, word):
    with pytest.raises(ValueError, match=word):
        Bootstrapper(10, 4, cfg)


def test_dimension_mismatch_is_named():
    boot = Bootstrapper(10, 4, BootstrapConfig(topk=2))
    with pytest.raises(ValueError, match="d mismatch"):
        boot.step(torch.arange(3), torch.randn(3, 5))


def test_ids_out_of_range_are_named():
    boot = Bootstrapper(10, 4, BootstrapConfig(topk=2), shards=2)
    with pytest.raises(ValueError, match="ids out of range"):
        boot.step(torch.tensor([3, 10]), torch.randn(2, 4))
    with pytest.raises(ValueError, match="ids out of range"):
        boot.step(torch.tensor([-1, 2]), torch.randn(2, 4))


def test_repeated_ids_in_a_batch_are_refused():
    boot = Bootstrapper(10, 4, BootstrapConfig(topk=2))
    with pytest.raises(ValueError, match="twice"):
        boot.step(torch.tensor([1, 1]), torch.randn(2, 4))


def test_non_finite_features_are_refused():
    cache = SimilarityCache(0, 10, 4)
    with pytest.raises(ValueError, match="NaN"):
        cache.write(torch.tensor([0]), torch.tensor([[float("nan"), 0, 0, 0]]))


def test_too_many_shards_and_bad_ranges():
    with pytest.raises(ValueError, match="cache_shards"):
        Bootstrapper(3, 4, BootstrapConfig(topk=2), shards=4)
    with pytest.raises(ValueError, match="window"):
        NeighbourWindow(0, 5, window=0, topk=2)
    with pytest.raises(ValueError, match="dtype"):
        SimilarityCache(0, 5, 4, dtype="int8")


def test_window_record_shape_is_checked():
    win = NeighbourWindow(0, 5, window=2, topk=3)
    with pytest.raises(ValueError, match="topk"):
        win.record(torch.tensor([0]), torch.tensor([[0, 1]]), torch.tensor([[0.5, 0.4]]))


def test_the_config_names_the_dtypes_the_engine_stores():
    """The ``adasim`` section's dtype choices are exactly the cache's and the window's."""
    import typing

    from adasim_ray.engine.cache import CACHE_DTYPES
    from adasim_ray.engine.config import CacheDtype, SimDtype
    from adasim_ray.engine.window import SIM_DTYPES

    assert set(typing.get_args(CacheDtype)) == set(CACHE_DTYPES)
    assert set(typing.get_args(SimDtype)) == set(SIM_DTYPES)
