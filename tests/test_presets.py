"""The recipes shipped in the package: each loads and validates, the GPU ones pass ``check``
against the cluster file on this GPU-less machine, and a run without ``--preset`` and
``--config`` picks one and says which."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from adasim_ray.cli import main
from adasim_ray.commands.args import config_path, run_preset
from adasim_ray.config import load_config, validate
from adasim_ray.presets import PRESETS, choose_preset, preset_path
from adasim_ray.recipe import view_size
from adasim_ray.train.loop import resolve_amp


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_loads_and_validates(name):
    cfg = load_config(preset_path(name))
    validate(cfg, 1_281_167 if name in ("gpu", "node") else 3000)
    assert cfg.ray.use_gpu == (name in ("gpu", "node"))
    # mixed precision wherever a GPU trains (bf16 where supported), off on a CPU
    assert cfg.amp == "auto"
    assert resolve_amp(cfg.amp_mode, torch.device("cpu")) == "off"


@pytest.mark.parametrize(("name", "per_gpu", "workers"), [("gpu", 64, 1), ("node", 64, 8)])
def test_the_gpu_presets_pass_check_on_the_cluster_file(name, per_gpu, workers, capsys):
    code = main(["check", "--preset", name, "--cluster", "cluster.yaml", "--num-images",
                 "1281167", "--json"])
    out = capsys.readouterr().out
    report = json.loads(out.strip().splitlines()[-1])
    assert code == 0, out
    assert report["ok"] and report["batch_per_worker"] == per_gpu
    assert f"{per_gpu} images per GPU and step" in out and f"{workers} worker(s)" in out
    assert report["method_state_bytes"] > 0


def _args(**kw) -> argparse.Namespace:
    base = {"config": None, "preset": None, "data": None, "set": None, "resume": None}
    return argparse.Namespace(**(base | kw))


def test_a_run_without_preset_picks_one_and_says_which(capsys):
    assert run_preset(_args()) == "demo"
    assert "preset demo (a data set built into the package" in capsys.readouterr().out
    assert run_preset(_args(data="folder:/photos")) == "cpu"  # this machine has no GPU
    assert "preset cpu (no GPU" in capsys.readouterr().out
    assert run_preset(_args(data="folder:/photos", set=["ray.use_gpu=true"])) == "gpu"
    assert run_preset(_args(data="mnist", preset="node")) == "node"  # asked for: no line
    assert capsys.readouterr().out.count("[adasim] preset") == 1
    assert run_preset(_args(config="x.yaml")) is None
    assert config_path(_args(data="folder:/photos")).endswith("cpu.yaml")
    assert choose_preset("folder:/x", False, 16) == ("node", "16 GPUs")


def test_the_cpu_preset_caps_the_views_and_keeps_smaller_images():
    cfg = load_config(preset_path("cpu"))

    class Source:
        native_size: int | None = None

    photos, icons = Source(), Source()
    icons.native_size = 32
    assert view_size(cfg, photos) == 64 and view_size(cfg, icons) == 32
    big = Source()
    big.native_size = 375
    assert view_size(cfg, big) == 64
    assert view_size(load_config(preset_path("gpu")), big) == 224
