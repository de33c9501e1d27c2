"""Weighted k-NN classification on frozen features, exactly DINO's ``eval_knn`` protocol.

DINO (Caron et al., 2021, Sec. 4.1 and ``eval_knn.py::knn_classifier``), used by the
AdaSim paper for its k-NN column (Sec. 4.5, Table 2):

1. features are L2-normalised, so the similarity of a test row x to a train row x_j is the
   cosine ``s_j = <x, x_j>``;
2. the k = 20 most similar training rows vote for their label with weight
   ``exp(s_j / T)``, T = 0.07;
3. classes are ranked by their summed votes; top-1 is the best class, top-5 checks the
   first ``min(5, k)`` ranked classes.

Differences from DINO's script, none of which changes a result on data without ties:

- DINO splits the test set into 100 chunks of ``N // 100`` rows, which is a zero-size
  chunk (and a crash) for fewer than 100 test images; here chunks have a fixed size from a
  memory budget and the last chunk holds the remainder.
- k larger than the training set is clipped to its size.
- Ties between classes with equal votes go to the lower class index (a stable sort;
  DINO's ``sort`` leaves them unspecified). As in DINO, classes with zero votes still
  occupy ranks after the voted ones, so top-5 can count a class no neighbour voted for
  when fewer than five classes received votes.
- Accuracies are fractions in [0, 1], not percentages.

A memory bank given in half precision (float16 or bfloat16: the cache dtype a run of many
ranks gathers its features in, ``train/online_eval.py``) stays in it on the device, half the
memory of float32 (5.2 GB instead of 10.5 GB for ResNet-50 on ImageNet). Its similarities are
float32 all the same: the engine's product of two half values (``engine.cache.similarities``,
exact in float32), taken a block of bank rows at a time, so no float32 copy of the bank is
ever made. A float32 bank is multiplied as before, in one product.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from adasim_ray.engine.cache import similarities

ArrayLike = np.ndarray | torch.Tensor

# Similarity block budget: chunk_rows * n_train fp32 values (64 MiB), so 60k training
# images are processed 279 test rows at a time and ImageNet's 1.28M 13 at a time.
_SIMILARITY_BUDGET = 1 << 24


#: Storage dtypes a memory bank keeps on the device; any other input is stored as float32.
HALF_DTYPES = (torch.float16, torch.bfloat16)


def _as_features(x: ArrayLike, device: torch.device, name: str,
                 dtype: torch.dtype | None = None) -> torch.Tensor:
    """``x`` L2-normalised on ``device``, stored in ``dtype`` (default: ``x``'s own if it is
    a half dtype, else float32): one full-size copy there, filled a block of rows at a time
    (moving then normalising would hold two: 21 GB at ImageNet, d = 2048). A block is
    normalised in float32, then rounded to the storage dtype."""
    x = x if isinstance(x, torch.Tensor) else torch.as_tensor(x, device="cpu")
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty (N, d) array, got shape {tuple(x.shape)}")
    if dtype is None:
        dtype = x.dtype if x.dtype in HALF_DTYPES else torch.float32
    out = torch.empty(x.shape, dtype=dtype, device=device)
    step = max(1, _SIMILARITY_BUDGET // x.shape[1])
    for lo in range(0, x.shape[0], step):
        block = x[lo : lo + step].to(device=device, dtype=torch.float32)
        out[lo : lo + step] = F.normalize(block, dim=1, p=2)
    return out


def bank_similarities(test_feats: torch.Tensor, train_feats: torch.Tensor) -> torch.Tensor:
    """(b, n_train) float32 cosines of test rows and bank rows of one dtype.

    float32: one product, as DINO's. Half: the engine's half x half -> float32 product
    (``engine.cache.similarities``; a CPU or an older torch turns the rows to float32 first),
    one block of bank rows at a time, so that an upcast block holds at most
    ``_SIMILARITY_BUDGET`` values (64 MiB), never the bank's size."""
    if train_feats.dtype == torch.float32:
        return test_feats @ train_feats.T
    n_train, d = train_feats.shape
    out = torch.empty((test_feats.shape[0], n_train), dtype=torch.float32,
                      device=train_feats.device)
    step = max(1, _SIMILARITY_BUDGET // d)
    for lo in range(0, n_train, step):
        out[:, lo : lo + step] = similarities(test_feats, train_feats[lo : lo + step])
    return out


def _as_labels(y: ArrayLike, n: int, device: torch.device, name: str) -> torch.Tensor:
    t = torch.as_tensor(y, device=device).to(torch.int64)
    if t.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {tuple(t.shape)}")
    if n and int(t.min()) < 0:
        raise ValueError(f"{name} must be >= 0 (got {int(t.min())})")
    return t


def knn_votes(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    *,
    k: int,
    T: float,
    num_classes: int,
) -> torch.Tensor:
    """Class votes for one chunk of test rows: ``sum over top-k of exp(sim / T)`` per class.

    Args:
        train_feats: (n_train, d) unit rows (float32, or a half dtype: ``bank_similarities``).
        train_labels: (n_train,) int64 in ``[0, num_classes)``.
        test_feats: (b, d) unit rows in ``train_feats``' dtype.
        k: Neighbours, ``1 <= k <= n_train``.
        T: Temperature of the vote weights (DINO: 0.07).
        num_classes: Width of the vote vector.

    Returns:
        (b, num_classes) float votes.
    """
    similarity = bank_similarities(test_feats, train_feats)
    sims, indices = similarity.topk(k, dim=1, largest=True, sorted=True)
    neighbour_labels = train_labels[indices]
    votes = torch.zeros(test_feats.shape[0], num_classes, device=test_feats.device,
                        dtype=sims.dtype)
    # Same as DINO's one-hot (b*k, C) product, without materialising the one-hot.
    votes.scatter_add_(1, neighbour_labels, sims.div(T).exp())
    return votes


def knn_classify(
    train_feats: ArrayLike,
    train_labels: ArrayLike,
    test_feats: ArrayLike,
    test_labels: ArrayLike,
    *,
    k: int = 20,
    T: float = 0.07,
    num_classes: int | None = None,
    chunk_size: int | None = None,
    device: torch.device | str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[float, float | None]:
    """Weighted k-NN top-1 / top-5 accuracy (DINO's ``knn_classifier``).

    Features are (re-)L2-normalised here, which is a no-op for the output of
    ``extract_features`` and makes the similarity a cosine for any other input.

    Args:
        train_feats: (n_train, d) features of the training split (numpy or torch). A
            float16 or bfloat16 bank stays in its dtype on ``device`` and the test rows are
            rounded to it (as the cache rounds its queries); anything else is float32.
        train_labels: (n_train,) integer labels >= 0.
        test_feats: (n_test, d) features of the test split.
        test_labels: (n_test,) integer labels >= 0 (a class absent from the training split
            simply can never be predicted).
        k: Neighbours that vote (DINO: 20); clipped to n_train.
        T: Temperature of the ``exp(sim / T)`` vote weights (DINO: 0.07).
        num_classes: Number of classes; default ``max(label) + 1`` over both splits.
        chunk_size: Test rows per similarity block; default keeps the (rows, n_train)
            block near 64 MiB. Any value >= 1 gives the same result.
        device: Where to compute; default the device of ``train_feats`` if it is a tensor,
            else CPU.
        progress: Optional ``progress(done, n_test)`` after each chunk of test rows.

    Returns:
        ``(top1, top5)`` as fractions in [0, 1]; ``top5`` is ``None`` when there are
        fewer than 5 classes.

    Examples:
        >>> top1, top5 = knn_classify(train_f, train_y, test_f, test_y)  # k=20, T=0.07
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not T > 0:
        raise ValueError(f"temperature T must be > 0, got {T}")
    if device is None:
        device = train_feats.device if isinstance(train_feats, torch.Tensor) else "cpu"
    device = torch.device(device)
    train_x = _as_features(train_feats, device, "train_feats")
    test_x = _as_features(test_feats, device, "test_feats", dtype=train_x.dtype)
    if train_x.shape[1] != test_x.shape[1]:
        raise ValueError(
            f"train and test features differ in dimension: {train_x.shape[1]} vs "
            f"{test_x.shape[1]}"
        )
    train_y = _as_labels(train_labels, train_x.shape[0], device, "train_labels")
    test_y = _as_labels(test_labels, test_x.shape[0], device, "test_labels")
    seen = max(int(train_y.max()), int(test_y.max())) + 1
    if num_classes is None:
        num_classes = seen
    elif num_classes < seen:
        raise ValueError(f"num_classes={num_classes} but labels go up to {seen - 1}")

    n_train, n_test = train_x.shape[0], test_x.shape[0]
    k = min(k, n_train)
    if chunk_size is None:
        chunk_size = max(1, _SIMILARITY_BUDGET // n_train)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    top5_width = min(5, k, num_classes)

    correct1 = 0
    correct5 = 0
    for start in range(0, n_test, chunk_size):
        stop = min(start + chunk_size, n_test)
        votes = knn_votes(train_x, train_y, test_x[start:stop], k=k, T=T,
                          num_classes=num_classes)
        ranking = votes.sort(dim=1, descending=True, stable=True).indices
        hits = ranking[:, :top5_width] == test_y[start:stop, None]
        correct1 += int(hits[:, 0].sum())
        correct5 += int(hits.any(dim=1).sum())
        if progress is not None:
            progress(stop, n_test)
    top1 = correct1 / n_test
    top5 = correct5 / n_test if num_classes >= 5 else None
    return top1, top5
