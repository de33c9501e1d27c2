"""Linear probe on frozen features (the paper's Sec. 4.5, "Linear evaluation").

"A linear layer is stacked on top of the frozen features and trained on the training set
of the downstream task. We report the top-1 accuracy on the test set." DINO and SimSiam
train that layer with SGD for 100 epochs on augmented ImageNet crops; on precomputed
features (no augmentation) the same layer is a multinomial logistic regression, which is
convex, so a quasi-Newton solver reaches its optimum in seconds on a CPU:

- features are standardised per dimension with training-split statistics (what MAE's
  linear probe does with a non-affine BatchNorm before its linear layer), which makes the
  problem well conditioned whatever the scale of the backbone's features;
- ``nn.Linear`` is trained with cross-entropy plus an L2 penalty on the weights,
  full-batch with L-BFGS (strong-Wolfe line search) starting from zero, so the result
  does not depend on the seed and needs no learning rate;
- when the full-batch logits would not fit a memory budget (ImageNet-scale: 1.28M x 1000)
  it switches to mini-batch AdamW with a cosine schedule, seeded.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from adasim_ray.evaluation.knn import HALF_DTYPES

ArrayLike = np.ndarray | torch.Tensor
Method = Literal["auto", "lbfgs", "adamw"]

# Full-batch L-BFGS keeps a few (n_train, num_classes) tensors alive (logits, softmax,
# gradient); above this many logits (256 MiB each in fp32) the mini-batch path is used.
_FULL_BATCH_LOGITS = 1 << 26
#: float32 bytes of the rows that the streamed statistics move to the device at once.
_BLOCK_BYTES = 64 * 2**20


class LinearProbe(nn.Module):
    """Standardisation with frozen training statistics followed by ``nn.Linear``.

    Args:
        mean: (d,) per-dimension mean of the training features.
        std: (d,) per-dimension standard deviation of the training features.
        num_classes: Output width.
    """

    mean: torch.Tensor
    inv_std: torch.Tensor

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, num_classes: int) -> None:
        super().__init__()
        # A dimension that is (nearly) constant on the training split carries no
        # information the layer could learn; scale it by 1 instead of blowing it up.
        inv_std = torch.where(std > 1e-6, 1.0 / std.clamp_min(1e-6), torch.ones_like(std))
        self.register_buffer("mean", mean.clone())
        self.register_buffer("inv_std", inv_std)
        self.linear = nn.Linear(mean.shape[0], num_classes)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes) of features (B, d)."""
        return self.linear((x - self.mean) * self.inv_std)


