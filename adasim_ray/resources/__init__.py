"""What a run needs from the machines it runs on, worked out before it starts.

- :mod:`.memory`: the bytes of the bootstrapping state (cache, window, partners) per shard;
- :mod:`.placement`: the resource bundles a run asks Ray for, placed on a cluster's nodes;
- :mod:`.cluster_yaml`: a ``ray up`` cluster YAML, validated offline, as nodes;
- :mod:`.storage`: that the run's storage can be written, and has room for checkpoints.

``adasim-ray check`` (:mod:`adasim_ray.commands.check`) reports all four; the pretraining
driver checks the storage itself, and a sweep sizes its concurrency with the placement.
"""
