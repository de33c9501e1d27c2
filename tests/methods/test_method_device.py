"""A training step on a GPU, proved on fake CUDA (``tests/fake_cuda.py``): both methods keep
every tensor on the views' device through each stage of ``train_step`` (schedules, forward,
gradient clipping and freezing, the optimiser, the EMA teacher).

Two stages cannot run on fake CUDA without a GPU and are stood in for: autograd's backward
(its engine opens a CUDA context; it puts each gradient on its parameter's device by
construction), replaced by gradients made ``zeros_like`` each parameter; and the step's one
host synchronisation (the monitors as floats, which needs values), left out."""

from __future__ import annotations

import pytest
import torch

from tests.fake_cuda import fake_cuda
from tests.methods.conftest import BATCH, IMAGE_SIZE, tiny_dino, tiny_simsiam


@pytest.mark.parametrize("make", [tiny_dino, tiny_simsiam], ids=["dino", "simsiam"])
def test_every_stage_of_a_step_stays_on_the_device(make):
    method = make()
    with fake_cuda():
        method.to("cuda")
        optimizer = method.build_optimizer()
        anchor, partner = torch.randn(2, BATCH, 1, IMAGE_SIZE, IMAGE_SIZE, device="cuda")
        it = 1
        method.apply_schedules(optimizer, it)
        out = method(anchor, partner, it)
        assert out.loss.device.type == "cuda" and out.anchor_feature.device.type == "cuda"
        assert all(v.device.type == "cuda" for v in out.monitors.values()
                   if isinstance(v, torch.Tensor))
        for p in method.parameters():
            if p.requires_grad:
                p.grad = torch.zeros_like(p)
        method.prepare_gradients(it)
        optimizer.step()
        method.after_step(it)
        assert all(v.device.type == "cuda" for v in method.state_dict().values())
        assert all(s.device.type == "cuda" for group in optimizer.state.values()
                   for s in group.values() if isinstance(s, torch.Tensor) and s.dim() > 0)
