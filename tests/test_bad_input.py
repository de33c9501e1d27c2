"""Bad input: each row of the "Bad input" table (docs/design.md, Faults) gives one line naming
the problem on stderr and exit code 2, before any Ray work, and leaves what was there untouched."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from adasim_ray.cli import main
from adasim_ray.config import load_config
from adasim_ray.data import fingerprint
from adasim_ray.recipe import open_train_source
from adasim_ray.rundir.checkpoint import MODEL, key_settings, write_checkpoint

DIGITS = ["--data", "digits", "--set", "limit_images=300", "--set", "batch_size=32"]


def _png(path: Path, value: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)


def _parquet(path: Path, indices: list[int], with_index: bool = True) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, format="PNG")
    columns = {"image": [buf.getvalue()] * len(indices), "label": [0] * len(indices)}
    if with_index:
        columns = {"index": indices, **columns}
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)


def _run_dir(root: Path, *overrides: str) -> Path:
    """A run directory holding a complete checkpoint made with the digits settings above."""
    cfg = load_config(None, ["data=digits", "limit_images=300", "batch_size=32", *overrides])
    run = root / "run"
    (run / "checkpoint_000001").mkdir(parents=True)
    (run / "config.yaml").write_text(
        "data: digits\nlimit_images: 300\nbatch_size: 32\n"
        + "".join(f"{o.split('=')[0]}: {o.split('=')[1]}\n" for o in overrides)
    )
    write_checkpoint(run / "checkpoint_000001", model_state={"w": torch.zeros(3)},
                     shard_states=[{}],
                     meta={"epoch": 1,
                           "settings": key_settings(cfg, 300, 96,
                                                    fingerprint(open_train_source(cfg))),
                           "plan_metrics": {}})
    return run


def _empty(root: Path) -> str:
    (root / "empty" / "train").mkdir(parents=True)
    return f"folder:{root / 'empty'}"


def _unlabelled(root: Path) -> str:
    for k in range(40):  # images straight under train/ and test/: no class folders
        _png(root / "flat" / "train" / f"{k}.png", k)
        _png(root / "flat" / "test" / f"{k}.png", k)
    return f"folder:{root / 'flat'}"


def _no_index(root: Path) -> str:
    _parquet(root / "pq" / "train" / "part-0.parquet", [0, 1, 2], with_index=False)
    return f"parquet:{root / 'pq'}"


def _duplicates(root: Path) -> str:
    _parquet(root / "pq" / "train" / "part-0.parquet", [0, 1, 2])
    _parquet(root / "pq" / "train" / "part-1.parquet", [2, 3])
    return f"parquet:{root / 'pq'}"


# (input, argv builder, words the one line must contain)
ROWS = [
    # never placeable on this Ray: one line naming the field before Ray is asked
    ("more CPUs than any node", lambda r: [*DIGITS, "--set", "ray.cpus_per_worker=1000"],
     ["ray.cpus_per_worker", "asks 1000 CPUs", "cannot grow"]),
    ("a keyword the backbone does not take",
     lambda r: [*DIGITS, "--set", "backbone_kwargs.drop_path_ratee=0.1"],
     ["backbone_kwargs", "drop_path_ratee", "unexpected keyword"]),
    ("unknown key", lambda r: [*DIGITS, "--set", "adasim.tauu=1"], ["adasim.tauu"]),
    ("wrong type", lambda r: [*DIGITS, "--set", "epochs=many"], ["epochs"]),
    ("tau < 0", lambda r: [*DIGITS, "--set", "adasim.tau=-0.5"], ["adasim.tau"]),
    ("w < 1", lambda r: [*DIGITS, "--set", "adasim.window=0"], ["adasim.window"]),
    ("K < 1", lambda r: [*DIGITS, "--set", "adasim.topk=0"], ["adasim.topk"]),
    ("K > N", lambda r: ["--data", "digits", "--set", "limit_images=40", "--set",
                         "batch_size=8", "--set", "adasim.topk=64"], ["adasim.topk", "40"]),
    ("more shards than images", lambda r: ["--data", "digits", "--set", "limit_images=40",
                                           "--set", "batch_size=8", "--set",
                                           "ray.cache_shards=64"], ["cache_shards"]),
    ("batch larger than the data set", lambda r: ["--data", "digits", "--set",
                                                  "limit_images=40", "--set",
                                                  "batch_size=64"], ["batch_size"]),
    ("unknown backbone", lambda r: [*DIGITS, "--set", "backbone=resnet9000"], ["resnet9000"]),
    ("unknown method", lambda r: [*DIGITS, "--set", "method=swav"], ["method", "swav"]),
    ("a method setting it refuses (warm-up longer than the run)",
     lambda r: [*DIGITS, "--set", "dino.warmup_epochs=50"], ["dino", "warmup_epochs"]),
    ("missing config file", lambda r: ["--config", str(r / "nope.yaml")], ["nope.yaml"]),
    ("missing data path", lambda r: ["--data", f"folder:{r / 'nowhere'}"], ["nowhere"]),
    ("empty folder", lambda r: ["--data", _empty(r)], ["empty"]),
    ("Parquet shard without the index column", lambda r: ["--data", _no_index(r)],
     ["index"]),
    ("Parquet shards with duplicate indices", lambda r: ["--data", _duplicates(r)],
     ["duplicate"]),
    ("an eval_data without labels (the k-NN needs them)",
     lambda r: [*DIGITS, "--set", f"eval_data={_unlabelled(r)}"], ["eval_data", "no labels"]),
    ("unwritable --output", lambda r: [*DIGITS, "--output", str(_blocker(r) / "runs")],
     ["cannot write"]),
    ("--resume: no such run directory", lambda r: ["--resume", str(r / "gone")], ["gone"]),
    ("--resume: checkpoint of another data set size",
     lambda r: ["--resume", str(_run_dir(r)), "--set", "limit_images=200"], ["num_images"]),
    ("--resume: checkpoint of another method",
     lambda r: ["--resume", str(_run_dir(r)), "--set", "method=simsiam"], ["method"]),
    ("--resume: checkpoint of another backbone",
     lambda r: ["--resume", str(_run_dir(r)), "--set", "backbone=resnet_tiny_cpu"],
     ["backbone"]),
    ("--resume: truncated checkpoint file", lambda r: ["--resume", str(_truncated(r))],
     ["truncated"]),
]


def _blocker(root: Path) -> Path:
    path = root / "a-file"
    path.write_text("")
    return path


def _truncated(root: Path) -> Path:
    run = _run_dir(root)
    model = run / "checkpoint_000001" / MODEL
    model.write_bytes(model.read_bytes()[:20])
    return run


@pytest.mark.parametrize("name,argv,words", ROWS, ids=[row[0] for row in ROWS])
def test_bad_input_is_one_clear_line(name, argv, words, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a stray default run directory would land here
    monkeypatch.setattr("adasim_ray.train.run.init_ray", _no_ray)
    args = argv(tmp_path)
    before = _snapshot(tmp_path)
    code = main(["pretrain", *args] if "--output" in args else
                ["pretrain", *args, "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1, err
    for word in words:
        assert word in err[0], (word, err[0])
    assert _snapshot(tmp_path) == before  # nothing lost, nothing half-made (but out/)


def _no_ray(cfg):
    raise AssertionError("bad input reached Ray")


def _snapshot(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*")
            if p.is_file() and "out" not in p.relative_to(root).parts}
