"""The method registry: a method is one module that registers itself; config and recipe name
none. Proved with a small dummy method that trains one local-mode epoch through the Ray layer."""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from adasim_ray.config import ConfigError, config_from_dict, dump_config, load_config
from adasim_ray.configfile import read_yaml
from adasim_ray.methods import METHODS, StepOutput, method_spec, register_method
from adasim_ray.methods.base import Schedules, SelfDistillationMethod


@dataclass(frozen=True)
class DummyConfig:
    """The section ``dummy:``: a projector width and a learning rate."""

    proj_dim: int = 16
    lr: float = 0.01

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"lr: must be > 0, got {self.lr}")


class Dummy(SelfDistillationMethod):
    """Pulls the projections of the two views together (no collapse prevention: a test).
    What the base class gives (the step wrapper, the schedule loop, eval_backbone,
    state_bytes) it does not write again."""

    monitors = ("loss", "dummy_gap")

    def __init__(self, backbone: nn.Module, feat_dim: int, *, epochs: int,
                 iters_per_epoch: int, batch_size: int, config: DummyConfig) -> None:
        super().__init__(feat_dim, epochs=epochs, iters_per_epoch=iters_per_epoch)
        self.config = config
        self.schedules = Schedules(lr=np.full(self.total_iters, config.lr))
        self.backbone = backbone
        self.projector = nn.Linear(feat_dim, config.proj_dim)
        self.steps_taken = 0

    def forward(self, anchor: torch.Tensor, partner: torch.Tensor, it: int) -> StepOutput:
        feature = self.backbone(anchor)
        z0, z1 = self.projector(feature), self.projector(self.backbone(partner))
        loss = F.mse_loss(z0, z1.detach())
        gap = (z0 - z1).abs().mean().detach()
        return StepOutput(loss, feature.detach().float(), {"loss": loss.detach(),
                                                            "dummy_gap": gap})

    def build_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.config.lr)

    def after_step(self, it: int) -> None:
        self.steps_taken += 1

    def encoders(self) -> dict[str, nn.Module]:
        return {"teacher": self.backbone, "student": self.backbone}


@pytest.fixture
def dummy_method():
    """``dummy`` registered for one test, then removed again.

    A method in ``adasim_ray/methods/`` is importable in every Ray process; this test module
    is not (pytest imports it by file path), so Ray's pickler sends its classes by value."""
    from ray import cloudpickle

    module = sys.modules[__name__]
    register_method("dummy", DummyConfig)(Dummy)
    cloudpickle.register_pickle_by_value(module)
    yield Dummy
    cloudpickle.unregister_pickle_by_value(module)
    METHODS.pop("dummy")


def test_builtin_methods_are_registered():
    assert {"dino", "simsiam"} <= set(METHODS)
    assert method_spec("dino").config.__name__ == "DINOConfig"
    with pytest.raises(ValueError, match="unknown method 'swav'"):
        method_spec("swav")


def test_a_name_cannot_be_taken_twice(dummy_method):
    class Other(Dummy):
        pass

    with pytest.raises(ValueError, match="already registered"):
        register_method("dummy", DummyConfig)(Other)
    register_method("dummy", DummyConfig)(Dummy)  # the same class again: a re-import


def test_a_registered_method_gets_its_config_section(dummy_method, tmp_path):
    cfg = load_config(None, ["method=dummy", "dummy.proj_dim=8"])
    assert cfg.method_config == DummyConfig(proj_dim=8)
    assert cfg.dino == config_from_dict({}).dino  # the other sections stay
    path = tmp_path / "config.yaml"
    path.write_text(dump_config(cfg))
    assert read_yaml(path)["dummy"] == {"proj_dim": 8, "lr": 0.01}
    assert load_config(path) == cfg
    with pytest.raises(ConfigError, match=r"dummy\.lr: must be > 0"):
        load_config(None, ["method=dummy", "dummy.lr=0"])
    with pytest.raises(ConfigError, match="dummy.proj_dimm: unknown config key"):
        load_config(None, ["dummy.proj_dimm=3"])


def test_unregistered_method_is_refused_in_one_line():
    refused = r"^method: must be one of \[.*'dino', 'simsiam'\], got 'dummy'$"
    with pytest.raises(ConfigError, match=refused):
        load_config(None, ["method=dummy"])
    with pytest.raises(ConfigError, match="dummy: unknown config key"):
        load_config(None, ["dummy.lr=0.1"])


@pytest.mark.ray
def test_dummy_method_trains_one_local_mode_epoch(ray_session, dummy_method, tmp_path):
    from adasim_ray.train.run import pretrain

    cfg = load_config(None, [
        "method=dummy", "data=digits", "limit_images=128", "backbone=cnn_tiny_cpu",
        "epochs=1", "batch_size=32", "adasim.topk=2", "eval.max_train=200",
        "eval.max_test=60", "eval.linear=false", "eval.fewshot=false", "ray.num_workers=0",
    ])
    summary = pretrain(cfg, str(tmp_path), log_every=1000)
    final = summary["final"]
    assert summary["epochs"] == 1 and final["epoch"] == 1
    assert final["loss"] == final["loss"] and final["loss"] >= 0  # a real number
    assert 0.0 <= final["knn_top1"] <= 1.0
    # The monitors the method declares reach metrics.jsonl and TensorBoard; DINO's do not.
    assert final["dummy_gap"] >= 0.0 and "teacher_entropy" not in final
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(f"{summary['run_dir']}/tensorboard")
    events.Reload()
    assert {"step/dummy_gap", "step/loss", "step/lr"} <= set(events.Tags()["scalars"])
    stored = read_yaml(f"{summary['run_dir']}/config.yaml")
    assert stored["method"] == "dummy" and stored["dummy"] == dataclasses.asdict(DummyConfig())


def _names_in_code(source: str) -> set[str]:
    """Every identifier, imported module and string constant of ``source``, docstrings and
    comments left out."""
    import ast

    tree = ast.parse(source)
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                       ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            found.add(node.id)
        elif isinstance(node, ast.Attribute):
            found.add(node.attr)
        elif isinstance(node, ast.alias):
            found.add(node.name)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and id(node) not in docstrings:
            found.add(node.value)
    return found


def test_nothing_outside_methods_imports_or_names_byol():
    """BYOL is one file of ``methods/``: no other module of the package (nor the command
    line) imports it or names it in code."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    files = [p for p in (root / "adasim_ray").rglob("*.py")
             if "methods" not in p.relative_to(root / "adasim_ray").parts[:1]]
    files += [root / "launch.py", root / "hubconf.py"]
    offenders = sorted(str(p.relative_to(root)) for p in files
                       if any("byol" in name.lower() for name in _names_in_code(p.read_text())))
    assert not offenders, f"files outside adasim_ray/methods/ that name BYOL: {offenders}"
    assert "byol" in METHODS  # and yet it is a registered method
