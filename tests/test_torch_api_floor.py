"""The torch API that the GPU check runs, against the torch versions that have it.

``benchmarks/gpu_check.py`` must run on the GPU machines' torch (2.11, with no network to
upgrade it), and the engine, the methods and the evaluation on the oldest torch that
``pyproject.toml`` admits (2.4); this machine has 2.14 only, and a second venv with another
torch would download gigabytes. So the test reads the code instead: with ``ast``, the
script's lines before its ray phase and ``adasim_ray.evaluation`` and, transitively, the
``adasim_ray`` modules they import (imports inside functions included, as in
``test_import_graph.py``), and lists every ``torch`` name they use: ``torch.x.y``, through
the aliases that ``import torch.nn.functional as F`` / ``from torch import nn`` make, and the
names that ``from torch.x import y`` imports. Each must be in :data:`SINCE`, a hand-kept table
of the torch version that first had it; none may be newer than 2.11, and one newer than the
2.4 floor must be listed in :data:`GUARDED` with the check that the code makes before using it.

What this does not check: methods of tensors and modules (``x.topk``, ``model.to``), the
keyword arguments of a call (except those in :data:`TRACKED_KEYWORDS`), names reached through
variables or ``getattr`` (``ieee_fp32_matmul`` sets ``fp32_precision`` that way, behind a
``hasattr``), torchvision's and timm's APIs, and behaviour that changed between versions.
A new torch name on the path fails the test until someone looks up its version and adds it
to the table.
"""

from __future__ import annotations

import ast
import functools

from tests.test_import_graph import ROOT as PACKAGE_ROOT
from tests.test_import_graph import _modules, imports_of

REPO = PACKAGE_ROOT.parent
GPU_CHECK = REPO / "benchmarks" / "gpu_check.py"
#: The line of gpu_check.py where the code that only the ray phase runs begins.
RAY_SECTION = "# -- the ray phase"
FLOOR, CEILING = (2, 4), (2, 11)
#: Keyword arguments that made a call newer than the function: recorded as ``name(keyword)``.
TRACKED_KEYWORDS = {"out_dtype"}

