"""The history of a W&B run in offline mode, read back from its ``run-ID.wandb`` files.

``wandb.Api`` reads runs from W&B's servers only, and wandb 0.2x+ no longer ships a Python
reader of its local files, which are a LevelDB-style log (W&B's ``:W&B`` header, 32 KiB
blocks of CRC-checked chunks) of ``wandb_internal_pb2.Record`` messages: this reads them
with wandb's own protobuf classes.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BLOCK = 32 * 1024
HEADER = struct.Struct("<4sHB")  # b":W&B", 0xBEE1, version 0
CHUNK = struct.Struct("<IHB")  # CRC32 of type and data, length, type
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def _chunks(data: bytes) -> Iterator[bytes]:
    ident, magic, _ = HEADER.unpack_from(data)
    assert (ident, magic) == (b":W&B", 0xBEE1), "not a .wandb file"
    pos, pending = HEADER.size, b""
    while pos + CHUNK.size <= len(data):
        left = BLOCK - pos % BLOCK
        if left < CHUNK.size:  # a block's tail too short for a header is padding
            pos += left
            continue
        crc, length, kind = CHUNK.unpack_from(data, pos)
        if kind == 0:  # zeros to the block's end
            pos += left
            continue
        body = data[pos + CHUNK.size:pos + CHUNK.size + length]
        assert crc == zlib.crc32(body, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF, "bad CRC"
        pos += CHUNK.size + length
        if kind == FULL:
            yield body
        elif kind == FIRST:
            pending = body
        elif kind == MIDDLE:
            pending += body
        elif kind == LAST:
            yield pending + body


def records(path: str | Path) -> Iterator[Any]:
    """The ``Record`` messages of one ``.wandb`` file, in order."""
    from wandb.proto import wandb_internal_pb2

    for raw in _chunks(Path(path).read_bytes()):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        yield record


def offline_runs(wandb_dir: str | Path) -> list[Path]:
    """The ``.wandb`` files of the offline runs under ``wandb_dir`` (a run's ``wandb/``),
    oldest first."""
    return sorted(Path(wandb_dir).glob("offline-run-*/run-*.wandb"))


def run_info(path: str | Path) -> dict[str, Any]:
    """id, project and group of the run a ``.wandb`` file records."""
    for record in records(path):
        if record.WhichOneof("record_type") == "run":
            run = record.run
            return {"id": run.run_id, "project": run.project, "group": run.run_group}
    raise AssertionError(f"{path}: no run record")


def history(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """(step, {name: value}) of each history row of a ``.wandb`` file, W&B's own ``_step``,
    ``_runtime`` and ``_timestamp`` left out."""
    rows = []
    for record in records(path):
        if record.WhichOneof("record_type") != "history":
            continue
        row = {}
        for item in record.history.item:
            key = item.key or "/".join(item.nested_key)
            if not key.startswith("_"):
                row[key] = json.loads(item.value_json)
        rows.append((record.history.step.num, row))
    return rows
