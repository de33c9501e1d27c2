"""What a checkpoint holds, how it is written once and atomically, and how resuming is checked.

A checkpoint directory (handed to ``ray.train.report``, which copies it to the run's storage, a
local path or a cloud URI) holds:

- ``model.pt``: method (student, teacher, heads, DINO centre), optimiser, grad scaler, the
  global iteration (the schedules are indexed by it), RNG state;
- ``cache_shard_<s>.pt``: each cache shard's rows, window and partners, written by rank 0 only
  (the shards live once, in actors, never per worker);
- ``meta.json``: epoch, key settings, the plan metrics and the size of every other file,
  written *last*: a directory without it is an interrupted save, and one whose files differ
  from the sizes it lists was cut short while being copied (Ray copies a reported checkpoint
  file by file, in no set order); neither is ever loaded.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from adasim_ray.config import PretrainConfig
from adasim_ray.errors import CheckpointError

META = "meta.json"
MODEL = "model.pt"

#: Settings that a resumed run must share with its checkpoint (else the state means nothing).
KEY_SETTINGS = ("num_images", "method", "backbone", "window", "topk", "cache_shards", "feat_dim")


def key_settings(cfg: PretrainConfig, num_images: int, feat_dim: int) -> dict[str, Any]:
    return {
        "num_images": num_images,
        "method": cfg.method,
        "backbone": cfg.backbone,
        "window": cfg.adasim.window,
        "topk": cfg.adasim.topk,
        "cache_shards": cfg.ray.cache_shards,
        "feat_dim": feat_dim,
    }


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def write_checkpoint(
    directory: str | Path,
    *,
    model_state: dict[str, Any],
    shard_states: list[dict[str, Any]],
    meta: dict[str, Any],
    between_files: Callable[[], None] | None = None,
) -> None:
    """Fill ``directory`` with a complete checkpoint; ``meta.json`` (with every other file's
    size) is written last. ``between_files`` runs after the model file (a fault hook)."""
    directory = Path(directory)
    _atomic_save(model_state, directory / MODEL)
    if between_files is not None:
        between_files()
    names = [MODEL]
    for s, state in enumerate(shard_states):
        _atomic_save(state, directory / f"cache_shard_{s}.pt")
        names.append(f"cache_shard_{s}.pt")
    meta = meta | {"files": {name: (directory / name).stat().st_size for name in names}}
    tmp = directory / (META + ".tmp")
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, directory / META)


def read_meta(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / META
    if not path.is_file():
        raise CheckpointError(f"{directory}: no {META}: the save was interrupted (not loadable)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: unreadable ({err})") from None


def verify(directory: str | Path) -> dict[str, Any]:
    """The meta of a complete checkpoint; CheckpointError (one line) if it is not one."""
    directory = Path(directory)
    meta = read_meta(directory)
    for name, size in meta.get("files", {}).items():
        path = directory / name
        if not path.is_file():
            raise CheckpointError(f"{directory}: {name} is missing")
        if path.stat().st_size != size:
            raise CheckpointError(
                f"{directory}: {name} is truncated ({path.stat().st_size} of {size} bytes)"
            )
    return meta


def read_checkpoint(
    directory: str | Path, *, shards: bool = True
) -> tuple[dict[str, Any], dict[str, Any], list[Any]]:
    """(meta, model state, shard states) of a complete checkpoint directory; with
    ``shards=False`` the shard states (gigabytes at scale) are not read and the list is empty:
    only the process that restores the shards needs them."""
    directory = Path(directory)
    meta = verify(directory)
    count = int(meta["settings"]["cache_shards"]) if shards else 0
    model = _load(directory, MODEL)
    states = [_load(directory, f"cache_shard_{s}.pt") for s in range(count)]
    return meta, model, states


def _load(directory: Path, name: str) -> Any:
    """One checkpoint file, unpickled with ``weights_only=True``: tensors, numbers, strings
    and containers of them, nothing that runs code. A file that needs more (a pickle that
    would import and call something) is refused in one line: whoever can write to the runs'
    storage must not be able to run code on every node that resumes from it."""
    try:
        return torch.load(directory / name, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        what = f"it would call {found.group(1)}" if found else "not only tensors and numbers"
        raise CheckpointError(
            f"{directory / name}: refused to load: {what}; a checkpoint of this project holds "
            "weights only, so this file was written by something else"
        ) from None
    except (OSError, RuntimeError, EOFError) as err:
        raise CheckpointError(
            f"{directory}: a checkpoint file is truncated or missing ({err})"
        ) from None


def check_compatible(saved: dict[str, Any], current: dict[str, Any], force: bool = False) -> None:
    """Refuse to resume from a checkpoint whose key settings differ (unless forced)."""
    diffs = [
        f"{k}: checkpoint {saved.get(k)!r} vs now {current.get(k)!r}"
        for k in KEY_SETTINGS
        if saved.get(k) != current.get(k)
    ]
    if diffs and not force:
        raise CheckpointError(
            "cannot resume: the checkpoint was made with other key settings ("
            + "; ".join(diffs)
            + "); pass --force to resume anyway"
        )


def damaged_checkpoints(run_dir: str | Path) -> list[str]:
    """One line per ``checkpoint_*`` directory of a run that cannot be loaded, and why."""
    problems = []
    for path in sorted(Path(run_dir).glob("checkpoint_*")):
        try:
            verify(path)
        except CheckpointError as err:
            problems.append(str(err))
    return problems


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The complete ``checkpoint_*`` directory of a run with the highest epoch, if any;
    interrupted or truncated ones are passed over (see ``damaged_checkpoints``)."""
    best: tuple[int, str] | None = None
    best_path = None
    for path in Path(run_dir).glob("checkpoint_*"):
        try:
            meta = verify(path)
        except CheckpointError:
            continue
        key = (int(meta["epoch"]), path.name)
        if best is None or key > best:
            best, best_path = key, path
    return best_path


def keep_local_checkpoint(
    directory: str | Path, run_dir: str | Path, epoch: int, keep: int = 2
) -> Path:
    """Move a finished checkpoint into ``run_dir/checkpoint_epoch_<epoch>`` (a rename: atomic on
    one file system) and keep only the ``keep`` newest; used where Ray Train keeps none."""
    import shutil

    run_dir = Path(run_dir)
    target = run_dir / f"checkpoint_epoch_{epoch:05d}"
    staging = run_dir / f".staging_epoch_{epoch:05d}"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(directory, staging)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)
    for old in sorted(run_dir.glob("checkpoint_epoch_*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return target
