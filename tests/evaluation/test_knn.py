"""DINO's weighted k-NN against a brute-force, one-test-row-at-a-time reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from adasim_ray.evaluation import knn as knn_module
from adasim_ray.evaluation.knn import knn_classify


def brute_force_knn(train_x, train_y, test_x, test_y, k, T, num_classes):
    """Plain-Python loops: cosine sims, top-k, sum exp(sim / T) per class, rank classes."""
    def unit(v):
        return v / np.linalg.norm(v)

    k = min(k, len(train_x))
    correct1 = correct5 = 0
    for x, label in zip(test_x, test_y, strict=True):
        sims = [float(np.dot(unit(x), unit(t))) for t in train_x]
        neighbours = sorted(range(len(sims)), key=lambda j: -sims[j])[:k]
        votes = [0.0] * num_classes
        for j in neighbours:
            votes[int(train_y[j])] += math.exp(sims[j] / T)
        # Highest votes first, lower class index first among equal votes.
        ranking = sorted(range(num_classes), key=lambda c: (-votes[c], c))
        correct1 += ranking[0] == label
        correct5 += label in ranking[: min(5, k)]
    n = len(test_x)
    return correct1 / n, (correct5 / n if num_classes >= 5 else None)


def random_problem(rng, n_train, n_test, d, num_classes):
    centres = rng.standard_normal((num_classes, d))
    train_y = rng.integers(0, num_classes, n_train)
    test_y = rng.integers(0, num_classes, n_test)
    # Weak class structure so accuracies are neither 0 nor 1 and top-5 differs from top-1.
    train_x = centres[train_y] * 0.5 + rng.standard_normal((n_train, d))
    test_x = centres[test_y] * 0.5 + rng.standard_normal((n_test, d))
    return (train_x.astype(np.float32), train_y, test_x.astype(np.float32), test_y)


@pytest.mark.parametrize(
    ("n_train", "n_test", "d", "num_classes", "k", "chunk_size"),
    [
        (60, 40, 8, 10, 20, None),  # DINO's defaults, one chunk
        (60, 40, 8, 10, 20, 7),  # remainder chunk of 5 rows
        (50, 3, 5, 7, 1, 2),  # k = 1, fewer test rows than the chunk
        (30, 25, 6, 3, 5, None),  # < 5 classes: no top-5
        (12, 20, 4, 6, 20, 8),  # k > n_train: clipped to 12
        (40, 1, 4, 12, 3, 1000),  # a single test row, k < 5 limits top-5 to 3 ranks
        (80, 33, 16, 2, 20, 4),  # binary
    ],
)
def test_matches_brute_force(n_train, n_test, d, num_classes, k, chunk_size):
    rng = np.random.default_rng(n_train * 1000 + n_test)
    train_x, train_y, test_x, test_y = random_problem(rng, n_train, n_test, d, num_classes)
    expected = brute_force_knn(train_x, train_y, test_x, test_y, k, 0.07, num_classes)
    got = knn_classify(train_x, train_y, test_x, test_y, k=k, num_classes=num_classes,
                       chunk_size=chunk_size)
    assert got[0] == pytest.approx(expected[0])
    if expected[1] is None:
        assert got[1] is None
    else:
        assert got[1] == pytest.approx(expected[1])


@pytest.mark.parametrize("T", [0.02, 0.07, 1.0])
def test_temperature_changes_votes_like_brute_force(T):
    rng = np.random.default_rng(7)
    train_x, train_y, test_x, test_y = random_problem(rng, 100, 50, 6, 8)
    expected = brute_force_knn(train_x, train_y, test_x, test_y, 20, T, 8)
    assert knn_classify(train_x, train_y, test_x, test_y, T=T) == pytest.approx(expected)


def test_chunk_size_does_not_change_result():
    rng = np.random.default_rng(3)
    train_x, train_y, test_x, test_y = random_problem(rng, 200, 97, 10, 10)
    results = {knn_classify(train_x, train_y, test_x, test_y, chunk_size=c)
               for c in (1, 10, 96, 97, 1000, None)}
    assert len(results) == 1


def test_torch_and_numpy_inputs_agree_and_features_are_renormalised():
    rng = np.random.default_rng(4)
    train_x, train_y, test_x, test_y = random_problem(rng, 80, 30, 6, 5)
    from_numpy = knn_classify(train_x, train_y, test_x, test_y)
    scaled = knn_classify(torch.from_numpy(train_x) * 3.0, torch.from_numpy(train_y),
                          torch.from_numpy(test_x) * 0.1, torch.from_numpy(test_y))
    assert from_numpy == scaled


def test_perfect_neighbours_and_unseen_test_class():
    train_x = np.eye(4, dtype=np.float32)
    train_y = np.array([0, 1, 2, 3])
    test_x = np.array([[1, 0.1, 0, 0], [0, 0, 0, 1], [0, 1, 0.2, 0]], dtype=np.float32)
    # Third test row is labelled 4, a class with no training image: it can never be right.
    test_y = np.array([0, 3, 4])
    top1, top5 = knn_classify(train_x, train_y, test_x, test_y, k=1)
    assert top1 == pytest.approx(2 / 3)
    assert top5 == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"k": 0}, "k must be"), ({"T": 0.0}, "temperature"), ({"num_classes": 2}, "num_classes")],
)
def test_bad_arguments(kwargs, message):
    x = np.ones((4, 3), dtype=np.float32)
    y = np.array([0, 1, 2, 2])
    with pytest.raises(ValueError, match=message):
        knn_classify(x, y, x, y, **kwargs)


def test_dimension_mismatch_and_empty_inputs():
    x = np.ones((4, 3), dtype=np.float32)
    y = np.zeros(4, dtype=np.int64)
    with pytest.raises(ValueError, match="dimension"):
        knn_classify(x, y, np.ones((2, 5), dtype=np.float32), y[:2])
    with pytest.raises(ValueError, match="non-empty"):
        knn_classify(x, y, np.ones((0, 3), dtype=np.float32), y[:0])


def dino_knn_classifier(train_features, train_labels, test_features, test_labels, k, T,
                        num_classes):
    """facebookresearch/dino eval_knn.py::knn_classifier, verbatim apart from style.

    Needs >= 100 test rows (its chunk is n_test // 100) and returns percentages.
    """
    top1, top5, total = 0.0, 0.0, 0
    train_features = train_features.t()
    num_test_images, num_chunks = test_labels.shape[0], 100
    imgs_per_chunk = num_test_images // num_chunks
    retrieval_one_hot = torch.zeros(k, num_classes).to(train_features.device)
    for idx in range(0, num_test_images, imgs_per_chunk):
        features = test_features[idx : min((idx + imgs_per_chunk), num_test_images), :]
        targets = test_labels[idx : min((idx + imgs_per_chunk), num_test_images)]
        batch_size = targets.shape[0]
        similarity = torch.mm(features, train_features)
        distances, indices = similarity.topk(k, largest=True, sorted=True)
        candidates = train_labels.view(1, -1).expand(batch_size, -1)
        retrieved_neighbors = torch.gather(candidates, 1, indices)
        retrieval_one_hot.resize_(batch_size * k, num_classes).zero_()
        retrieval_one_hot.scatter_(1, retrieved_neighbors.view(-1, 1), 1)
        distances_transform = distances.clone().div_(T).exp_()
        probs = torch.sum(
            torch.mul(retrieval_one_hot.view(batch_size, -1, num_classes),
                      distances_transform.view(batch_size, -1, 1)),
            1,
        )
        _, predictions = probs.sort(1, True)
        correct = predictions.eq(targets.data.view(-1, 1))
        top1 = top1 + correct.narrow(1, 0, 1).sum().item()
        top5 = top5 + correct.narrow(1, 0, min(5, k)).sum().item()
        total += targets.size(0)
    return top1 * 100.0 / total, top5 * 100.0 / total


def test_top1_matches_dinos_own_code():
    rng = np.random.default_rng(11)
    train_x, train_y, test_x, test_y = random_problem(rng, 500, 230, 12, 10)
    tx = torch.nn.functional.normalize(torch.from_numpy(train_x), dim=1)
    sx = torch.nn.functional.normalize(torch.from_numpy(test_x), dim=1)
    dino_top1, _ = dino_knn_classifier(tx, torch.from_numpy(train_y), sx,
                                       torch.from_numpy(test_y), 20, 0.07, 10)
    top1, _ = knn_classify(train_x, train_y, test_x, test_y)
    assert 0.2 < top1 < 0.95  # a non-trivial problem
    assert top1 == pytest.approx(dino_top1 / 100.0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_half_bank_gives_the_float32_result_within_its_rounding(dtype):
    rng = np.random.default_rng(11)
    train_x, train_y, test_x, test_y = random_problem(rng, 400, 200, 32, 10)
    full = knn_classify(train_x, train_y, test_x, test_y)
    half = knn_classify(torch.from_numpy(train_x).to(dtype), train_y,
                        torch.from_numpy(test_x).to(dtype), test_y)
    # A neighbour within the half dtype's rounding of the k-th may swap in and turn a close
    # vote: a query or two of 200 (bfloat16 rounds 8 times coarser than float16).
    assert half[0] == pytest.approx(full[0], abs=2 / 200 + 1e-9)
    assert half[1] == pytest.approx(full[1], abs=2 / 200 + 1e-9)


def test_a_half_bank_stays_half_and_is_scored_a_block_at_a_time(monkeypatch):
    rng = np.random.default_rng(12)
    train_x, train_y, test_x, test_y = random_problem(rng, 300, 40, 8, 6)
    bank = knn_module._as_features(torch.from_numpy(train_x).half(), torch.device("cpu"), "x")
    assert bank.dtype == torch.float16  # no float32 copy of the bank
    torch.testing.assert_close(bank.float().norm(dim=1), torch.ones(300), atol=1e-3, rtol=0)

    blocks = []
    real = knn_module.similarities

    def recording(q, rows):
        blocks.append((q.dtype, rows.dtype, rows.shape[0]))
        return real(q, rows)

    monkeypatch.setattr(knn_module, "_SIMILARITY_BUDGET", 8 * 64)  # 64 bank rows at d = 8
    monkeypatch.setattr(knn_module, "similarities", recording)
    query = torch.from_numpy(test_x[:5]).half()
    got = knn_module.bank_similarities(query, bank)
    assert [b[2] for b in blocks] == [64, 64, 64, 64, 44]
    assert all(b[:2] == (torch.float16, torch.float16) for b in blocks)
    assert got.dtype == torch.float32
    # The exact product of the half values, whatever the blocks.
    torch.testing.assert_close(got, query.double() @ bank.double().T, atol=1e-6, rtol=0,
                               check_dtype=False)
    # The whole classification gives the same answer with tiny blocks as with one.
    blocks.clear()
    small = knn_classify(torch.from_numpy(train_x).half(), train_y,
                         torch.from_numpy(test_x).half(), test_y)
    assert len(blocks) > 1
    monkeypatch.undo()
    assert small == knn_classify(torch.from_numpy(train_x).half(), train_y,
                                 torch.from_numpy(test_x).half(), test_y)


def test_a_float32_bank_is_one_product_as_before(monkeypatch):
    def fail(*args):
        raise AssertionError("a float32 bank must not go through the half product")

    monkeypatch.setattr(knn_module, "similarities", fail)
    rng = np.random.default_rng(13)
    train_x, train_y, test_x, test_y = random_problem(rng, 60, 40, 8, 10)
    expected = brute_force_knn(train_x, train_y, test_x, test_y, 20, 0.07, 10)
    # Half test rows against a float32 bank are turned to float32 (the bank's dtype).
    got = knn_classify(train_x, train_y, torch.from_numpy(test_x).half().float(), test_y)
    assert got[0] == pytest.approx(expected[0], abs=1 / 40)
