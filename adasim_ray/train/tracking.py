"""Experiment tracking of a run, in MLflow or W&B, written by rank 0 beside TensorBoard: the
same scalars under the same names (``step/<monitor>`` every ``log_every`` steps,
``epoch/<metric>`` at each epoch's end), against the same global step.

One run directory is one tracked run. Its id is kept in ``RUN_DIR/tracking.json``, so that a
run which goes on in the same directory (a restarted worker group, ``--resume``, ``--name``
run again, a sweep's trial started again) goes on in the same tracked run. A tracker cannot
take back what it holds (MLflow keeps every value logged at a step, side by side; W&B drops
a step lower than its last), so a step that a resumed run redoes is not logged again: the
tracked run holds each step once, as first logged (``metrics.jsonl`` and TensorBoard hold
the redone values; the same where the resume reproduces the run). What has been logged is
counted per group of names (``step``, ``epoch``: both log the last step of an epoch):
``tracking.json`` records it at every epoch's end, and an MLflow run also carries it as tags
written with each batch of metrics, exact to the last batch. (Of W&B in offline mode, the
step monitors of an epoch interrupted before its end may thus appear in two of the run's
offline directories.)

mlflow and wandb are optional extras, imported here only, when a run asks for one; the
driver's pre-flight says which extra to install (``preflight.check_tracking``).

Examples:
    >>> from adasim_ray.config import load_config
    >>> start_tracking("/tmp/run", load_config(None, [])) is None  # tracking: none
    True
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any

from adasim_ray.config import ConfigError, PretrainConfig
from adasim_ray.configfile import to_dict
from adasim_ray.rundir.layout import join, read_text, split, write_text

__all__ = ["DEFAULT_PROJECT", "TRACKING", "Tracker", "start_tracking"]

TRACKING = "tracking.json"
DEFAULT_PROJECT = "adasim"
#: The MLflow run's tag prefix of what it holds (``adasim.logged.step``: the last step).
LOGGED_TAG = "adasim.logged."


class Tracker:
    """A tracked run as the worker loop sees it: :meth:`log`, :meth:`sync` at each epoch's
    end, :meth:`close`. A backend (:class:`MlflowTracker`, :class:`WandbTracker`) opens or
    continues its run and sends the scalars."""

    kind = ""

    def __init__(self, run_dir: str, record: dict[str, Any], logged: dict[str, int]) -> None:
        self.run_dir = run_dir
        self.record = record  # tracking.json: kind, uri, project, run_id
        self.logged = dict(logged)  # group -> last step the tracked run holds

    def log(self, step: int, scalars: dict[str, Any]) -> None:
        """``scalars`` (names ``GROUP/NAME``) at global ``step``; values that are not finite
        numbers are left out, and so is a group's step the tracked run already holds."""
        kept = {k: float(v) for k, v in scalars.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                and step > self.logged.get(_group(k), -1)}
        if not kept:
            return
        groups = {_group(k) for k in kept}
        self._send(step, kept, groups)
        self.logged.update(dict.fromkeys(groups, step))

    def sync(self) -> None:
        """Record in ``tracking.json`` what the tracked run holds (at each epoch's end)."""
        write_text(join(self.run_dir, TRACKING),
                   json.dumps(self.record | {"logged": self.logged}, indent=1) + "\n")

    def close(self, failed: bool = False) -> None:
        """End the tracked run (as failed, or finished). After a failure (``failed``) an
        error of the tracker is let go, so that the run's own error is the one raised."""
        try:
            self.sync()
            self._finish(failed)
        except Exception:
            if not failed:
                raise

    def _send(self, step: int, scalars: dict[str, float], groups: set[str]) -> None:
        raise NotImplementedError

    def _finish(self, failed: bool) -> None:
        raise NotImplementedError


def start_tracking(run_dir: str, cfg: PretrainConfig) -> Tracker | None:
    """The run's tracker (None with ``tracking: none``): the tracked run that
    ``RUN_DIR/tracking.json`` names when it is of the same tracker, store and project, else
    a new one; ``tracking.json`` is written at once."""
    if cfg.tracking == "none":
        return None
    backend = {"mlflow": MlflowTracker, "wandb": WandbTracker}[cfg.tracking]
    record = {"kind": cfg.tracking, "uri": backend.uri(cfg),
              "project": cfg.tracking_project or DEFAULT_PROJECT}
    text = read_text(join(run_dir, TRACKING))
    before = json.loads(text) if text else {}
    same = {k: before.get(k) for k in record} == record and before.get("run_id")
    if before and not same:
        print(f"[adasim] tracking: {TRACKING} names a {before.get('kind')} run of "
              f"{before.get('uri')} ({before.get('project')}); starting a new one", flush=True)
    tracker = backend.open(run_dir, cfg, record, before if same else None)
    tracker.sync()
    return tracker


def _group(name: str) -> str:
    return name.split("/", 1)[0] if "/" in name else ""


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """A config as MLflow's params: dotted names, values as text (at most MLflow's 6000
    characters)."""
    out: dict[str, str] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = str(value)[:6000]
    return out


