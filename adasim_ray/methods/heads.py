"""Heads on top of the backbone feature: one generic :class:`ProjectionHead` built from a list
of block specs (lightly's ``ProjectionHead(blocks)``), and the thin heads of each method that
only choose their blocks. Every width is a parameter so that small CPU runs can shrink them.

Examples:
    >>> head = DINOHead(in_dim=96, out_dim=4096, hidden_dim=512, bottleneck_dim=128)
    >>> head(torch.randn(8, 96)).shape
    torch.Size([8, 4096])
    >>> mlp = ProjectionHead([Block(16, 32, nn.BatchNorm1d(32), nn.ReLU()), Block(32, 8)])
    >>> mlp(torch.randn(4, 16)).shape
    torch.Size([4, 8])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Block", "DINOHead", "ProjectionHead", "SimSiamPredictor", "SimSiamProjector",
           "WeightNormLinear", "mlp_blocks"]


class Block(NamedTuple):
    """One linear layer of a head and what follows it: ``Linear(in_dim, out_dim)``, then
    ``norm`` and ``activation`` when given. By default (``bias=None``) the linear layer has a
    bias only without a norm (a BatchNorm's shift would cancel it); DINO keeps it anyway."""

    in_dim: int
    out_dim: int
    norm: nn.Module | None = None
    activation: nn.Module | None = None
    bias: bool | None = None


class ProjectionHead(nn.Module):
    """An MLP given as a list of :class:`Block` s, the one head every method builds on.

    The layers live in ``self.net`` (an ``nn.Sequential``), so their parameter names are
    ``net.<i>.weight``, those of the heads' checkpoints.
    """

    def __init__(self, blocks: Sequence[Block]) -> None:
        super().__init__()
        if not blocks:
            raise ValueError("a projection head needs at least one block")
        layers: list[nn.Module] = []
        for block in blocks:
            bias = block.norm is None if block.bias is None else block.bias
            layers.append(nn.Linear(block.in_dim, block.out_dim, bias=bias))
            layers.extend(m for m in (block.norm, block.activation) if m is not None)
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def mlp_blocks(in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2, *,
               norm: bool = True, activation: type[nn.Module] | None = None,
               last_norm: nn.Module | None = None, bias: bool | None = None) -> list[Block]:
    """``num_layers`` blocks in -> hidden -> ... -> out: BatchNorm (``norm``) and the
    activation (ReLU by default) on the hidden ones, ``last_norm`` alone on the last."""
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    make = activation or _relu
    dims = [in_dim, *[hidden_dim] * (num_layers - 1), out_dim]
    blocks = [Block(a, b, nn.BatchNorm1d(b) if norm else None, make(), bias)
              for a, b in zip(dims[:-2], dims[1:-1], strict=True)]
    return [*blocks, Block(dims[-2], dims[-1], last_norm, None, bias)]


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
        self.mlp = ProjectionHead(mlp_blocks(in_dim, hidden_dim, bottleneck_dim, num_layers,
                                             norm=use_bn, activation=nn.GELU, bias=True))
        self.mlp.apply(_trunc_normal_init)
        self.last_layer = WeightNormLinear(bottleneck_dim, out_dim, fix_norm=norm_last_layer)
        self._register_load_state_dict_pre_hook(_dino_mlp_keys)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_dim) -> (B, out_dim) logits, before any temperature; the last layer in
        float32 even under autocast (the sharpening by T_t = 0.04 would magnify bf16's
        rounding of the logits 25 times)."""
        x = F.normalize(self.mlp(x), dim=-1, p=2)
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.last_layer(x.float())


def _dino_mlp_keys(state: dict[str, Any], prefix: str, *_: Any) -> None:
    """Checkpoints written before the generic head name the MLP's layers ``mlp.<i>.``; they
    are ``mlp.net.<i>.`` now."""
    old = f"{prefix}mlp."
    for key in [k for k in state if k.startswith(old) and not k.startswith(f"{old}net.")]:
        state[f"{old}net.{key[len(old):]}"] = state.pop(key)


class SimSiamProjector(ProjectionHead):
    """SimSiam's projection MLP (Chen & He, 2021, Section 4.1): three linear layers with BN
    on every output, ReLU on the hidden ones; the last BN has no affine parameters (and so
    the last linear no bias).

    Args:
        in_dim: backbone feature dimension.
        hidden_dim: hidden width (2048 in the paper).
        out_dim: output width ``d`` (2048 in the paper).
    """

    def __init__(self, in_dim: int, hidden_dim: int = 2048, out_dim: int = 2048) -> None:
        super().__init__(mlp_blocks(in_dim, hidden_dim, out_dim, 3,
                                    last_norm=nn.BatchNorm1d(out_dim, affine=False)))


class SimSiamPredictor(ProjectionHead):
    """SimSiam's prediction MLP h: ``d -> pred_dim -> d`` with a BN + ReLU bottleneck
    (2048 -> 512 -> 2048 in the paper; no BN on the output)."""

    def __init__(self, dim: int = 2048, pred_dim: int = 512) -> None:
        super().__init__(mlp_blocks(dim, pred_dim, dim))


def _relu() -> nn.Module:
    return nn.ReLU(inplace=True)
