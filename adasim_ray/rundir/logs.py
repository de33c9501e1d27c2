"""The run's logs of what happened to it, beside its metrics: ``faults.jsonl`` (the faults
injected on purpose, each recorded before it acts), ``resumes.jsonl`` (the epoch every
restart or ``--resume`` continued from) and ``stopped.json`` (a user's error that this launch
met, so that a restart of the worker group raises it at once instead of training up to it
again). One writer each: rank 0, or the first worker to meet the error.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from adasim_ray.errors import AdasimError, CheckpointError, ConfigError, DataError
from adasim_ray.rundir.layout import join, read_text, write_text

FAULTS_LOG = "faults.jsonl"
RESUMES_LOG = "resumes.jsonl"
STOPPED = "stopped.json"
_KINDS = {cls.__name__: cls for cls in (DataError, ConfigError, CheckpointError)}


def read_jsonl(uri: str) -> list[dict[str, Any]]:
    text = read_text(uri) or ""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def append_jsonl(uri: str, entry: dict[str, Any]) -> None:
    """Add a line (the file rewritten whole: object storage cannot append; one writer)."""
    write_text(uri, (read_text(uri) or "") + json.dumps(entry) + "\n")


def fired(run_dir: str | Path) -> list[dict[str, Any]]:
    """The faults a run has injected so far (``faults.jsonl``), oldest first."""
    return read_jsonl(join(str(run_dir), FAULTS_LOG))


def record_fault(run_dir: str, kind: str, at: int, **detail: Any) -> None:
    """Add to ``faults.jsonl`` that fault ``kind@at`` fires now, in this process (``detail``:
    more fields of the record, e.g. the Ray node a ``lose_node`` fault names)."""
    append_jsonl(join(run_dir, FAULTS_LOG),
                 {"fault": kind, "at": at, "pid": os.getpid(), "time": time.time(), **detail})


def record_resume(run_dir: str, epoch: int) -> None:
    """Add to ``RUN_DIR/resumes.jsonl`` that a (re)started worker group continues from the
    checkpoint of ``epoch`` (every resume, faults injected or not)."""
    append_jsonl(join(run_dir, RESUMES_LOG),
                 {"resumed_from_epoch": epoch, "pid": os.getpid(), "time": time.time()})


def resumes(run_dir: str | Path) -> list[int]:
    """The epochs a run continued from after each restart or ``--resume``, in order."""
    return [row["resumed_from_epoch"] for row in read_jsonl(join(str(run_dir), RESUMES_LOG))]


def record_stop(run_dir: str, launch: str, err: AdasimError) -> None:
    """Note in the run directory that this launch met ``err``, a user's error."""
    write_text(join(run_dir, STOPPED), json.dumps(
        {"launch": launch, "type": type(err).__name__, "error": str(err)}))


def raise_if_stopped(run_dir: str, launch: str) -> None:
    """Raise the user's error this launch already met (a restart would meet it again)."""
    text = read_text(join(run_dir, STOPPED))
    if not text:
        return
    entry = json.loads(text)
    if entry.get("launch") == launch:
        raise _KINDS.get(entry.get("type"), DataError)(entry.get("error", ""))
