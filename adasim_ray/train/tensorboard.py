"""TensorBoard of a run, written by rank 0: the step's scalars every ``log_every`` steps, the
epoch's metrics, and Fig. 1 (supports and partner probabilities) at each checkpoint.

Every value is logged against the global step (steps done so far), so that one axis serves
them all and a restarted run can hide what it redoes: the writer of a run resumed at epoch E
purges the steps after E's end (``SummaryWriter(purge_step=...)``). Event files go to
``RUN/tensorboard/``: written there directly when the run directory is local, else written
to a local temporary directory on rank 0's node and copied to ``RUN/tensorboard/`` on the
storage after each epoch (``sync``), so that ``tensorboard --logdir s3://BUCKET/RUN`` reads
them (TensorBoard reads ``s3://`` with boto3; ``S3_ENDPOINT`` names another S3 API).
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from adasim_ray.resources.storage import resolve
from adasim_ray.resources.store import guarded, upload
from adasim_ray.rundir.layout import join, split

TENSORBOARD = "tensorboard"


class RunBoard:
    """The TensorBoard writer of a run (``run_dir`` local or a URI); ``purge_step``: the first
    global step that a resumed run redoes (None for a fresh run)."""

    def __init__(self, run_dir: str, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.remote = join(run_dir, TENSORBOARD) if "://" in run_dir else None
        if self.remote is None:
            self.local = join(run_dir, TENSORBOARD)
        else:
            # Named after the run: the directory of a writer killed with its process (a
            # fault) is removed by the next writer of the run on this node; its events
            # reached the storage at its last epoch, and what came after is redone.
            prefix = f"adasim-tensorboard-{split(run_dir)[1]}-"
            for stale in Path(tempfile.gettempdir()).glob(prefix + "*"):
                shutil.rmtree(stale, ignore_errors=True)
            self.local = tempfile.mkdtemp(prefix=prefix)
        self.writer = SummaryWriter(self.local, purge_step=purge_step)
        self._legends: set[str] = set()

    def step(self, step: int, monitors: dict[str, Any], keys: Iterable[str]) -> None:
        """The step's monitors named by ``keys`` (those the method declares, and the lr),
        under ``step/<key>``."""
        for key in keys:
            value = monitors.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(f"step/{key}", value, step)

    def epoch(self, step: int, metrics: dict[str, Any]) -> None:
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) \
                    and math.isfinite(value):
                self.writer.add_scalar(f"epoch/{key}", value, step)

    def image(self, tag: str, image: np.ndarray, step: int, legend: str = "") -> None:
        """An (H, W, 3) uint8 image; ``legend``, how to read it, as the text ``TAG/legend``
        (once per writer)."""
        self.writer.add_image(tag, image, step, dataformats="HWC")
        if legend and tag not in self._legends:
            self._legends.add(tag)
            self.writer.add_text(f"{tag}/legend", legend, step)

    def sync(self) -> None:
        """Flush the events; a run on object storage copies them to ``RUN/tensorboard/``
        (each file whole: they are small, and an object store cannot append)."""
        self.writer.flush()
        if self.remote is None:
            return
        fs, path = resolve(self.remote)
        guarded(self.remote, lambda: upload(self.local, fs, path))  # retried whole

    def close(self, failed: bool = False) -> None:
        """Close the writer and copy its last events; after a failure (``failed``) a copy
        that fails too is let go, so that the run's own error is the one raised."""
        self.writer.close()
        try:
            self.sync()
        except Exception:
            if not failed:
                raise
        finally:
            if self.remote is not None:
                shutil.rmtree(Path(self.local), ignore_errors=True)
