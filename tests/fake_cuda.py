"""Fake CUDA tensors on a CPU-only machine, to prove device discipline without a GPU.

Under torch's ``FakeTensorMode`` (with a ``ShapeEnv``, so that data-dependent sizes become
symbols) tensors carry shapes, dtypes and devices but no values, and an operation that meets
a CPU tensor and a CUDA tensor raises ``FakeTensorDeviceMismatchError``, as a real GPU
would. Code that branches on values (``bool(t)``, ``t.item()``, a loop over a data-dependent
length) cannot run under it: tests call the pieces around such branches.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental.symbolic_shapes import ShapeEnv


@contextlib.contextmanager
def fake_cuda() -> Iterator[FakeTensorMode]:
    """A fake-tensor mode in which ``device="cuda"`` works without a GPU. Real tensors met
    inside (a model built before, a tensor made from numpy) become fake ones on their own
    device, so a real CPU tensor that meets a CUDA one is caught as well; ``model.to("cuda")``
    inside moves a model built for real (timm's initialisers branch on values)."""
    with FakeTensorMode(shape_env=ShapeEnv(), allow_non_fake_inputs=True) as mode:
        yield mode
