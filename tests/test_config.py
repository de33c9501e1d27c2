"""The run configuration: the embedded default validates, bad values fail with one clear line."""

from __future__ import annotations

import pytest

from adasim_ray.cli import default_config_path, main
from adasim_ray.config import ConfigError, config_from_dict, dump_config, load_config, validate
from adasim_ray.configfile import read_yaml


def test_default_config_validates_and_round_trips(tmp_path):
    cfg = load_config(default_config_path())
    assert cfg.data == "mnist" and cfg.method == "dino" and cfg.adasim.mode == "adasim"
    assert cfg.adasim.window < cfg.epochs, "the demo must reach the bootstrapping epochs"
    path = tmp_path / "config.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(path) == cfg
    assert read_yaml(path)["adasim"]["window"] == cfg.adasim.window


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("adasim.tau=-0.5", "adasim.tau"),
        ("adasim.window=0", "adasim.window"),
        ("adasim.topk=0", "adasim.topk"),
        ("adasim.mode=knn", "adasim.mode"),
        ("adasim.tua=0.1", "unknown config key"),
        ("epochs=ten", "epochs: expected an integer"),
        ("method=swav", "method"),
        ("backbone=not_a_model", "backbone"),
        ("ray.cache_shards=0", "ray.cache_shards"),
        ("data=hdfs:/x", "data"),
        ("dino.base_lr=-1", "dino.base_lr"),
        ("augment.crop_scale=[0.5, 0.2]", "augment.crop_scale"),
        ("augment.jitter=[0.4, 0.4, 0.2, 0.9]", "augment.jitter: need 4 strengths"),
        ("augment.jitter=[0.4, 0.4]", "augment.jitter: expected 4 values"),
        ("augment.grayscale_p=1.5", "augment.grayscale_p: need a probability"),
        ("batch_size=100", "ray.num_workers"),
        ("ray.accelerator_type=A100", "ray.accelerator_type: A100 is a GPU type"),
        ("ray.cache_shard_accelerator_type=A10G", "ray.cache_shard_accelerator_type"),
        ("checkpoint_every_steps=-1", "checkpoint_every_steps: must be >= 0, got -1"),
    ],
)
def test_bad_values_name_the_field(override, message):
    extra = ["ray.num_workers=3"] if override.startswith("batch_size") else []
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_config(None, [override, *extra])


def test_limits_that_need_n():
    cfg = load_config(None, ["adasim.topk=50", "batch_size=64"])
    with pytest.raises(ConfigError, match="adasim.topk"):
        validate(cfg, num_images=20)
    with pytest.raises(ConfigError, match="batch_size"):
        validate(load_config(None, ["batch_size=64", "adasim.topk=2"]), num_images=32)
    with pytest.raises(ConfigError, match="cache_shards"):
        validate(load_config(None, ["ray.cache_shards=40", "batch_size=8"]), num_images=32)


def test_cli_reports_a_bad_value_in_one_line(capsys):
    code = main(["pretrain", "--set", "adasim.tau=-1", "--output", "/nonexistent/x"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "adasim.tau" in err[0]


def test_cli_refuses_a_missing_run_directory(capsys, tmp_path):
    code = main(["pretrain", "--resume", str(tmp_path / "nope")])
    assert code == 2
    assert "not a run directory" in capsys.readouterr().err


# Folders of experiments/ whose YAML files are not pretraining configs: `ray up` cluster files
# (tests/test_cluster.py) and Table 3's transfer plan (tests/test_experiments.py).
NOT_PRETRAIN_CONFIGS = ("clusters", "table3")
CLUSTER_FILES = ("cluster.yaml",)  # `ray up` files beside their configs (experiments/scale/)


def test_every_experiment_config_validates():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "experiments"
    configs = sorted(
        p for p in root.rglob("*.yaml")
        if p.relative_to(root).parts[0] not in NOT_PRETRAIN_CONFIGS and p.name not in CLUSTER_FILES
    )
    assert configs, "experiments/ holds no config"
    assert any(p.parent != root for p in configs), "configs in sub-folders are validated too"
    from adasim_ray.sweep.spec import is_sweep_file, load_sweep

    assert any(is_sweep_file(p) for p in configs), "the sweep files are validated too"
    for path in configs:
        if is_sweep_file(path):
            sweep = load_sweep(path)
            for point in sweep.points():
                validate(sweep.trial_config(point))
        else:
            load_config(path)


@pytest.mark.parametrize(("value", "mode"), [("off", "off"), ("fp16", "fp16"), ("bf16", "bf16"),
                                             (True, "fp16"), (False, "off")])
def test_amp_modes_and_older_booleans(value, mode):
    assert config_from_dict({"amp": value}).amp_mode == mode


def test_bad_amp_and_sync_bn_name_the_field():
    with pytest.raises(ConfigError, match=r"^amp: must be one of \['off', 'fp16', 'bf16', "
                                          r"'auto'\]; or expected true or false; got 'fp8'$"):
        load_config(None, ["amp=fp8"])
    with pytest.raises(ConfigError, match="^sync_bn: "):
        load_config(None, ["sync_bn=sometimes"])
    assert load_config(None).sync_bn is True


@pytest.mark.parametrize("value", ["0", "-1", "1.5"])
def test_gpus_per_worker_is_a_fraction_or_whole_gpus(value):
    with pytest.raises(ConfigError, match="^ray.gpus_per_worker: "):
        load_config(None, [f"ray.gpus_per_worker={value}"])
    assert load_config(None, ["ray.gpus_per_worker=0.5"]).ray.gpus_per_worker == 0.5
    assert load_config(None, ["ray.gpus_per_worker=2"]).ray.gpus_per_worker == 2.0


def test_a_number_in_exponent_notation_is_a_number():
    """YAML 1.1 reads ``1e-5`` (no dot) as a string; the config takes it as the number."""
    cfg = load_config(None, ["dino.weight_decay=1e-5", "dino.base_lr=5E-4"])
    assert cfg.dino.weight_decay == 1e-5 and cfg.dino.base_lr == 5e-4
    with pytest.raises(ConfigError, match="dino.weight_decay: expected a number, got 'e-5'"):
        load_config(None, ["dino.weight_decay=e-5"])
