"""``pretrain --baselines``: the random-init and raw-pixel rows are measured on the run's own
eval split, and the table's header says that split's real sizes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from adasim_ray.commands.pretrain import _baselines, _table
from adasim_ray.config import load_config
from adasim_ray.presets import preset_path


def _class_sorted(root: Path, per_class: dict[str, int], side: int) -> None:
    rng = np.random.default_rng(0)
    for split, count in per_class.items():
        for label in range(3):
            for i in range(count):
                image = rng.integers(0, 30, size=(side, side, 3), dtype=np.uint8)
                image[..., label] += 200  # the class is the colour
                path = root / split / f"class_{label}" / f"{i:03d}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(image).save(path)


def test_the_table_names_the_split_it_measured(tmp_path):
    _class_sorted(tmp_path / "own", {"train": 10, "test": 4}, side=20)
    cfg = load_config(str(preset_path("cpu")), [f"data=folder:{tmp_path / 'own'}",
                                                "eval.linear=false"])
    rows, (memory, test) = _baselines(cfg)
    assert (memory, test) == (30, 12)
    assert [name for name, _, _ in rows] == ["same network, random init", "raw pixels"]
    # three classes of distinct colours: raw pixels find them all
    assert rows[1][1] == 1.0
    header = _table(rows, cfg, memory, test).splitlines()[0]
    assert "(12 images; memory / probe training: 30 train images)" in header
    assert "None" not in header