def _as_tensors(
    feats: ArrayLike, labels: ArrayLike, device: torch.device, name: str, *,
    keep: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (float32 on ``device``; with ``keep``, as they are held: a half bank on the
    host stays one) and labels (int64 on ``device``), checked."""
    if keep:
        held = feats.device if isinstance(feats, torch.Tensor) else "cpu"  # numpy: the host
        x = torch.as_tensor(feats, device=held)
    else:
        x = torch.as_tensor(feats, device=device).to(torch.float32)
    y = torch.as_tensor(labels, device=device).to(torch.int64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"{name} features must be a non-empty (N, d) array, got {tuple(x.shape)}")
    if y.shape != (x.shape[0],):
        raise ValueError(f"{name} labels must have shape ({x.shape[0]},), got {tuple(y.shape)}")
    if int(y.min()) < 0:
        raise ValueError(f"{name} labels must be >= 0 (got {int(y.min())})")
    return x, y


def _streamed_mean_std(x: torch.Tensor, device: torch.device) -> tuple[torch.Tensor,
                                                                        torch.Tensor]:
    """Per-dimension mean and population std of the rows of ``x`` (float32, on ``device``),
    moved to ``device`` and to float32 a block of rows (:data:`_BLOCK_BYTES`) at a time, two
    passes, the block sums added in float64: ``x`` is never copied whole."""
    n, d = x.shape
    rows = max(1, _BLOCK_BYTES // (4 * d))
    blocks = [slice(a, a + rows) for a in range(0, n, rows)]
    total = torch.zeros(d, dtype=torch.float64, device="cpu")
    for block in blocks:
        total += x[block].to(device=device, dtype=torch.float32).sum(0).cpu().double()
    mean = (total / n).float().to(device)
    squares = torch.zeros(d, dtype=torch.float64, device="cpu")
    for block in blocks:
        centred = x[block].to(device=device, dtype=torch.float32) - mean
        squares += centred.square().sum(0).cpu().double()
    return mean, (squares / n).sqrt().float().to(device)


def _fit_lbfgs(
    probe: LinearProbe, x: torch.Tensor, y: torch.Tensor, weight_decay: float, max_iter: int
) -> None:
    z = (x - probe.mean) * probe.inv_std  # standardise once, not per evaluation
    linear = probe.linear
    optimizer = torch.optim.LBFGS(
        linear.parameters(), lr=1.0, max_iter=max_iter, history_size=20,
        tolerance_grad=1e-5, tolerance_change=1e-7, line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(linear(z), y)
        loss = loss + 0.5 * weight_decay * linear.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)


def _fit_adamw(
    probe: LinearProbe,
    x: torch.Tensor,
    y: torch.Tensor,
    weight_decay: float,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
) -> None:
    linear = probe.linear
    # Bias is not decayed, matching the L2 penalty of the full-batch path.
    optimizer = torch.optim.AdamW(
        [{"params": [linear.weight], "weight_decay": weight_decay},
         {"params": [linear.bias], "weight_decay": 0.0}],
        lr=lr,
    )
    n = x.shape[0]
    device = y.device  # the probe's; x may be held elsewhere (a half bank on the host)
    steps_per_epoch = -(-n // batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        # drawn on the host: the same order, hence the same probe, whatever the device
        order = torch.randperm(n, generator=generator, device="cpu")
        rows, labels = order.to(x.device), order.to(device)
        for start in range(0, n, batch_size):
            batch = slice(start, start + batch_size)
            features = x[rows[batch]].to(device=device, dtype=torch.float32)
            loss = F.cross_entropy(probe(features), y[labels[batch]])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()


def fit_linear_probe(
    train_feats: ArrayLike,
    train_labels: ArrayLike,
    *,
    num_classes: int | None = None,
    weight_decay: float = 1e-3,
    method: Method = "auto",
    max_iter: int = 100,
    epochs: int = 20,
    batch_size: int = 1024,
    lr: float = 1e-3,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> LinearProbe:
    """Train a linear classifier on frozen features (cross-entropy + L2 on the weights).

    Args:
        train_feats: (n, d) frozen features of the training split.
        train_labels: (n,) integer labels >= 0.
        num_classes: Output width; default ``max(train_labels) + 1``.
        weight_decay: L-BFGS: L2 penalty ``weight_decay / 2 * ||W||^2`` added to the mean
            cross-entropy (on standardised features; the bias is not penalised). AdamW:
            its decoupled weight decay on W. The default 1e-3 was the best or equal best
            of {0, 1e-5, 1e-4, 1e-3, 1e-2} for raw pixels of MNIST and sklearn digits;
            larger values help when n is small relative to d.
        method: ``"lbfgs"`` (full batch, deterministic), ``"adamw"`` (mini-batch, seeded)
            or ``"auto"``: L-BFGS unless n * num_classes logits exceed 2**26.
        max_iter: L-BFGS iterations. Test accuracy of raw MNIST pixels and of 384-d
            features on MNIST stops changing (+-0.001) after 50-100 iterations, while the
            cost grows linearly; it may stop earlier on its tolerances.
        epochs, batch_size, lr: Mini-batch AdamW settings (cosine schedule to 0).
        seed: Seed of the mini-batch order (L-BFGS starts from zero and needs none).
        device: Where to train; default the device of ``train_feats`` if a tensor, else CPU.

    Returns:
        The trained probe, in eval mode, on ``device``.

    Examples:
        >>> probe = fit_linear_probe(train_f, train_y)
        >>> predictions = probe(torch.as_tensor(test_f)).argmax(1)
    """
    if device is None:
        device = train_feats.device if isinstance(train_feats, torch.Tensor) else "cpu"
    device = torch.device(device)
    # Callers may sit inside no_grad or inference_mode (e.g. right after feature
    # extraction); training needs autograd and tensors that may be saved for backward.
    with torch.inference_mode(False), torch.enable_grad():
        x, y = _as_tensors(train_feats, train_labels, device, "train", keep=True)
        if y.is_inference():
            y = y.clone()
        seen = int(y.max()) + 1
        if num_classes is None:
            num_classes = seen
        elif num_classes < seen:
            raise ValueError(f"num_classes={num_classes} but train labels go up to {seen - 1}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        if method == "auto":
            method = "lbfgs" if x.shape[0] * num_classes <= _FULL_BATCH_LOGITS else "adamw"

        held_apart = x.device.type != device.type or x.dtype in HALF_DTYPES
        if method == "lbfgs" or not held_apart:
            x = x.to(device=device, dtype=torch.float32)
            if x.is_inference():
                x = x.clone()
            # Population statistics (correction=0) so a single training row gives no NaN.
            std, mean = torch.std_mean(x, dim=0, correction=0)
        else:
            # Mini-batches of features held elsewhere or in another dtype (a run's half bank
            # on the host: 5.2 GB for ResNet-50 on ImageNet) go to the device one at a time,
            # never as one float32 copy (10.5 GB).
            mean, std = _streamed_mean_std(x, device)
        probe = LinearProbe(mean, std, num_classes).to(device)
        if method == "lbfgs":
            _fit_lbfgs(probe, x, y, weight_decay, max_iter)
        elif method == "adamw":
            _fit_adamw(probe, x, y, weight_decay, epochs=epochs, batch_size=batch_size,
                       lr=lr, seed=seed)
        else:
            raise ValueError(f"method must be 'auto', 'lbfgs' or 'adamw', got {method!r}")
    if not all(torch.isfinite(p).all() for p in probe.parameters()):
        raise ValueError("linear probe diverged: non-finite weights")
    return probe.eval()


def linear_probe(
    train_feats: ArrayLike,
    train_labels: ArrayLike,
    test_feats: ArrayLike,
    test_labels: ArrayLike,
    *,
    num_classes: int | None = None,
    weight_decay: float = 1e-3,
    method: Method = "auto",
    seed: int = 0,
    device: torch.device | str | None = None,
    eval_batch_size: int = 8192,
    **fit_options: Any,
) -> float:
    """Top-1 accuracy on the test split of a linear probe trained on the train split.

    See ``fit_linear_probe`` for the training recipe and the arguments; ``fit_options``
    (``max_iter``, ``epochs``, ``batch_size``, ``lr``) are passed on to it.

    Returns:
        Top-1 accuracy as a fraction in [0, 1].

    Examples:
        >>> top1 = linear_probe(train_f, train_y, test_f, test_y)
    """
    if device is None:
        device = train_feats.device if isinstance(train_feats, torch.Tensor) else "cpu"
    device = torch.device(device)
    x_test, y_test = _as_tensors(test_feats, test_labels, device, "test")
    # A test label the probe has no output for is simply never predicted.
    probe = fit_linear_probe(
        train_feats, train_labels, num_classes=num_classes, weight_decay=weight_decay,
        method=method, seed=seed, device=device, **fit_options,
    )
    if x_test.shape[1] != probe.mean.shape[0]:
        raise ValueError(
            f"train and test features differ in dimension: {probe.mean.shape[0]} vs "
            f"{x_test.shape[1]}"
        )
    correct = 0
    with torch.inference_mode():
        for start in range(0, x_test.shape[0], eval_batch_size):
            logits = probe(x_test[start : start + eval_batch_size])
            correct += int((logits.argmax(1) == y_test[start : start + eval_batch_size]).sum())
    return correct / x_test.shape[0]
