"""The run directory's format, read and written: what every command that reads a run imports
(``audit``, ``visualize``, ``export``, ``eval``, the sweep report), without the Train layer.

A run directory ``<storage>/<run name>/`` (a local path or a cloud URI) holds:

- ``config.yaml``: the run's config, written first (``layout.py``);
- ``metrics.jsonl``: one line per finished epoch (``metrics.py``);
- ``checkpoint_*/`` (``model.pt``, ``meta.json`` written last) and ``shards/`` (each cache
  shard's own file): ``checkpoint.py``;
- ``faults.jsonl``, ``resumes.jsonl``, ``stopped.json``: what happened to the run
  (``logs.py``);
- ``summary.json`` at the end, and ``tensorboard/``.
"""
