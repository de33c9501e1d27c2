"""The method base: what it shares (step wrapper, schedule loop, momentum encoder) and what it
declares for the Ray layer (monitors, encoders by role, state size)."""

from __future__ import annotations

import pytest
import torch

from adasim_ray.methods import METHODS, SelfDistillationMethod
from adasim_ray.methods.heads import DINOHead
from adasim_ray.methods.roles import ENCODER_ROLES


def _numel(module: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def test_every_registered_method_declares_what_the_ray_layer_reads():
    for spec in METHODS.values():
        cls = spec.build
        assert issubclass(cls, SelfDistillationMethod), spec.name
        assert cls.monitors[0] == "loss" and len(set(cls.monitors)) == len(cls.monitors)


def test_state_bytes_counts_both_networks_and_the_optimiser_slots(make_dino, make_simsiam):
    dino = make_dino()
    buffers = sum(b.numel() for b in dino.buffers())
    # student + teacher (+ the centre), and AdamW's two moments of each trainable parameter
    expected = 4 * (_numel(dino) + buffers + 2 * _numel(dino, trainable_only=True))
    assert dino.state_bytes() == expected
    assert _numel(dino.teacher) > 0 and _numel(dino.teacher, trainable_only=True) == 0
    simsiam = make_simsiam()
    buffers = sum(b.numel() * b.element_size() for b in simsiam.buffers())
    assert simsiam.state_bytes() == 4 * 2 * _numel(simsiam) + buffers  # SGD: one slot
    with torch.device("meta"):  # the driver sizes it without building the model for real
        assert make_dino().state_bytes() == dino.state_bytes()


def test_encoders_by_role(make_dino, make_simsiam):
    dino, simsiam = make_dino(), make_simsiam()
    assert dino.encoder("teacher") is dino.teacher.backbone is dino.eval_backbone()
    assert dino.encoder("student") is dino.student.backbone
    assert set(dino.encoders()) == set(ENCODER_ROLES) == set(simsiam.encoders())
    assert simsiam.encoder("student") is simsiam.encoder("teacher") is simsiam.backbone
    with pytest.raises(ValueError, match=r"DINO has no 'online' encoder; choose one of"):
        dino.encoder("online")


def test_the_schedule_loop_sets_lr_and_regularized_weight_decay(make_dino):
    dino = make_dino()
    optimizer = dino.build_optimizer()
    it = dino.iters_per_epoch + 1
    dino.apply_schedules(optimizer, it)
    regularized, plain = optimizer.param_groups
    assert regularized["lr"] == plain["lr"] == pytest.approx(dino.schedules.lr[it])
    assert regularized["weight_decay"] == pytest.approx(dino.schedules.weight_decay[it])
    assert plain["weight_decay"] == 0.0
    with pytest.raises(IndexError, match="outside the learning rate schedule"):
        dino.apply_schedules(optimizer, dino.total_iters)


def test_a_dino_head_of_the_layout_before_the_generic_head_still_loads():
    head = DINOHead(in_dim=6, out_dim=10, hidden_dim=8, bottleneck_dim=4)
    old = {k.replace("mlp.net.", "mlp."): v for k, v in head.state_dict().items()}
    assert "mlp.0.weight" in old
    fresh = DINOHead(in_dim=6, out_dim=10, hidden_dim=8, bottleneck_dim=4)
    fresh.load_state_dict(old)
    x = torch.randn(3, 6)
    torch.testing.assert_close(fresh(x), head(x))


def test_the_lazy_package_offers_exactly_what_the_catalog_holds():
    """``methods/__init__.py`` lists its names without importing torch; the catalog defines
    them: the two lists are one list."""
    import adasim_ray.methods as package
    from adasim_ray.methods import catalog

    assert package.__all__ == catalog.__all__
    assert all(getattr(package, name) is getattr(catalog, name) for name in package.__all__)
