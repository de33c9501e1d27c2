"""What a checkpoint holds, how it is written once and atomically, and how resuming is checked.

A checkpoint directory (handed to ``ray.train.report``, which copies it to the run's storage, a
local path or a cloud URI) holds:

- ``model.pt``: method (student, teacher, heads, DINO centre), optimiser, grad scaler, the
  global iteration (the schedules are indexed by it), RNG state;
- ``meta.json``: epoch, key settings, the plan metrics, the size of every other file and the
  cache shards' files with their sizes, written *last*: a directory without it is an
  interrupted save, and one whose files differ from the sizes it lists was cut short while
  being copied (Ray copies a reported checkpoint file by file, in no set order); neither is
  ever loaded.

The cache shards' rows, window and partners (4.9 GB at ImageNet-1k) do not pass through rank 0
or Ray's object store: each shard actor writes its own file straight to the run's storage,
``RUN_DIR/shards/epoch_<E>-<id>/cache_shard_<s>.pt`` (:func:`shard_file`; a new folder per
save, so that a redone epoch never overwrites the files of a checkpoint that lists them), and
reads it back itself on restore. Folders that no kept checkpoint lists are removed
(:func:`prune_shard_files`). Checkpoints from before hold ``cache_shard_<s>.pt`` inside;
they still load.
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
from adasim_ray.resources.store import download, guarded, require_room, state_bytes, upload
from adasim_ray.rundir.layout import join, list_dirs, read_text, split

META = "meta.json"
MODEL = "model.pt"
#: Checkpoints are written into a temporary directory of this prefix, then handed over.
STAGING_PREFIX = "adasim-ckpt-"
SHARDS_DIR = "shards"

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


def shard_file(epoch: int, shard: int, save_id: str) -> str:
    """Where shard ``shard`` of the save ``save_id`` of epoch ``epoch`` goes, relative to the
    run directory."""
    return f"{SHARDS_DIR}/epoch_{epoch:05d}-{save_id}/cache_shard_{shard}.pt"


def save_state_file(state: Any, uri: str) -> int:
    """``torch.save`` ``state`` to ``uri`` (a local path: written under a temporary name and
    renamed; object storage: written locally, then copied); returns its size in bytes. A disk
    without room for it is a one-line StorageError before anything is written there."""
    need = state_bytes(state) + 2**20  # and torch.save's own few bytes a tensor
    if "://" not in uri:
        path = Path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        require_room(path.parent, need, f"{path.name}")
        _atomic_save(state, path)
        return path.stat().st_size
    require_room(tempfile.gettempdir(), need, f"staging {split(uri)[1]} for {uri}",
                 hint="point TMPDIR at a larger disk")
    fs, path = resolve(uri)
    with tempfile.TemporaryDirectory(prefix=STAGING_PREFIX) as tmp:
        local = Path(tmp, "state.pt")
        torch.save(state, local)
        guarded(uri, lambda: upload(local, fs, path))  # retried whole, its errors raised
        return local.stat().st_size


def load_state_file(uri: str) -> Any:
    """A file written by :func:`save_state_file`, loaded with ``weights_only=True``."""
    if "://" not in uri:
        return _load(Path(uri).parent, Path(uri).name)
    with tempfile.TemporaryDirectory(prefix="adasim-restore-") as tmp:
        try:
            download(uri, Path(tmp, "state.pt"))
        except OSError as err:
            raise CheckpointError(f"{uri}: cannot read ({err})") from None
        return _load(Path(tmp), "state.pt", shown=uri)


def write_checkpoint(
    directory: str | Path,
    *,
    model_state: dict[str, Any],
    meta: dict[str, Any],
    shard_states: list[dict[str, Any]] = (),  # type: ignore[assignment]
    shard_files: list[tuple[str, int]] = (),  # type: ignore[assignment]
    between_files: Callable[[], None] | None = None,
) -> None:
    """Fill ``directory`` with a complete checkpoint; ``meta.json`` (with every other file's
    size) is written last. ``shard_files`` lists the files the shard actors wrote (path
    relative to the run directory, size); ``shard_states`` writes the states inside instead
    (the older layout). ``between_files`` runs after the model file (a fault hook)."""
    directory = Path(directory)
    _atomic_save(model_state, directory / MODEL)
    if between_files is not None:
        between_files()
    names = [MODEL]
    for s, state in enumerate(shard_states):
        _atomic_save(state, directory / f"cache_shard_{s}.pt")
        names.append(f"cache_shard_{s}.pt")
    meta = meta | {"files": {name: (directory / name).stat().st_size for name in names}}
    if shard_files:
        meta["shard_files"] = [[path, int(size)] for path, size in shard_files]
    tmp = directory / (META + ".tmp")
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, directory / META)


def read_meta(directory: str | Path) -> dict[str, Any]:
    text = read_text(join(str(directory), META))
    if text is None:
        raise CheckpointError(f"{directory}: no {META}: the save was interrupted (not loadable)")
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{join(str(directory), META)}: unreadable ({err})") from None
    names = [*meta.get("files", {}), *(path for path, _ in meta.get("shard_files", []))]
    for name in names:
        if not _inside(str(name)):
            raise CheckpointError(f"{join(str(directory), META)}: lists {name!r}, a file "
                                  "outside the run directory: not loaded")
    return meta


def _inside(name: str) -> bool:
    """Whether a file name that ``meta.json`` lists stays inside its directory: relative,
    no ``..`` segment, no URI, no drive or home prefix (a tampered or foreign meta.json
    must not make a resume read elsewhere)."""
    parts = name.replace("\\", "/").split("/")
    return (bool(name) and not name.startswith(("/", "~")) and "://" not in name
            and ":" not in parts[0] and ".." not in parts and "" not in parts)


def verify(directory: str | Path, run_dir: str | None = None) -> dict[str, Any]:
    """The meta of a complete checkpoint (a local directory or a URI; its shard files are
    looked for in ``run_dir``, by default the directory's parent); CheckpointError (one line)
    if it is not one."""
    meta = read_meta(directory)
    listed = [(join(str(directory), name), name, size)
              for name, size in meta.get("files", {}).items()]
    base = run_dir or split(str(directory))[0]
    listed += [(join(base, path), path, size) for path, size in meta.get("shard_files", [])]
    for uri, name, size in listed:
        fs, path = resolve(uri)
        info = fs.get_file_info(path)
        if info.type != pafs.FileType.File:
            raise CheckpointError(f"{directory}: {name} is missing")
        if info.size != size:
            raise CheckpointError(
                f"{directory}: {name} is truncated ({info.size} of {size} bytes)"
            )
    return meta


def read_checkpoint(
    directory: str | Path, *, shards: bool = True, run_dir: str | None = None
) -> tuple[dict[str, Any], dict[str, Any], list[Any]]:
    """(meta, model state, shard states) of a complete checkpoint directory, local or on
    object storage (read through a local temporary copy, removed after); with
    ``shards=False`` the shard states (gigabytes at scale) are not read and the list is
    empty: a run restores its shards in the shard actors (:func:`shard_uris`), so only the
    commands that inspect a run (audit, visualize) read them here."""
    meta = verify(directory, run_dir)
    if shards and meta.get("shard_files"):
        model = read_checkpoint(directory, shards=False, run_dir=run_dir)[1]
        return meta, model, [load_state_file(uri) for uri in
                             shard_uris(meta, run_dir or split(str(directory))[0])]
    count = int(meta["settings"]["cache_shards"]) if shards else 0
    names = [MODEL] + [f"cache_shard_{s}.pt" for s in range(count)]
    if "://" not in str(directory):
        local = Path(directory)
        return meta, _load(local, MODEL), [_load(local, name) for name in names[1:]]
    with tempfile.TemporaryDirectory(prefix="adasim-restore-") as tmp:
        for name in names:
            try:
                download(join(str(directory), name), Path(tmp, name))
            except OSError as err:
                raise CheckpointError(f"{directory}: cannot read {name} ({err})") from None
        # Errors name the checkpoint's files where the user put them, not the copy.
        model, *states = [_load(Path(tmp), name, shown=join(str(directory), name))
                          for name in names]
        return meta, model, states


def shard_uris(meta: dict[str, Any], run_dir: str) -> list[str]:
    """Where the shard files of a checkpoint's ``meta`` are, in shard order; empty for a
    checkpoint that holds its shard states inside (the older layout)."""
    return [join(run_dir, path) for path, _ in meta.get("shard_files", [])]


def prune_shard_files(run_dir: str, keep: str | None = None) -> None:
    """Remove the shard folders that no complete checkpoint of the run lists (older than the
    oldest listed one), except ``keep`` (the save in progress, not yet listed). Ray Train
    removes old checkpoints while this runs: when a listed checkpoint cannot be read any
    more, nothing is removed this time (the next save prunes)."""
    listed = set()
    for checkpoint in complete_checkpoints(run_dir):
        try:
            meta = read_meta(checkpoint)
        except CheckpointError:
            return
        listed |= {split(path)[0] for path, _ in meta.get("shard_files", [])}
    if not listed:
        return
    oldest = min(split(path)[1] for path in listed)  # epoch_<E>-<id>: by epoch first
    for folder in list_dirs(join(run_dir, SHARDS_DIR), "epoch_"):
        name = split(folder)[1]
        if join(SHARDS_DIR, name) in listed or name == keep or name[:11] >= oldest[:11]:
            continue
        fs, path = resolve(folder)
        fs.delete_dir(path)


def _load(directory: Path, name: str, shown: str | None = None) -> Any:
    """One checkpoint file, unpickled with ``weights_only=True``: tensors, numbers, strings
    and containers of them, nothing that runs code. A file that needs more (a pickle that
    would import and call something) is refused in one line: whoever can write to the runs'
    storage must not be able to run code on every node that resumes from it. Errors name
    ``shown`` (the file's URI, for a local copy of a remote one), else the file's path."""
    where = shown or str(directory / name)
    try:
        return torch.load(directory / name, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        what = f"it would call {found.group(1)}" if found else "not only tensors and numbers"
        raise CheckpointError(
            f"{where}: refused to load: {what}; a checkpoint of this project holds "
            "weights only, so this file was written by something else"
        ) from None
    except (OSError, RuntimeError, EOFError) as err:
        raise CheckpointError(
            f"{where}: does not load ({' '.join(str(err).split())[:200]})"
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
        # a checkpoint inside an epoch (``step``) is newer than the one of the epoch before
        found.append(((int(meta["epoch"]), int(meta.get("step", 0)), split(path)[1]), path))
    local = "://" not in str(run_dir)
    return [Path(p) if local else p for _, p in sorted(found, reverse=True)]


def latest_checkpoint(run_dir: str | Path) -> str | Path | None:
    """The complete ``checkpoint_*`` directory of a run with the highest epoch, if any
    (:func:`complete_checkpoints`)."""
    found = complete_checkpoints(run_dir)
    return found[0] if found else None


def keep_checkpoint(
    directory: str | Path, run_dir: str | Path, epoch: int, keep: int = 2, step: int = 0
) -> str | Path:
    """Put a finished checkpoint (a local directory) into ``run_dir/checkpoint_epoch_<epoch>``
    (``..._step_<step>`` for one inside the next epoch) and keep only the ``keep`` newest;
    used where Ray Train keeps none (local mode) and for the checkpoints inside an epoch.

    On a local disk the copy is renamed into place (atomic); on object storage, which has no
    rename, ``meta.json`` is copied last, so that a copy cut short is never loaded."""
    import shutil

    name = f"checkpoint_epoch_{epoch:05d}" + (f"{STEP_MARK}{step:07d}" if step else "")
    if "://" in str(run_dir):
        fs, path = resolve(join(str(run_dir), name))
        files = sorted(p.name for p in Path(directory).iterdir() if p.name != META)
        for file in [*files, META]:
            guarded(f"{join(str(run_dir), name)}/{file}",
                    lambda file=file: upload(Path(directory, file), fs, f"{path}/{file}"))
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


#: In the name of a checkpoint taken inside an epoch: ``checkpoint_epoch_00001_step_0000040``.
STEP_MARK = "_step_"


def drop_step_checkpoints(run_dir: str | Path) -> None:
    """Remove the checkpoints taken inside an epoch, once a later epoch's is saved."""
    for path in list_dirs(str(run_dir), "checkpoint_epoch_"):
        if STEP_MARK in split(path)[1]:
            fs, where = resolve(path)
            fs.delete_dir(where)


def rng_state() -> dict[str, Any]:
    """Every random state a resume needs, as tensors and numbers (``weights_only`` loads them):
    torch's CPU generator, each CUDA device's, numpy's global generator and Python's."""
    import random

    import numpy as np

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": {"version": int(version), "internal": torch.tensor(internal,
                                                                      dtype=torch.int64),
                   "gauss_next": gauss_next},
    }


def restore_rng(state: Any) -> None:
    """Put back what :func:`rng_state` saved (a checkpoint from before it holds torch's CPU
    state alone, as a tensor; CUDA states are restored on as many devices as both have)."""
    import random

    import numpy as np

    if isinstance(state, torch.Tensor):
        torch.set_rng_state(state)
        return
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available():
        devices = min(len(cuda), torch.cuda.device_count())
        for device in range(devices):
            torch.cuda.set_rng_state(cuda[device], device)
    if "numpy" in state:
        n = state["numpy"]
        np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"],
                             n["has_gauss"], n["cached"]))
    if "python" in state:
        p = state["python"]
        random.setstate((p["version"], tuple(int(v) for v in p["internal"].tolist()),
                         p["gauss_next"]))
