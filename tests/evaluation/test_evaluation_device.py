"""Evaluation on a GPU, proved on fake CUDA (``tests/fake_cuda.py``): the k-NN and few-shot
arithmetic stays on the features' device, and the k-NN memory is held once there."""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from adasim_ray.evaluation import knn as knn_module
from adasim_ray.evaluation.knn import _as_features, bank_similarities, knn_votes
from tests.fake_cuda import fake_cuda


class FullSizeAllocations(TorchDispatchMode):
    """Counts the operations that allocate a new tensor of ``shape`` on a CUDA device."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape, self.count = torch.Size(shape), 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if (isinstance(out, torch.Tensor) and out.shape == self.shape
                and out.device.type == "cuda" and not out._is_view()):
            self.count += 1
        return out


def test_knn_memory_is_held_once_on_the_device():
    n, d = 3 * 8192, 2048  # more rows than one normalisation block of 64 MiB
    with fake_cuda():
        feats = torch.empty(n, d, dtype=torch.float16, device="cpu")
        with FullSizeAllocations((n, d)) as allocations:
            out = _as_features(feats, torch.device("cuda"), "train_feats")
    # A half bank (the cache dtype of a run of many GPU workers) stays half: 5.2 GB for
    # ResNet-50 on ImageNet, not float32's 10.5 GB.
    assert out.device.type == "cuda" and out.dtype == torch.float16
    assert allocations.count == 1, f"{allocations.count} full-size copies of the memory"


def test_a_half_bank_is_scored_without_a_float32_copy(monkeypatch):
    n, d = 1000, 64
    monkeypatch.setattr(knn_module, "_SIMILARITY_BUDGET", 200 * d)  # 5 blocks of bank rows
    with fake_cuda():
        bank = torch.randn(n, d, device="cuda").half()
        query = torch.randn(7, d, device="cuda").half()
        with FullSizeAllocations((n, d)) as allocations:
            sims = bank_similarities(query, bank)
    assert sims.device.type == "cuda" and sims.dtype == torch.float32
    assert allocations.count == 0, "the half bank was copied whole (to float32)"


def test_knn_votes_stay_on_the_device():
    with fake_cuda():
        train = torch.randn(50, 16, device="cuda")
        labels = torch.randint(0, 10, (50,), device="cuda")
        votes = knn_votes(train, labels, torch.randn(7, 16, device="cuda"), k=5, T=0.07,
                          num_classes=10)
    assert votes.device.type == "cuda" and votes.shape == (7, 10)


def test_the_linear_probes_statistics_of_a_half_bank_make_no_float32_copy(monkeypatch):
    from adasim_ray.evaluation import linear as linear_module

    n, d = 1000, 64
    monkeypatch.setattr(linear_module, "_BLOCK_BYTES", 200 * 4 * d)  # 5 blocks of rows
    with fake_cuda():
        bank = torch.randn(n, d).half()  # on the host, as a run gathers it
        with FullSizeAllocations((n, d)) as allocations:
            mean, std = linear_module._streamed_mean_std(bank, torch.device("cuda"))
    assert mean.device.type == std.device.type == "cuda" and mean.dtype == torch.float32
    assert allocations.count == 0, "the bank was copied whole to the device"
