"""A run directory to read back, for the tests of what reads one (``export``, ``init``): its
checkpoint holds a model with moved weights on the digits, and the features a backbone gives
its test images."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adasim_ray.config import PretrainConfig, dump_config, load_config
from adasim_ray.recipe import build_model, make_views, open_eval_sources, open_train_source
from adasim_ray.rundir.checkpoint import key_settings, write_checkpoint

#: A small DINO on 300 digits: a cnn_tiny_cpu backbone (128 features) and a small head.
DIGITS = ["data=digits", "limit_images=300", "batch_size=32", "backbone=cnn_tiny_cpu",
          "dino.out_dim=128", "dino.hidden_dim=64", "dino.bottleneck_dim=32"]


def write_trained_run(root: Path, *overrides: str, shard_states: Sequence[dict[str, Any]] = ()
                      ) -> tuple[Path, torch.nn.Module, PretrainConfig]:
    """``root/run``, whose checkpoint (epoch 2) holds a model of ``DIGITS`` + ``overrides``
    with moved (not initial) weights, the teacher apart from the student; with the model and
    its config."""
    cfg = load_config(None, [*DIGITS, *overrides])
    model = build_model(cfg, make_views(cfg, open_train_source(cfg)), 300)
    with torch.no_grad():
        for k, p in enumerate(model.parameters()):
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(k)))
    run = root / "run"
    (run / "checkpoint_000002").mkdir(parents=True)
    (run / "config.yaml").write_text(dump_config(cfg))
    write_checkpoint(run / "checkpoint_000002", model_state={"model": model.state_dict()},
                     shard_states=list(shard_states),
                     meta={"epoch": 2, "settings": key_settings(cfg, 300, 128),
                           "plan_metrics": {}})
    return run, model, cfg


def eval_features(backbone: torch.nn.Module, cfg: PretrainConfig) -> torch.Tensor:
    """The backbone's features of 16 test images, as the k-NN sees them."""
    _, test = open_eval_sources(cfg)
    views = make_views(cfg, open_train_source(cfg))
    x = torch.stack([views.eval_transform(im) for im in test.load_many(np.arange(16))])
    with torch.no_grad():
        return backbone.eval()(x)