#: The torch version that first had each name used on the scanned path.
SINCE: dict[str, tuple[int, int]] = {
    "torch": (1, 0),
    "torch.Generator": (1, 0),
    "torch.Tensor": (1, 0),
    "torch.__version__": (1, 0),
    "torch._foreach_add_": (1, 7),
    "torch._foreach_mul_": (1, 7),
    "torch._foreach_norm": (1, 13),
    "torch.amp.GradScaler": (2, 3),
    "torch.arange": (1, 0),
    "torch.as_tensor": (1, 0),
    "torch.autocast": (1, 10),
    "torch.backends": (1, 0),
    "torch.backends.cuda.matmul": (1, 7),
    "torch.backends.cudnn.allow_tf32": (1, 7),
    "torch.backends.cudnn.benchmark": (1, 0),
    "torch.backends.mkldnn": (1, 0),
    "torch.bfloat16": (1, 0),
    "torch.bool": (1, 2),
    "torch.cat": (1, 0),
    "torch.channels_last": (1, 5),
    "torch.cuda.Event": (1, 0),
    "torch.cuda.empty_cache": (1, 0),
    "torch.cuda.get_device_properties": (1, 0),
    "torch.cuda.is_available": (1, 0),
    "torch.cuda.is_bf16_supported": (1, 10),
    "torch.cuda.max_memory_allocated": (1, 0),
    "torch.cuda.reset_peak_memory_stats": (1, 4),
    "torch.cuda.set_device": (1, 0),
    "torch.cuda.synchronize": (1, 0),
    "torch.device": (1, 0),
    "torch.distributed": (1, 0),
    "torch.distributed.all_gather": (1, 0),
    "torch.distributed.all_reduce": (1, 0),
    "torch.distributed.destroy_process_group": (1, 0),
    "torch.distributed.gather": (1, 0),
    "torch.distributed.get_world_size": (1, 0),
    "torch.distributed.init_process_group": (1, 0),
    "torch.distributed.is_available": (1, 0),
    "torch.distributed.is_initialized": (1, 0),
    "torch.dtype": (1, 0),
    "torch.empty": (1, 0),
    "torch.empty_like": (1, 0),
    "torch.enable_grad": (1, 0),
    "torch.equal": (1, 0),
    "torch.exp": (1, 0),
    "torch.finfo": (1, 0),
    "torch.float16": (1, 0),
    "torch.float32": (1, 0),
    "torch.float64": (1, 0),
    "torch.from_numpy": (1, 0),
    "torch.frombuffer": (1, 10),
    "torch.full": (1, 0),
    "torch.full_like": (1, 0),
    "torch.get_float32_matmul_precision": (1, 12),
    "torch.get_num_threads": (1, 0),
    "torch.iinfo": (1, 0),
    "torch.inf": (1, 6),
    "torch.inference_mode": (1, 9),
    "torch.int32": (1, 0),
    "torch.int64": (1, 0),
    "torch.int8": (1, 0),
    "torch.isfinite": (1, 0),
    "torch.isneginf": (1, 7),
    "torch.log": (1, 0),
    "torch.manual_seed": (1, 0),
    "torch.mm": (1, 0),
    "torch.mm(out_dtype)": (2, 8),
    "torch.nn": (1, 0),
    "torch.nn.AdaptiveAvgPool2d": (1, 0),
    "torch.nn.BatchNorm1d": (1, 0),
    "torch.nn.BatchNorm2d": (1, 0),
    "torch.nn.Conv2d": (1, 0),
    "torch.nn.Flatten": (1, 2),
    "torch.nn.GELU": (1, 3),
    "torch.nn.Linear": (1, 0),
    "torch.nn.MaxPool2d": (1, 0),
    "torch.nn.Module": (1, 0),
    "torch.nn.Parameter": (1, 0),
    "torch.nn.ReLU": (1, 0),
    "torch.nn.Sequential": (1, 0),
    "torch.nn.SyncBatchNorm": (1, 1),
    "torch.nn.SyncBatchNorm.convert_sync_batchnorm": (1, 1),
    "torch.nn.functional": (1, 0),
    "torch.nn.functional.cosine_similarity": (1, 0),
    "torch.nn.functional.cross_entropy": (1, 0),
    "torch.nn.functional.interpolate": (1, 0),
    "torch.nn.functional.linear": (1, 0),
    "torch.nn.functional.log_softmax": (1, 0),
    "torch.nn.functional.normalize": (1, 0),
    "torch.nn.functional.one_hot": (1, 1),
    "torch.nn.functional.pad": (1, 0),
    "torch.nn.functional.softmax": (1, 0),
    "torch.nn.init.kaiming_normal_": (1, 0),
    "torch.nn.init.trunc_normal_": (1, 7),
    "torch.nn.init.zeros_": (1, 0),
    "torch.nn.parallel.DistributedDataParallel": (1, 0),
    "torch.no_grad": (1, 0),
    "torch.nonzero": (1, 0),
    "torch.ones": (1, 0),
    "torch.ones_like": (1, 0),
    "torch.ops.aten.mm": (1, 0),
    "torch.ops.aten.mm.overloads": (2, 0),
    "torch.optim.AdamW": (1, 2),
    "torch.optim.LBFGS": (1, 0),
    "torch.optim.Optimizer": (1, 0),
    "torch.optim.SGD": (1, 0),
    "torch.optim.lr_scheduler.CosineAnnealingLR": (1, 0),
    "torch.randint": (1, 0),
    "torch.randn": (1, 0),
    "torch.randperm": (1, 0),
    "torch.set_float32_matmul_precision": (1, 12),
    "torch.set_num_threads": (1, 0),
    "torch.stack": (1, 0),
    "torch.std_mean": (1, 2),
    "torch.sum": (1, 0),
    "torch.tensor": (1, 0),
    "torch.uint8": (1, 0),
    "torch.unique": (1, 0),
    "torch.utils.data.Dataset": (1, 0),
    "torch.version.cuda": (1, 0),
    "torch.where": (1, 0),
    "torch.zeros": (1, 0),
    "torch.zeros_like": (1, 0),
}
#: Names newer than the floor, and the check the code makes before it uses them.
GUARDED = {
    "torch.mm(out_dtype)": "engine.cache.mixed_matmul_available(): 'dtype' in "
                           "torch.ops.aten.mm.overloads(), else the float32 product",
}


def _aliases_and_imports(tree: ast.Module) -> tuple[dict[str, str], set[str]]:
    """Local names bound to torch modules or objects, and the names imported from torch."""
    aliases: dict[str, str] = {}
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "torch":
                    aliases[alias.asname or "torch"] = alias.name if alias.asname else "torch"
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "torch":
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
                imported.add(f"{node.module}.{alias.name}")
    return aliases, imported


