"""Projection heads on top of the backbone feature: DINO's head, SimSiam's projector and
predictor. Every width is a parameter so that small CPU runs can shrink them.

Examples:
    >>> head = DINOHead(in_dim=96, out_dim=4096, hidden_dim=512, bottleneck_dim=128)
    >>> head(torch.randn(8, 96)).shape
    torch.Size([8, 4096])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DINOHead", "SimSiamPredictor", "SimSiamProjector", "WeightNormLinear"]


def _trunc_normal_init(module: nn.Module) -> None:
    # DINO initialises its head's linear layers with a truncated normal of std 0.02.
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class WeightNormLinear(nn.Module):
    """Linear layer without bias whose weight is ``g * v / ||v||`` row by row (Salimans &
    Kingma, 2016), the parametrisation of DINO's last layer.

    Written out instead of ``torch.nn.utils.parametrizations.weight_norm`` because
    parametrised modules refuse to be pickled, and Ray ships modules by pickling. The
    parameter names ``weight_g`` / ``weight_v`` are those of DINO's checkpoints.

    Args:
        in_features, out_features: as ``nn.Linear``.
        fix_norm: keep g at 1 (no gradient), so each output row is a unit vector.
    """

    def __init__(self, in_features: int, out_features: int, *, fix_norm: bool = True) -> None:
        super().__init__()
        # device=None: the default device, so a ``with torch.device(...)`` block (meta, cuda)
        # builds the head there, as it does every torch.nn layer.
        self.weight_v = nn.Parameter(torch.empty(out_features, in_features, device=None))
        nn.init.trunc_normal_(self.weight_v, std=0.02)
        self.weight_g = nn.Parameter(torch.ones(out_features, 1, device=None),
                                     requires_grad=not fix_norm)

    @property
    def weight(self) -> torch.Tensor:
        return self.weight_g * F.normalize(self.weight_v, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)


class DINOHead(nn.Module):
    """DINO's projection head (Caron et al., 2021, Section 3.1 and Appendix).

    ``in_dim -> hidden -> hidden -> bottleneck`` (GELU between, no BN by default), then L2
    normalisation, then a weight-normalised linear layer without bias to ``out_dim``
    (the K prototypes, 65536 in the paper). With ``norm_last_layer=True`` the weight-norm
    magnitude g is fixed to 1, so every prototype is a unit vector; DINO reports this
    stabilises training of ViTs.

    Args:
        in_dim: backbone feature dimension.
        out_dim: number of output logits K.
        hidden_dim: width of the two hidden layers (2048).
        bottleneck_dim: width before the L2 normalisation (256).
        num_layers: number of linear layers of the MLP (3).
        use_bn: BatchNorm after the hidden layers (DINO uses it for ResNets only if asked).
        norm_last_layer: fix the weight-norm magnitude of the last layer to 1.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        *,
        num_layers: int = 3,
        use_bn: bool = False,
        norm_last_layer: bool = True,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        layers: list[nn.Module] = []
        dim = in_dim
        for _ in range(num_layers - 1):
            layers.append(nn.Linear(dim, hidden_dim))
            if use_bn:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.GELU())
            dim = hidden_dim
        layers.append(nn.Linear(dim, bottleneck_dim))
        self.mlp = nn.Sequential(*layers)
        self.mlp.apply(_trunc_normal_init)

        self.last_layer = WeightNormLinear(bottleneck_dim, out_dim, fix_norm=norm_last_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_dim) -> (B, out_dim) logits, before any temperature."""
        x = F.normalize(self.mlp(x), dim=-1, p=2)
        return self.last_layer(x)


class SimSiamProjector(nn.Module):
    """SimSiam's projection MLP (Chen & He, 2021, Section 4.1).

    Three linear layers with BN on every output, ReLU on the hidden ones; the last BN has no
    affine parameters and the last linear no bias (it would be cancelled by that BN).

    Args:
        in_dim: backbone feature dimension.
        hidden_dim: hidden width (2048 in the paper).
        out_dim: output width ``d`` (2048 in the paper).
    """

    def __init__(self, in_dim: int, hidden_dim: int = 2048, out_dim: int = 2048) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim, bias=False),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, hidden_dim, bias=False),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim, bias=False),
            nn.BatchNorm1d(out_dim, affine=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SimSiamPredictor(nn.Module):
    """SimSiam's prediction MLP h: ``d -> pred_dim -> d`` with a BN + ReLU bottleneck
    (2048 -> 512 -> 2048 in the paper; no BN on the output)."""

    def __init__(self, dim: int = 2048, pred_dim: int = 512) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, pred_dim, bias=False),
            nn.BatchNorm1d(pred_dim),
            nn.ReLU(inplace=True),
            nn.Linear(pred_dim, dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
