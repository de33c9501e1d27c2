"""DINO's linear protocol (``launch.py eval --linear-protocol dino``): the ViT features it
trains on, the lr sweep trained side by side, reproducibility, the command's output."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from adasim_ray.augmentations import GlobalViews
from adasim_ray.backbones import build_backbone
from adasim_ray.cli import main
from adasim_ray.evaluation.linear_dino import (
    DINO_LRS,
    DinoLinearSettings,
    dino_linear,
    frozen_features,
    parse_lrs,
    vit_layout,
)


def test_vit_features_are_the_cls_tokens_of_the_last_blocks():
    torch.manual_seed(0)
    vit, dim = build_backbone("vit_tiny_cpu", image_size=16, in_chans=3)
    vit.eval()
    x = torch.randn(2, 3, 16, 16)
    layout = vit_layout(vit, DinoLinearSettings())
    assert layout == (4, False)  # DINO's ViT-S choice below a width of 768
    feats = frozen_features(vit, x, layout)
    assert feats.shape == (2, 4 * dim)
    with torch.no_grad():  # the last block's normed [CLS] is the model's own pooled feature
        assert torch.allclose(feats[:, -dim:], vit.forward_features(x)[:, 0], atol=1e-5)
    pooled = frozen_features(vit, x, (1, True))
    assert pooled.shape == (2, 2 * dim)


def test_a_convnet_has_its_pooled_output_and_refuses_blocks():
    cnn, _ = build_backbone("cnn_tiny_cpu", image_size=8, in_chans=1)
    assert vit_layout(cnn, DinoLinearSettings()) is None
    with pytest.raises(ValueError, match="not a ViT"):
        vit_layout(cnn, DinoLinearSettings(n_last_blocks=2))


def _run(digits_split, seed: int) -> dict:
    train, test = digits_split
    backbone = torch.nn.Flatten()  # pixels as features: a backbone whose features are known
    views = GlobalViews(size=8, channels=1, mean=(0.5,), std=(0.25,), flip=False,
                        eval_crop_fraction=1.0)
    crops = GlobalViews(size=8, channels=1, mean=(0.5,), std=(0.25,), flip=False,
                        crop_scale=(0.08, 1.0), jitter_p=0.0, grayscale_p=0.0,
                        blur_p=(0.0, 0.0), solarize_p=(0.0, 0.0))
    settings = DinoLinearSettings(epochs=3, lrs=(1e-3, 0.3, 3.0), batch_size=128)
    return dino_linear(backbone, train, test, lambda ims, g: crops.views(ims, 0, g),
                       views.eval_transform, settings=settings, seed=seed)


def test_the_lr_sweep_reports_its_best_and_is_reproducible(digits_split, capsys):
    first = _run(digits_split, seed=1)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "DINO protocol" in ln]
    assert [ln.split(" epoch ")[1].split(":")[0] for ln in lines if " epoch " in ln] == [
        "1/3", "2/3", "3/3"]
    by_lr = first["linear_by_lr"]
    assert list(by_lr) == ["0.001", "0.3", "3"]
    assert first["linear_top1"] == max(by_lr.values())
    assert by_lr[f"{first['linear_lr']:g}"] == first["linear_top1"]
    assert first["linear_top1"] > 0.6  # 10 classes of digits; linear on pixels reaches ~0.9
    assert len(set(by_lr.values())) > 1  # the lrs trained apart, not one layer reported thrice
    assert _run(digits_split, seed=1) == first
    assert _run(digits_split, seed=2)["linear_by_lr"] != by_lr


def test_lrs_parse_and_the_command_line_default_is_dinos_sweep():
    from adasim_ray.cli import build_parser

    args = build_parser().parse_args(["eval", "--raw-pixels", "--data", "digits"])
    assert parse_lrs(args.linear_lrs) == DINO_LRS
    with pytest.raises(ValueError, match="--linear-lrs"):
        parse_lrs("1e-3,fast")


def test_eval_with_the_dino_protocol_names_it(capsys):
    code = main(["eval", "--random-init", "cnn_tiny_cpu", "--data", "digits", "--no-fewshot",
                 "--linear-protocol", "dino", "--linear-epochs", "1", "--linear-lrs", "0.1,1",
                 "--max-train", "400", "--max-test", "200", "--json"])
    out = capsys.readouterr().out
    assert code == 0
    result = json.loads(out.strip().splitlines()[-1])
    assert result["linear_protocol"] == "dino" and result["linear_epochs"] == 1
    assert set(result["linear_by_lr"]) == {"0.1", "1"}
    assert "linear_top1 (DINO protocol: SGD 1 epochs" in out
    assert np.isfinite(result["knn_top1"])


def test_the_fast_probe_is_named_as_such(capsys):
    code = main(["eval", "--raw-pixels", "--data", "digits", "--no-fewshot", "--max-train",
                 "300", "--max-test", "100", "--json"])
    out = capsys.readouterr().out
    assert code == 0 and "fast probe: L-BFGS on centre-crop features" in out
    assert json.loads(out.strip().splitlines()[-1])["linear_protocol"] == "lbfgs-centre-crop"


@pytest.mark.parametrize("extra, words", [
    (["--no-linear"], "contradict"),
    (["--linear-epochs", "0"], "linear epochs must be >= 1"),
])
def test_bad_protocol_options_are_one_line(extra, words, capsys):
    code = main(["eval", "--random-init", "cnn_tiny_cpu", "--data", "digits",
                 "--linear-protocol", "dino", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and words in err[0]
