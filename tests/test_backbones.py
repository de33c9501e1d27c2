"""Backbones: derived feature dims, the ViT [CLS]-after-norm feature, presets, errors."""

from __future__ import annotations

import pytest
import torch

from adasim_ray.backbones import CPU_PRESETS, PAPER_BACKBONES, build_backbone


@pytest.mark.parametrize(("name", "dim"), [("resnet50", 2048),
                                           ("vit_small_patch16_224", 384),
                                           ("vit_base_patch16_224", 768)])
def test_paper_backbones_feature_dims(name: str, dim: int) -> None:
    assert name in PAPER_BACKBONES
    # A 32 x 32 input keeps the forward cheap; the feature width does not depend on it.
    model, feat_dim = build_backbone(name, image_size=32, in_chans=3)
    assert feat_dim == dim
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, dim)


def test_vit_feature_is_cls_token_after_final_norm() -> None:
    model, feat_dim = build_backbone("vit_tiny_cpu", image_size=28, in_chans=1)
    assert feat_dim == 96
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        tokens = model.forward_features(x)  # patch embed, blocks, final norm
        feature = model(x)
    assert tokens.shape == (3, 1 + 7 * 7, 96)  # [CLS] + 7 x 7 patches of 4 px
    torch.testing.assert_close(feature, tokens[:, 0])
    # After LayerNorm without affine drift at init, each [CLS] has ~zero mean, unit std.
    torch.testing.assert_close(feature.mean(dim=-1), torch.zeros(3), atol=1e-4, rtol=0)


def test_resnet_tiny_preset_uses_small_stem_and_pools() -> None:
    model, feat_dim = build_backbone("resnet_tiny_cpu", image_size=28, in_chans=1)
    assert feat_dim == 256
    assert model.conv1.stride == (1, 1) and model.conv1.kernel_size == (3, 3)
    with torch.no_grad():
        assert model(torch.randn(2, 1, 28, 28)).shape == (2, 256)
        stage4 = model.forward_features(torch.randn(2, 1, 28, 28))
    assert stage4.shape == (2, 256, 2, 2)  # 28 -> 14 (max-pool) -> 14, 7, 4, 2


def test_overrides_adapt_paper_vit_to_grey_28px() -> None:
    model, feat_dim = build_backbone("vit_small_patch16_224", image_size=28, in_chans=1,
                                     patch_size=4, depth=1)
    assert feat_dim == 384
    with torch.no_grad():
        assert model(torch.randn(1, 1, 28, 28)).shape == (1, 384)


def test_resnet_gets_small_stem_for_small_images_only() -> None:
    small, _ = build_backbone("resnet18", image_size=28, in_chans=1, layers=(1, 1, 1, 1))
    large, _ = build_backbone("resnet18", image_size=224, in_chans=3, layers=(1, 1, 1, 1))
    assert small.conv1.stride == (1, 1) and small.conv1.kernel_size == (3, 3)
    assert large.conv1.stride == (2, 2) and large.conv1.kernel_size == (7, 7)


def test_unknown_backbone_names_the_presets() -> None:
    with pytest.raises(ValueError, match="not_a_net") as err:
        build_backbone("not_a_net", image_size=28, in_chans=1)
    for preset in CPU_PRESETS:
        assert preset in str(err.value)


def test_small_stem_on_a_vit_is_an_error() -> None:
    with pytest.raises(ValueError, match="small_stem"):
        build_backbone("vit_tiny_cpu", image_size=28, in_chans=1, small_stem=True)


def test_backbone_kwargs_reach_the_constructor_and_survive_the_config_file(tmp_path):
    from adasim_ray.config import dump_config, load_config
    from adasim_ray.recipe import build_backbone_for, make_views, open_train_source

    cfg = load_config(None, ["data=digits", "backbone_kwargs.drop_path_rate=0.1"])
    model, _ = build_backbone_for(cfg, make_views(cfg, open_train_source(cfg)))
    assert model.blocks[-1].drop_path1.drop_prob == pytest.approx(0.1)  # DINO's ViT-S/16 0.1
    path = tmp_path / "config.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(path).backbone_kwargs == {"drop_path_rate": 0.1}
