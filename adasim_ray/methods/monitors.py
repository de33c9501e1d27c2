"""Collapse monitors logged with the loss (Section 4.2 of the paper discusses collapse of
DINO-2 + NN; these numbers let a run show it as it happens).

* ``std_of_l2_normalized``: SimSiam's collapse indicator (Chen & He, 2021, Fig. 2): the
  per-dimension std over the batch of the L2-normalised outputs, averaged over dimensions.
  It is 0 when every image maps to the same output and about ``1 / sqrt(d)`` for outputs
  spread evenly on the sphere (lightly's ``std_of_l2_normalized``, solo-learn's ``z_std``).
* ``mean_entropy``: entropy of DINO's teacher distribution in nats. ``log(K)`` means the
  teacher has collapsed to the uniform output; 0 means it has collapsed to one prototype.

Examples:
    >>> float(std_of_l2_normalized(torch.ones(4, 8)))
    0.0
    >>> round(float(mean_entropy(torch.full((2, 4), 0.25))), 4)  # log(4)
    1.3863
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["mean_entropy", "std_of_l2_normalized"]


@torch.no_grad()
def std_of_l2_normalized(z: torch.Tensor) -> torch.Tensor:
    """Mean over dimensions of the std over the batch of ``z / ||z||``; z is (B, d)."""
    if z.shape[0] < 2:
        return torch.zeros((), device=z.device)
    return F.normalize(z.float(), dim=-1).std(dim=0).mean()


@torch.no_grad()
def mean_entropy(probs: torch.Tensor) -> torch.Tensor:
    """Mean over rows of -sum_k p_k log p_k; probs is (B, K) with rows summing to 1."""
    probs = probs.float()
    return -(probs * torch.log(probs.clamp_min(1e-30))).sum(dim=-1).mean()
