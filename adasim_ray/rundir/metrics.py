"""``metrics.jsonl``: one JSON object per finished epoch (the training loop's epoch metrics,
the plan's bootstrapping metrics and the evaluation), read by ``visualize``, the sweep report
and the tests."""

from __future__ import annotations

import json
from typing import Any

from adasim_ray.rundir.layout import dumps, join, read_text, write_text

METRICS = "metrics.jsonl"


class MetricsLog:
    """``metrics.jsonl`` of a run: one line per finished epoch, rewritten whole on each append
    (small; works on object stores that cannot append)."""

    def __init__(self, run_dir: str) -> None:
        self.uri = join(run_dir, METRICS)

    def read(self) -> list[dict[str, Any]]:
        text = read_text(self.uri) or ""
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def truncate(self, epochs_done: int) -> None:
        """Keep the lines of epochs 1..epochs_done (a resumed run redoes the later ones)."""
        rows = [r for r in self.read() if int(r["epoch"]) <= epochs_done]
        write_text(self.uri, "".join(dumps(r) + "\n" for r in rows))

    def append(self, row: dict[str, Any]) -> None:
        rows = self.read() + [row]
        write_text(self.uri, "".join(dumps(r) + "\n" for r in rows))
