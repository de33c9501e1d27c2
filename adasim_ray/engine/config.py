"""The bootstrapping settings: one definition, used by the engine and as the run config's
``adasim`` section (``--set adasim.tau=0.3``).

The seed of the partner sampling and the run's number of epochs are the run's, not the
section's: the engine takes them as arguments (``seed=``, ``epochs=``).

Examples:
    >>> BootstrapConfig(mode="adasim", tau=0.2, window=10, topk=3).validate(num_images=100).tau
    0.2
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass
from typing import Literal

Mode = Literal["none", "nn", "adasim", "oracle"]
CacheDtype = Literal["float32", "float16", "bfloat16"]
SimDtype = Literal["float16", "float32"]

MODES: tuple[str, ...] = typing.get_args(Mode)


@dataclass(frozen=True)
class BootstrapConfig:
    """Bootstrapping (the paper's Section 3.3; the ablation of Table 4).

    Attributes:
        mode: ``none`` (plain baseline), ``nn`` (+ NN: top-1 neighbour, never self),
            ``adasim`` (adaptive sampling from the windowed similarity) or ``oracle`` (the
            supervised oracle of Section 4.4 / Table 1: a random image of the same class;
            needs a labelled data set).
        tau: temperature of Eq. 9 (0 = the plain baseline exactly). Paper: 0.2.
        window: w, epochs averaged by Eq. 8; bootstrapping starts after w epochs. Paper: 10
            (ablation), 50 (long runs), 1 (the 100-epoch runs of Table 2).
        topk: K, support size per epoch (Section 3.4) and of the final support. Paper: 3
            (ablation), 10 (Table 2).
        cache_dtype: storage of the cache Z (float16 halves its memory). A query is rounded
            to it too, and its similarities come out in float32 on CPUs and GPUs alike.
        sim_dtype: storage of the window's similarities.
        oracle_p: ``oracle`` only: probability of a standard pair (j* = i) at the last epoch;
            it falls linearly from 1 at the first epoch. In [0, 1]; Table 1: 0 and 0.5 (0.5
            is better: standard pairs still help).
    """

    mode: Mode = "adasim"
    tau: float = 0.2
    window: int = 10
    topk: int = 3
    cache_dtype: CacheDtype = "float16"
    sim_dtype: SimDtype = "float16"
    oracle_p: float = 0.0

    def validate(self, num_images: int | None = None) -> BootstrapConfig:
        """Return self, or raise ValueError ``"<field>: <problem>"`` for the first bad field;
        with ``num_images`` (N) also the N-bounded ones."""
        if self.mode not in MODES:
            raise ValueError(f"mode: must be one of {list(MODES)}, got {self.mode!r}")
        if not (isinstance(self.tau, (int, float)) and math.isfinite(self.tau) and self.tau >= 0):
            raise ValueError(f"tau: must be a finite number >= 0, got {self.tau}")
        if not isinstance(self.window, int) or self.window < 1:
            raise ValueError(f"window: w must be an integer >= 1, got {self.window!r}")
        if not isinstance(self.topk, int) or self.topk < 1:
            raise ValueError(f"topk: K must be an integer >= 1, got {self.topk!r}")
        for name, allowed in (("cache_dtype", CacheDtype), ("sim_dtype", SimDtype)):
            if getattr(self, name) not in typing.get_args(allowed):
                raise ValueError(f"{name}: must be one of {list(typing.get_args(allowed))}, "
                                 f"got {getattr(self, name)!r}")
        if not (isinstance(self.oracle_p, (int, float)) and 0 <= self.oracle_p <= 1):
            raise ValueError(f"oracle_p: must be a probability in [0, 1], got {self.oracle_p}")
        if num_images is not None and self.topk > num_images:
            raise ValueError(f"topk: K={self.topk} must be <= N={num_images} images")
        return self
