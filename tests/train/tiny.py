"""The tiny digits runs of the Ray tests that stop, kill and resume runs (faults, pre-emption,
a lost node, a requeued run): one base and each test's changes to it, so that a test says only
what it needs (its image count, batch, epochs) and the runs stay seconds long."""

from __future__ import annotations

#: 128 digits in batches of 64 (2 steps an epoch), 3 epochs, a checkpoint each; AdaSim with a
#: window of 1 (bootstrapping from epoch 2); a small DINO head; no evaluation but the k-NN of
#: the end; one Train worker of 1 CPU and one fetch actor.
BASE = {
    "data": "digits",
    "limit_images": "128",
    "batch_size": "64",
    "epochs": "3",
    "checkpoint_every": "1",
    "adasim.window": "1",
    "adasim.tau": "0.5",
    "adasim.topk": "4",
    "eval.knn_every": "0",
    "eval.max_train": "300",
    "eval.max_test": "100",
    "eval.linear": "false",
    "eval.fewshot": "false",
    "dino.out_dim": "128",
    "dino.hidden_dim": "64",
    "dino.bottleneck_dim": "32",
    "dino.warmup_epochs": "1",
    "ray.num_workers": "1",
    "ray.cpus_per_worker": "1",
    "ray.fetch_actors": "1",
}


def tiny(*changes: str) -> list[str]:
    """``--set`` items of :data:`BASE` with ``changes`` (``KEY=VALUE``) applied over it."""
    items = dict(BASE)
    for change in changes:
        key, sep, value = change.partition("=")
        assert sep, change
        items[key] = value
    return [f"{key}={value}" for key, value in items.items()]


def set_args(items: list[str]) -> list[str]:
    """``items`` as the command line's ``--set`` options."""
    return [arg for item in items for arg in ("--set", item)]


#: Two Train workers (a global batch of 64: 2 steps an epoch) and two cache shards: the
#: uninterrupted run that the two-worker test checks and the lost node's run is compared with.
TWO_WORKERS = tiny("adasim.tau=1.0", "eval.knn_every=3", "ray.num_workers=2",
                   "ray.cache_shards=2")