class MlflowTracker(Tracker):
    """An MLflow run, through ``MlflowClient`` (no process-wide active run): in the
    experiment ``tracking_project``, named after the run, the config as its params, the run
    directory as the tag ``adasim.run_dir``."""

    kind = "mlflow"
    client: Any = None  # the MlflowClient of the store

    @staticmethod
    def uri(cfg: PretrainConfig) -> str:
        uri = cfg.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            raise ConfigError("tracking_uri: tracking: mlflow needs the tracking server or "
                              "store (e.g. http://HOST:5000 or sqlite:////ABS/mlflow.db), "
                              "and MLFLOW_TRACKING_URI is not set where rank 0 runs")
        return uri

    @classmethod
    def open(cls, run_dir: str, cfg: PretrainConfig, record: dict[str, Any],
             before: dict[str, Any] | None) -> MlflowTracker:
        from mlflow import MlflowClient
        from mlflow.entities import Param

        client = MlflowClient(tracking_uri=record["uri"])
        logged: dict[str, int] = {}
        if before is not None:
            run_id = before["run_id"]
            run = client.get_run(run_id)
            client.update_run(run_id, status="RUNNING")
            tags = {k[len(LOGGED_TAG):]: int(v) for k, v in run.data.tags.items()
                    if k.startswith(LOGGED_TAG)}
            logged = {g: max(tags.get(g, -1), int(before.get("logged", {}).get(g, -1)))
                      for g in {*tags, *before.get("logged", {})}}
            how = "continuing"
        else:
            tags = {"adasim.run_dir": run_dir}
            if cfg.tracking_group:
                tags["adasim.group"] = cfg.tracking_group
            run = client.create_run(_experiment(client, record["project"]),
                                    run_name=split(run_dir)[1], tags=tags)
            run_id = run.info.run_id
            params = [Param(k, v) for k, v in _flat(to_dict(cfg)).items()]
            for i in range(0, len(params), 100):  # MLflow takes 100 params a batch
                client.log_batch(run_id, params=params[i:i + 100])
            how = "new"
        print(f"[adasim] tracking: MLflow run {run_id} ({how}) in experiment "
              f"{record['project']!r} at {record['uri']}", flush=True)
        tracker = cls(run_dir, record | {"run_id": run_id}, logged)
        tracker.client = client
        return tracker

    def _send(self, step: int, scalars: dict[str, float], groups: set[str]) -> None:
        from mlflow.entities import Metric, RunTag

        ms = int(time.time() * 1000)
        self.client.log_batch(
            self.record["run_id"],
            metrics=[Metric(k, v, ms, step) for k, v in scalars.items()],
            tags=[RunTag(LOGGED_TAG + g, str(step)) for g in sorted(groups)],
        )

    def _finish(self, failed: bool) -> None:
        self.client.set_terminated(self.record["run_id"], "FAILED" if failed else "FINISHED")


def _experiment(client: Any, name: str) -> str:
    """The id of MLflow's experiment ``name``, created if new (by whichever of a sweep's
    trials gets there first)."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is None:
        try:
            return client.create_experiment(name)
        except MlflowException:  # created meanwhile by another trial
            found = client.get_experiment_by_name(name)
    if found.lifecycle_stage == "deleted":
        client.restore_experiment(found.experiment_id)
    return found.experiment_id


class WandbTracker(Tracker):
    """A W&B run in the project ``tracking_project`` (entity: ``WANDB_ENTITY`` or the
    account's own), group ``tracking_group``, named after the run, the config as its
    config. Its local files (all of it in offline mode, ``WANDB_MODE=offline``, for
    ``wandb sync``) go to ``RUN_DIR/wandb/`` when the run directory is local, else to
    ``WANDB_DIR``. The console is not captured: the run directory has its own logs."""

    kind = "wandb"
    run: Any = None  # wandb's Run

    @staticmethod
    def uri(cfg: PretrainConfig) -> str | None:
        return cfg.tracking_uri

    @classmethod
    def open(cls, run_dir: str, cfg: PretrainConfig, record: dict[str, Any],
             before: dict[str, Any] | None) -> WandbTracker:
        import wandb

        settings = wandb.Settings(console="off", **(
            {"base_url": record["uri"]} if record["uri"] else {}))
        run = wandb.init(
            project=record["project"], group=cfg.tracking_group, name=split(run_dir)[1],
            id=before["run_id"] if before else None, resume="allow",
            dir=None if "://" in run_dir else run_dir, settings=settings,
            config=None if before else {"run_dir": run_dir, **to_dict(cfg)},
        )
        print(f"[adasim] tracking: W&B run {run.id} ({'continuing' if before else 'new'}) "
              f"in project {record['project']!r}", flush=True)
        tracker = cls(run_dir, record | {"run_id": run.id},
                      {g: int(s) for g, s in (before or {}).get("logged", {}).items()})
        tracker.run = run
        return tracker

    def _send(self, step: int, scalars: dict[str, float], groups: set[str]) -> None:
        self.run.log(scalars, step=step)

    def _finish(self, failed: bool) -> None:
        self.run.finish(exit_code=1 if failed else 0)