def torch_names(source: str) -> set[str]:
    """The ``torch`` names a module's text uses (see the module docstring)."""
    tree = ast.parse(source)
    aliases, names = _aliases_and_imports(tree)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Attribute, ast.Name)):
            continue
        if isinstance(parents.get(node), ast.Attribute):
            continue  # only the whole chain a.b.c, not a.b
        parts, cur = [], node
        while isinstance(cur, ast.Attribute):
            parts.append(cur.attr)
            cur = cur.value
        if not (isinstance(cur, ast.Name) and cur.id in aliases):
            continue
        if isinstance(parents.get(cur), (ast.Import, ast.ImportFrom)):
            continue
        name = ".".join([aliases[cur.id], *reversed(parts)])
        names.add(name)
        call = parents.get(node)
        if isinstance(call, ast.Call) and call.func is node:
            names.update(f"{name}({kw.arg})" for kw in call.keywords
                         if kw.arg in TRACKED_KEYWORDS)
    return names


#: Package modules scanned besides what gpu_check imports (with what they import).
ALSO_SCANNED = {"adasim_ray.evaluation"}


def _gpu_path_before_ray() -> tuple[str, set[str]]:
    """gpu_check.py's text before its ray section, and the package modules that the GPU path
    before Ray and the evaluation import (transitively)."""
    text = GPU_CHECK.read_text()
    head = text[: text.index(RAY_SECTION)]
    modules = _modules()
    todo = imports_of("gpu_check", head, modules) | ALSO_SCANNED
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = modules[name]
        todo |= imports_of(name, path.read_text(), modules, path.name == "__init__.py")
    return head, seen


@functools.lru_cache(maxsize=1)
def used_names() -> dict[str, set[str]]:
    """Each torch name on the path, with the files that use it."""
    head, modules = _gpu_path_before_ray()
    found: dict[str, set[str]] = {}
    sources = {"benchmarks/gpu_check.py": head}
    for name in modules:
        path = _modules()[name]
        sources[str(path.relative_to(REPO))] = path.read_text()
    for where, source in sources.items():
        for name in torch_names(source):
            found.setdefault(name, set()).add(where)
    return found


def test_the_path_reaches_engine_methods_and_backbones_and_not_ray():
    _, modules = _gpu_path_before_ray()
    assert {"adasim_ray.engine.cache", "adasim_ray.backbones", "adasim_ray.methods.step",
            "adasim_ray.evaluation.knn"} <= modules
    assert not any(m.startswith(("adasim_ray.train", "adasim_ray.sweep")) for m in modules)
    for name in modules:
        tree = ast.parse(_modules()[name].read_text())
        for node in ast.walk(tree):
            roots = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(r.split(".")[0] in ("ray", "optuna") for r in roots), name


def test_every_torch_name_on_the_gpu_path_is_in_the_table():
    unknown = {name: sorted(where) for name, where in used_names().items()
               if name not in SINCE}
    assert not unknown, ("torch names on the GPU check's path with no version in SINCE "
                         f"(look each up, add it): {unknown}")


def test_no_name_is_newer_than_the_gpu_machines_torch_and_new_ones_are_guarded():
    used = used_names()
    too_new = {n: SINCE[n] for n in used if n in SINCE and SINCE[n] > CEILING}
    assert not too_new, f"newer than torch {CEILING}: {too_new}"
    unguarded = {n for n in used if n in SINCE and SINCE[n] > FLOOR and n not in GUARDED}
    assert not unguarded, f"newer than the floor torch {FLOOR} with no guard: {unguarded}"


def test_the_table_names_exist_in_this_torch():
    """Every name the table lists resolves in the installed torch (no typo, none removed)."""
    import torch

    def resolves(name: str) -> bool:
        try:
            functools.reduce(getattr, name.split("(")[0].split(".")[1:], torch)
        except AttributeError:
            return False
        return True

    assert [name for name in SINCE if not resolves(name)] == []
    assert "dtype" in torch.ops.aten.mm.overloads()  # torch.mm(out_dtype)


def test_the_scanner_sees_aliases_and_tracked_keywords():
    source = ("import torch\nimport torch.nn.functional as F\nfrom torch import nn\n"
              "x = F.normalize(torch.randn(2, 3), dim=1)\n"
              "y = torch.mm(x, x.T, out_dtype=torch.float32)\nm = nn.Linear(2, 3)\n")
    assert torch_names(source) >= {"torch.nn.functional.normalize", "torch.randn",
                                   "torch.mm", "torch.mm(out_dtype)", "torch.float32",
                                   "torch.nn.Linear", "torch.nn"}

