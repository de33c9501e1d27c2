"""init_weights: the ``init`` section's forms, keys matched strictly or not, a ViT's position
embeddings resampled, and timm's weight-loading arguments refused in ``backbone_kwargs``."""

from __future__ import annotations

import pytest
import torch
from timm.layers import resample_abs_pos_embed

from adasim_ray.backbones import build_backbone
from adasim_ray.config import config_from_dict, load_config, validate
from adasim_ray.errors import ConfigError
from adasim_ray.init_weights import (
    WEIGHT_LOADING_KWARGS,
    InitWeights,
    init_kind,
    load_weights,
    match_weights,
)
from adasim_ray.recipe import build_backbone_for


def _convnet(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_backbone("cnn_tiny_cpu", image_size=8, in_chans=1)[0]


def _equal(a: torch.nn.Module, b: torch.nn.Module) -> list[str]:
    """The names whose tensors are equal in both state dicts."""
    sa, sb = a.state_dict(), b.state_dict()
    return [k for k in sa if torch.equal(sa[k], sb[k])]


def test_a_matching_source_loads_every_tensor():
    source, target = _convnet(1), _convnet(2)
    found = load_weights(target, InitWeights(source.state_dict(), "src.safetensors"))
    assert found.complete and len(found.loaded) == len(target.state_dict())
    assert _equal(source, target) == list(target.state_dict())
    assert found.lines() == [f"[adasim] init: loaded {len(found.loaded)} tensors from "
                             "src.safetensors"]


def _off_by_three(source: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``source``'s state, one tensor dropped, one of another shape, one extra."""
    state = dict(source.state_dict())
    del state["0.weight"]                      # the first conv: missing
    state["4.weight"] = torch.ones(7)          # the second conv: another shape
    state["head.weight"] = torch.zeros(2, 2)   # a classifier the backbone lacks
    return state


def test_strict_refuses_a_partial_match_in_one_line_and_loads_nothing():
    source, target = _convnet(1), _convnet(2)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(ConfigError) as err:
        load_weights(target, InitWeights(_off_by_three(source), "src.pt"))
    message = str(err.value)
    assert "\n" not in message and message.startswith("init.backbone: src.pt does not match")
    assert "1 missing (0.weight)" in message and "1 unexpected (head.weight)" in message
    assert "1 of another shape (4.weight (7 vs 64x32x3x3))" in message
    assert "init.strict=false" in message
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())


def test_non_strict_loads_what_matches_and_lists_the_rest():
    source, target = _convnet(1), _convnet(2)
    untouched = {k: target.state_dict()[k].clone() for k in ("0.weight", "4.weight")}
    found = load_weights(target, InitWeights(_off_by_three(source), "src.pt"), strict=False)
    assert not found.complete
    assert len(found.loaded) == len(target.state_dict()) - 2
    assert sorted(set(target.state_dict()) - set(_equal(source, target))) == [
        "0.weight", "4.weight"]
    assert all(torch.equal(target.state_dict()[k], v) for k, v in untouched.items())
    first, rest = found.lines()
    assert first == f"[adasim] init: loaded {len(found.loaded)} tensors from src.pt"
    assert rest.startswith("[adasim] init: not loaded (init.strict is false): 1 missing")


def test_a_long_list_is_cut_with_a_count():
    target = _convnet(2)
    found = match_weights(target, InitWeights({f"x{k}": torch.zeros(1) for k in range(20)}, "s"))
    assert "20 unexpected (x0, x1," in found.rest() and "x11 and 8 more)" in found.rest()


def test_vit_position_embeddings_are_resampled_to_another_image_size():
    """A small timm ViT (patch 16) trained at 32 px (a 2 x 2 grid) starts a 64 px one
    (4 x 4): the [CLS] position is kept, the grid resampled as timm does, the rest equal."""
    torch.manual_seed(0)
    small, _ = build_backbone("vit_tiny_patch16_224", image_size=32, in_chans=3)
    large, _ = build_backbone("vit_tiny_patch16_224", image_size=64, in_chans=3)
    found = load_weights(large, InitWeights(small.state_dict(), "vit at 32 px"))
    assert found.complete and found.resampled == ["pos_embed"]
    assert large.pos_embed.shape == (1, 1 + 16, 192)
    expected = resample_abs_pos_embed(small.pos_embed.detach(), new_size=[4, 4],
                                      num_prefix_tokens=1)
    assert torch.equal(large.pos_embed.detach(), expected)
    assert torch.equal(large.pos_embed[:, 0], small.pos_embed[:, 0])
    assert _equal(small, large) == [k for k in large.state_dict() if k != "pos_embed"]
    assert "(pos_embed resampled to the image size)" in found.lines()[0]


def test_position_embeddings_of_another_width_are_not_resampled():
    small, _ = build_backbone("vit_tiny_cpu", image_size=28, in_chans=1)
    other, _ = build_backbone("vit_tiny_cpu", image_size=28, in_chans=1, embed_dim=48)
    found = match_weights(other, InitWeights(small.state_dict(), "s"))
    assert "pos_embed (1x50x96 vs 1x50x48)" in found.mismatched


@pytest.mark.parametrize(("text", "kind"), [
    ("timm:vit_small_patch16_224.dino", "timm"), ("w.safetensors", "file"),
    ("s3://b/w.pt", "file"), ("/runs/x.pth", "file"), ("exports/mnist-dino", "folder"),
    ("s3://bucket/runs/run-1.2", "folder"), ("runs/r1/", "folder"),
])
def test_the_kinds_of_source(text, kind):
    assert init_kind(text) == kind


@pytest.mark.parametrize("text", ["w.ckpt", "model.bin", "weights.npz", "timm:", ""])
def test_an_unknown_format_is_one_line_naming_init_backbone(text):
    with pytest.raises(ConfigError) as err:
        load_config(None, [f"init.backbone={text}" if text else "init.backbone=''"])
    assert str(err.value).startswith("init.backbone: ") and "\n" not in str(err.value)


def test_the_section_reads_from_yaml_and_checks_which():
    cfg = load_config(None, ["init.backbone=runs/r1", "init.which=student", "init.strict=false"])
    assert (cfg.init.backbone, cfg.init.which, cfg.init.strict) == ("runs/r1", "student", False)
    assert load_config(None).init.backbone is None
    with pytest.raises(ConfigError, match=r"^init.which: must be one of"):
        load_config(None, ["init.which=online"])


@pytest.mark.parametrize("key", WEIGHT_LOADING_KWARGS)
def test_backbone_kwargs_refuse_timm_weight_loading(key):
    cfg = config_from_dict({"backbone": "resnet18", "backbone_kwargs": {key: "x"}})
    for check in (lambda: validate(cfg), lambda: build_backbone_for(cfg, _Views())):
        with pytest.raises(ConfigError) as err:
            check()
        assert str(err.value).startswith(f"backbone_kwargs: {key} loads weights")
        assert "init section" in str(err.value) and "\n" not in str(err.value)


class _Views:
    size, channels = 32, 3
