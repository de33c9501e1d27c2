"""Heads: output shapes, DINO's normalised last layer, SimSiam's dims."""

from __future__ import annotations

import pickle

import torch

from adasim_ray.methods.heads import (
    DINOHead,
    SimSiamPredictor,
    SimSiamProjector,
    WeightNormLinear,
)


def test_dino_head_shapes_and_unit_prototypes() -> None:
    head = DINOHead(in_dim=12, out_dim=40, hidden_dim=24, bottleneck_dim=6)
    out = head(torch.randn(5, 12))
    assert out.shape == (5, 40)
    weight = head.last_layer.weight
    torch.testing.assert_close(weight.norm(dim=1), torch.ones(40))
    # Input to the last layer is L2-normalised and prototypes are unit: |logit| <= 1.
    assert out.abs().max() <= 1.0 + 1e-5
    assert not head.last_layer.weight_g.requires_grad


def test_dino_head_trainable_magnitude_when_not_normalised() -> None:
    head = DINOHead(in_dim=12, out_dim=40, hidden_dim=24, bottleneck_dim=6,
                    norm_last_layer=False)
    assert head.last_layer.weight_g.requires_grad
    linear = [m for m in head.mlp.net if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linear] == [24, 24, 6]


def test_simsiam_projector_and_predictor_dims() -> None:
    projector = SimSiamProjector(in_dim=10, hidden_dim=32, out_dim=16)
    predictor = SimSiamPredictor(dim=16, pred_dim=4)
    z = projector(torch.randn(6, 10))
    assert z.shape == (6, 16)
    # The last BN has no affine parameters, so each output dim is standardised.
    torch.testing.assert_close(z.mean(dim=0), torch.zeros(16), atol=1e-5, rtol=0)
    assert predictor(z).shape == (6, 16)
    assert predictor.net[0].out_features == 4


def test_weight_norm_linear_matches_formula_and_pickles() -> None:
    layer = WeightNormLinear(3, 2, fix_norm=False)
    with torch.no_grad():
        layer.weight_v.copy_(torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 2.0]]))
        layer.weight_g.copy_(torch.tensor([[2.0], [0.5]]))
    out = layer(torch.tensor([[1.0, 1.0, 1.0]]))
    torch.testing.assert_close(out, torch.tensor([[2.0 * 7.0 / 5.0, 0.5]]))
    # Ray ships modules by pickling (torch's parametrised weight_norm cannot be pickled).
    head = pickle.loads(pickle.dumps(DINOHead(in_dim=4, out_dim=8, hidden_dim=8,
                                              bottleneck_dim=4)))
    assert set(dict(head.last_layer.named_parameters())) == {"weight_g", "weight_v"}
