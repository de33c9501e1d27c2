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
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import torch

from adasim_ray.config import PretrainConfig
from adasim_ray.errors import CheckpointError
from adasim_ray.resources.storage import resolve
from adasim_ray.train.rundir import join, list_dirs, read_text, split

META = "meta.json"
MODEL = "model.pt"
#: Checkpoints are written into a temporary directory of this prefix, then handed over.
STAGING_PREFIX = "adasim-ckpt-"

#: Settings that a resumed run must share with its checkpoint: the state means nothing
#: otherwise (the model, the cache's layout), or the schedule and the data would silently
#: change (the epochs that every schedule spans, the batch and its split over the workers,
#: the data set). A checkpoint from before a key was added is not checked on that key.
KEY_SETTINGS = ("num_images", "method", "backbone", "window", "topk", "cache_shards",
                "feat_dim", "epochs", "batch_size", "num_workers", "cache_dtype", "sim_dtype",
                "data", "data_fingerprint")


def key_settings(cfg: PretrainConfig, num_images: int, feat_dim: int,
                 data_fingerprint: str | None = None) -> dict[str, Any]:
    return {
        "num_images": num_images,
        "method": cfg.method,
        "backbone": cfg.backbone,
        "window": cfg.adasim.window,
        "topk": cfg.adasim.topk,
        "cache_shards": cfg.ray.cache_shards,
        "feat_dim": feat_dim,
        "epochs": cfg.epochs,
        "batch_size": cfg.batch_size,
        "num_workers": cfg.ray.num_workers,
        "cache_dtype": cfg.adasim.cache_dtype,
        "sim_dtype": cfg.adasim.sim_dtype,
        "data": cfg.data,
        "data_fingerprint": data_fingerprint,
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
    text = read_text(join(str(directory), META))
    if text is None:
        raise CheckpointError(f"{directory}: no {META}: the save was interrupted (not loadable)")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{join(str(directory), META)}: unreadable ({err})") from None


def verify(directory: str | Path) -> dict[str, Any]:
    """The meta of a complete checkpoint (a local directory or a URI); CheckpointError (one
    line) if it is not one."""
    meta = read_meta(directory)
    fs, path = resolve(str(directory))
    for name, size in meta.get("files", {}).items():
        info = fs.get_file_info(f"{path.rstrip('/')}/{name}")
        if info.type != pafs.FileType.File:
            raise CheckpointError(f"{directory}: {name} is missing")
        if info.size != size:
            raise CheckpointError(
                f"{directory}: {name} is truncated ({info.size} of {size} bytes)"
            )
    return meta


def read_checkpoint(
    directory: str | Path, *, shards: bool = True
) -> tuple[dict[str, Any], dict[str, Any], list[Any]]:
    """(meta, model state, shard states) of a complete checkpoint directory, local or on
    object storage (read through a local temporary copy, removed after); with
    ``shards=False`` the shard states (gigabytes at scale) are not read and the list is
    empty: only the process that restores the shards needs them."""
    meta = verify(directory)
    count = int(meta["settings"]["cache_shards"]) if shards else 0
    names = [MODEL] + [f"cache_shard_{s}.pt" for s in range(count)]
    if "://" not in str(directory):
        local = Path(directory)
        return meta, _load(local, MODEL), [_load(local, name) for name in names[1:]]
    with tempfile.TemporaryDirectory(prefix="adasim-restore-") as tmp:
        fs, path = resolve(str(directory))
        for name in names:
            try:
                pafs.copy_files(f"{path.rstrip('/')}/{name}", str(Path(tmp, name)),
                                source_filesystem=fs,
                                destination_filesystem=pafs.LocalFileSystem())
            except OSError as err:
                raise CheckpointError(f"{directory}: cannot read {name} ({err})") from None
        return meta, _load(Path(tmp), MODEL), [_load(Path(tmp), name) for name in names[1:]]


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
            f"{directory}: {name} does not load ({' '.join(str(err).split())[:200]})"
        ) from None


def check_compatible(saved: dict[str, Any], current: dict[str, Any], force: bool = False) -> None:
    """Refuse to resume from a checkpoint whose key settings differ (unless forced)."""
    diffs = [
        f"{k}: checkpoint {saved.get(k)!r} vs now {current.get(k)!r}"
        for k in KEY_SETTINGS
        if k in saved and saved.get(k) != current.get(k)
    ]
    if diffs and not force:
        raise CheckpointError(
            "cannot resume: the checkpoint was made with other key settings ("
            + "; ".join(diffs)
            + "); pass --force to resume anyway"
        )


def damaged_checkpoints(run_dir: str | Path) -> list[str]:
    """One line per ``checkpoint_*`` directory of a run (local or on object storage) that
    cannot be loaded, and why."""
    problems = []
    for path in list_dirs(str(run_dir), "checkpoint_"):
        try:
            verify(path)
        except CheckpointError as err:
            problems.append(str(err))
    return problems


def complete_checkpoints(run_dir: str | Path) -> list[str | Path]:
    """The complete ``checkpoint_*`` directories of a run, newest (highest epoch) first;
    interrupted or truncated ones are passed over (see ``damaged_checkpoints``). Local
    runs give Paths, runs on object storage URIs."""
    found = []
    for path in list_dirs(str(run_dir), "checkpoint_"):
        try:
            meta = verify(path)
        except CheckpointError:
            continue
        found.append(((int(meta["epoch"]), split(path)[1]), path))
    local = "://" not in str(run_dir)
    return [Path(p) if local else p for _, p in sorted(found, reverse=True)]


def latest_checkpoint(run_dir: str | Path) -> str | Path | None:
    """The complete ``checkpoint_*`` directory of a run with the highest epoch, if any
    (:func:`complete_checkpoints`)."""
    found = complete_checkpoints(run_dir)
    return found[0] if found else None


def keep_checkpoint(
    directory: str | Path, run_dir: str | Path, epoch: int, keep: int = 2
) -> str | Path:
    """Put a finished checkpoint (a local directory) into ``run_dir/checkpoint_epoch_<epoch>``
    and keep only the ``keep`` newest; used where Ray Train keeps none (local mode).

    On a local disk the copy is renamed into place (atomic); on object storage, which has no
    rename, ``meta.json`` is copied last, so that a copy cut short is never loaded."""
    import shutil

    name = f"checkpoint_epoch_{epoch:05d}"
    if "://" in str(run_dir):
        fs, path = resolve(join(str(run_dir), name))
        local = pafs.LocalFileSystem()
        files = sorted(p.name for p in Path(directory).iterdir() if p.name != META)
        for file in [*files, META]:
            pafs.copy_files(str(Path(directory, file)), f"{path}/{file}",
                            source_filesystem=local, destination_filesystem=fs)
        for old in list_dirs(str(run_dir), "checkpoint_epoch_")[:-keep]:
            fs.delete_dir(resolve(old)[1])
        return join(str(run_dir), name)
    run_dir = Path(run_dir)
    target = run_dir / name
    staging = run_dir / f".staging_epoch_{epoch:05d}"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(directory, staging)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)
    for old in sorted(run_dir.glob("checkpoint_epoch_*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return target
