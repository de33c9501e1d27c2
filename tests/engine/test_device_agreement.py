"""A GPU finds the CPU's neighbours: the cache rounds features the same way on every device
and computes float32 similarities of those rounded values.

No GPU is needed: the device's kernels are emulated on the CPU with what makes them differ
from the CPU's (another summation order; exact products summed in float64 for the half x half
-> float32 product), and ``tests/fake_cuda.py`` shows that the CUDA branch keeps float32 and
stays on the device. The old CUDA path (a float16 product) is the negative control: it reorders
the near-tied rows these tests build, so the tests can fail.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest
import torch

from adasim_ray.engine import (
    BootstrapConfig,
    Bootstrapper,
    EngineAgreement,
    SimilarityCache,
    TopK,
    compare_topk,
)
from adasim_ray.engine import cache as cache_module
from adasim_ray.engine.cache import CUDA_MATMULS, ieee_fp32_matmul, similarities
from tests.fake_cuda import fake_cuda

Kernel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: What a GPU computes, emulated on the CPU from the same rounded (float16) inputs.
DEVICE_KERNELS: dict[str, Kernel] = {
    # tensor cores: exact half products, float32 accumulation (here: exact, rounded once)
    "mixed": lambda q, r: (q.double() @ r.double().T).float(),
    # float32 math in another order than the CPU's (cuBLAS tiles the sum differently)
    "upcast": lambda q, r: (q.float().flip(1) @ r.float().flip(1).T),
}
#: The CUDA path before: a float16 product, whose result has steps of ~5e-4 near 1.
FP16_RESULT: Kernel = lambda q, r: (q.half() @ r.half().T).float()  # noqa: E731

B, GROUP, K, D = 24, 16, 8, 64


@contextlib.contextmanager
def device_kernel(kernel: Kernel) -> Iterator[None]:
    """The cache multiplies with ``kernel`` inside (its rows stay on the CPU)."""
    real = cache_module.similarities
    cache_module.similarities = lambda q, rows, cuda_matmul="mixed": kernel(q, rows)
    try:
        yield
    finally:
        cache_module.similarities = real


def near_tied_cache() -> tuple[SimilarityCache, torch.Tensor, torch.Tensor]:
    """A float16 cache in which each of B queries has GROUP rows at similarities between
    1 - 2e-3 and 1 - 2e-4, at least 2e-5 apart (20 times the near-tie tolerance) once both
    sides are rounded to float16, most neighbours within one float16 step (4.9e-4 below 1);
    the larger id has the larger similarity, so a float16 product's ties (broken towards the
    smaller id) reverse them. Random rows fill the rest. The rows are loaded as stored, since
    rounding them moves a similarity by up to ~5e-5: they are chosen after rounding."""
    gen = torch.Generator().manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(B, D, generator=gen, dtype=torch.float64), dim=1)
    q16 = q.half().double()
    groups = []
    for b in range(B):
        u = torch.randn(64, D, generator=gen, dtype=torch.float64)
        u -= (u @ q[b]).unsqueeze(1) * q[b]  # orthogonal to the query
        u = torch.nn.functional.normalize(u, dim=1)
        target = (1 - 2e-4 - 1.8e-3 * torch.rand(64, 1, generator=gen, dtype=torch.float64))
        rows16 = (target * q[b] + (1 - target**2).sqrt() * u).half()
        sims = rows16.double() @ q16[b]
        picked: list[int] = []
        for j in sims.argsort().tolist():  # ascending: the larger id gets the larger sim
            if len(picked) < GROUP and (not picked or sims[j] - sims[picked[-1]] >= 2e-5):
                picked.append(j)
        assert len(picked) == GROUP
        groups.append(rows16[picked])
    rest = torch.nn.functional.normalize(torch.randn(512, D, generator=gen), dim=1).half()
    rows = torch.cat([*groups, rest])
    cache = SimilarityCache(0, len(rows), D, dtype="float16")
    cache.load_state_dict({"start": 0, "stop": len(rows), "dim": D, "dtype": "float16",
                           "rows": rows, "written": torch.ones(len(rows), dtype=torch.bool)})
    return cache, q, torch.arange(B) + B * GROUP  # self ids: random rows, not in any group


def test_the_built_rows_are_near_tied_at_float16_and_apart_at_float32():
    cache, q, _ = near_tied_cache()
    exact = cache.as_rows(q).double() @ cache.rows.double().T
    top = exact.topk(K, dim=1).values
    gaps = top[:, :-1] - top[:, 1:]
    assert gaps.min() > 10 * 1e-6  # far beyond the near-tie tolerance once rounded
    rounded = top.half()
    assert (rounded[:, :-1] == rounded[:, 1:]).float().mean() > 0.5  # most tie at float16


def test_cpu_and_emulated_device_kernels_give_identical_topk_on_near_ties():
    cache, q, self_ids = near_tied_cache()
    cpu = cache.query(q, self_ids, K)
    exact = cache.as_rows(q).double() @ cache.rows.double().T
    assert torch.equal(cpu.ids, exact.topk(K, dim=1).indices)  # the true order
    for name, kernel in DEVICE_KERNELS.items():
        with device_kernel(kernel):
            device = cache.query(q, self_ids, K)
        found = compare_topk(cpu, device)
        assert torch.equal(device.ids, cpu.ids), name
        assert (found.counts.equal, found.counts.near_tied, found.counts.differ) == (B, 0, 0)
        assert found.max_sim_diff < 1e-6, name


def test_a_float16_result_reorders_the_near_ties():
    """The negative control: the CUDA path before this fix fails the comparison."""
    cache, q, self_ids = near_tied_cache()
    cpu = cache.query(q, self_ids, K)
    with device_kernel(FP16_RESULT):
        old = cache.query(q, self_ids, K)
    found = compare_topk(cpu, old)
    assert found.counts.differ == B and found.differ.all()


@pytest.mark.parametrize("kernel", ["mixed", "upcast", "float16 result"])
def test_engines_agree_over_epochs_with_the_emulated_device_kernel(kernel):
    """Two engines fed the same batches, one multiplying as a GPU does: top-K, windows and
    plans agree (near ties and float16 rounding steps of the window excepted, and counted).
    The old float16 product disagrees (the negative control)."""
    n, d, epochs = 512, 16, 3
    gen = torch.Generator().manual_seed(1)
    # an eighth of the rows are 4 copies each of 16 unit vectors: exact ties in any precision
    base = torch.nn.functional.one_hot(torch.arange(n // 8) % 16, d).float()
    cfg = BootstrapConfig(mode="adasim", tau=0.5, window=2, topk=K, cache_dtype="float16")
    engines = [Bootstrapper(n, d, cfg, shards=2, seed=1) for _ in range(2)]
    agreement = EngineAgreement(n)
    for _ in range(epochs):
        feats = torch.cat([base, torch.randn(n - n // 8, d, generator=gen)])
        order = torch.randperm(n, generator=gen)
        for lo in range(0, n, 128):
            ids = order[lo : lo + 128]
            ref = engines[0].step(ids, feats[ids])
            with device_kernel(DEVICE_KERNELS.get(kernel, FP16_RESULT)):
                other = engines[1].step(ids, feats[ids])
            agreement.step(ids, ref, other)
        for engine in engines:
            engine.end_epoch()
        agreement.epoch(*engines)
    summary = agreement.summary()
    if kernel not in DEVICE_KERNELS:
        assert not agreement.ok and summary["engine_topk_differ_rows"] > 0
        assert summary["engine_window_differ_rows"] > 0
        return
    assert agreement.ok, summary
    for key in ("engine_ids_equal", "engine_window_equal", "engine_plan_equal"):
        assert summary[key] is True, key
    assert summary["engine_topk_equal_rows"] + summary["engine_topk_near_tied_rows"] == epochs * n


def test_compare_topk_tells_near_ties_from_real_differences():
    ref = TopK(torch.tensor([[0.9, 0.5, 0.4], [0.9, 0.5, 0.4], [0.9, 0.5, 0.4]]),
               torch.tensor([[1, 2, 3], [1, 2, 3], [1, 2, 3]]))
    other = TopK(torch.tensor([[0.9, 0.5000002, 0.4], [0.9, 0.5, 0.4000004], [0.9, 0.5, 0.3]]),
                 torch.tensor([[1, 2, 3], [1, 2, 9], [1, 3, 2]]))
    found = compare_topk(ref, other, tol=1e-6)
    # row 0 equal; row 1: id 9 took the K-th place within 1e-6; row 2: 2 and 3 swapped
    # although 0.5 and 0.4 lie 0.1 apart
    counts = found.counts
    assert (counts.equal, counts.near_tied, counts.differ) == (1, 1, 1)
    assert found.near_tied.tolist() == [False, True, False]
    assert found.differ.tolist() == [False, False, True]
    swapped = TopK(torch.tensor([[0.9, 0.5000001, 0.5]]), torch.tensor([[1, 3, 2]]))
    tied = TopK(torch.tensor([[0.9, 0.5, 0.5000001]]), torch.tensor([[1, 2, 3]]))
    assert compare_topk(tied, swapped).counts.near_tied == 1


@pytest.mark.parametrize("cuda_matmul", CUDA_MATMULS)
def test_the_cuda_branch_gives_float32_on_the_device(cuda_matmul):
    with fake_cuda():
        cache = SimilarityCache(0, 64, 8, dtype="float16", device="cuda")
        q = cache.as_rows(torch.randn(4, 8, device="cuda"))
        assert (q.dtype, q.device.type) == (torch.float16, "cuda")
        sims = similarities(q, cache.rows, cuda_matmul)
        assert (sims.dtype, sims.device.type, tuple(sims.shape)) == (torch.float32, "cuda",
                                                                     (4, 64))


def _precision_state() -> dict[str, str]:
    """Every reading of the float32 matmul setting ('ERR' where torch refuses to read it)."""
    readers = {"legacy": torch.get_float32_matmul_precision,
               "allow_tf32": lambda: str(torch.backends.cuda.matmul.allow_tf32)}
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):  # torch >= 2.9
        readers["cuda"] = lambda: torch.backends.cuda.matmul.fp32_precision
        readers["mkldnn"] = lambda: torch.backends.mkldnn.matmul.fp32_precision
    state = {}
    for name, read in readers.items():
        try:
            state[name] = read()
        except RuntimeError:
            state[name] = "ERR"
    return state


@pytest.mark.parametrize("setting", ["default", "legacy", "precision", "medium", "new"])
def test_ieee_fp32_matmul_turns_tf32_off_and_restores_the_setting(setting):
    """Inside: IEEE float32, with the legacy and the new API in agreement (a CUDA product
    refuses to run while they disagree, torch >= 2.9). After: every reading as before."""
    flags = torch.backends.cuda.matmul
    new_api = hasattr(flags, "fp32_precision")
    pristine = [(obj, obj.fp32_precision) for obj in (flags, torch.backends.mkldnn.matmul)
                ] if new_api else []
    try:
        if setting == "legacy":
            flags.allow_tf32 = True
        elif setting in ("precision", "medium"):
            torch.set_float32_matmul_precision("high" if setting == "precision" else "medium")
        elif setting == "new":
            if not new_api:
                pytest.skip("torch < 2.9 has no fp32_precision")
            flags.fp32_precision = "tf32"
        before = _precision_state()
        with ieee_fp32_matmul():
            inside = _precision_state()
        assert inside["legacy"] == "highest" and inside["allow_tf32"] == "False"
        assert inside.get("cuda", "ieee") == "ieee"
        assert _precision_state() == before
    finally:
        torch.set_float32_matmul_precision("highest")
        for obj, value in pristine:
            obj.fp32_precision = value
