"""Tensors are created on their inputs' device: in the paper's algorithm and everything that
runs beside it on a GPU (``engine/``, ``methods/``, ``evaluation/``, ``audit/``), every torch
factory call names its device (``device=x.device``; ``device="cpu"`` where a buffer lives on
the host by design; ``device=None`` in a module's constructor, the default device as for
every ``torch.nn`` layer), or is a ``*_like`` / ``new_*`` call. Read from the source, so a
call on a path no test runs on a GPU is held to it too."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "adasim_ray"
CHECKED = ("engine", "methods", "evaluation", "audit")
FACTORIES = frozenset({
    "arange", "zeros", "ones", "empty", "full", "tensor", "as_tensor", "rand", "randn",
    "randint", "randperm", "eye", "linspace", "logspace", "empty_strided", "normal",
})


def factory_calls_without_device(source: str) -> list[tuple[int, str]]:
    """(line, call) of each ``torch.<factory>(...)`` in ``source`` without ``device=``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "torch"
            and node.func.attr in FACTORIES
            and not any(kw.arg == "device" for kw in node.keywords)
        ):
            found.append((node.lineno, ast.unparse(node)))
    return found


def test_the_reader_finds_a_factory_without_device():
    source = (
        "import torch\n"
        "a = torch.arange(3)\n"
        "b = torch.zeros(2, device=a.device)\n"
        "c = torch.zeros_like(a)\n"
        "d = a.new_full((2,), 1)\n"
        "e = torch.full((2,), 0.0, dtype=torch.float32)\n"
    )
    assert [line for line, _ in factory_calls_without_device(source)] == [2, 6]


def test_every_factory_call_names_its_device():
    offenders = [
        f"{path.relative_to(ROOT.parent)}:{line}: {call}"
        for package in CHECKED
        for path in sorted((ROOT / package).rglob("*.py"))
        for line, call in factory_calls_without_device(path.read_text())
    ]
    assert not offenders, "factory calls without device=:\n" + "\n".join(offenders)
