"""The engine keeps every tensor on its inputs' device: run on fake CUDA inputs (no GPU
needed, ``tests/fake_cuda.py``), a CPU tensor created inside would raise at once."""

from __future__ import annotations

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorDeviceMismatchError

from adasim_ray.engine.ordering import exact_topk, rank_key, redo_rows, top_by_key
from tests.fake_cuda import fake_cuda

B, C, K = 6, 40, 5


def _cuda_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(B, C, device="cuda"), torch.arange(B, device="cuda")


def test_fake_cuda_catches_a_cpu_tensor():
    with fake_cuda(), pytest.raises(FakeTensorDeviceMismatchError):
        torch.randn(3, device="cuda") + torch.arange(3)


def test_first_k_stays_on_the_device():
    with fake_cuda():
        values, self_ids = _cuda_inputs()
        ids = torch.arange(C, device="cuda").expand(B, -1)
        assert rank_key(values, ids, self_ids).device.type == "cuda"
        top_vals, top_ids = top_by_key(values, ids, self_ids, K)
        assert (top_vals.device.type, top_ids.device.type) == ("cuda", "cuda")
        # no candidate dropped: the fast path of exact_topk (K >= C) runs without a branch
        vals, out = exact_topk(values[:, :K], self_ids, K, lambda rows, pos: pos + 100)
        assert out.device.type == "cuda" and out.shape == (B, K)


def test_tie_repair_stays_on_the_device():
    """The rows tied at the K-th place (fp16 similarities tie at every step at ImageNet
    scale) are redone over all their candidates, on the cache's device."""
    with fake_cuda():
        values, self_ids = _cuda_inputs()
        rows = torch.tensor([1, 4], device="cuda")
        vals, ids = redo_rows(values, rows, self_ids, K, lambda r, pos: pos + 7)
        assert (vals.device.type, ids.device.type) == ("cuda", "cuda")
        assert ids.shape == (2, K)


def test_tie_repair_gives_the_full_order():
    values = torch.tensor([[0.5, 0.9, 0.5, 0.5, 0.1]], dtype=torch.float16).float()
    vals, ids = exact_topk(values, torch.tensor([3]), 2, lambda rows, pos: pos)
    assert ids.tolist() == [[1, 3]]  # the tie at 0.5 goes to the image itself (id 3)
    assert vals.tolist() == [[values[0, 1].item(), 0.5]]
