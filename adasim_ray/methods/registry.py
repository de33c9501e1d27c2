"""The method registry: each self-distillation method declares its config section and its
builder in its own module and registers itself here (as solo-learn's ``METHODS``).

Nothing outside ``adasim_ray/methods/`` names a method: the run config gets one YAML section
per registered method (``dino:``, ``simsiam:``, ...), ``method:`` must name a registered one,
and the recipe builds whatever the registry returns.

Adding a method (say VICReg) is one new file ``adasim_ray/methods/vicreg.py``, which
``methods/catalog.py`` imports with every other file of the folder:

    @dataclass(frozen=True)
    class VICRegConfig:          # the YAML section ``vicreg:``; fields with defaults
        ...                      # __post_init__ raises ValueError("field: problem")

    @register_method("vicreg", VICRegConfig)
    class VICReg(SelfDistillationMethod):   # methods/base.py: forward, build_optimizer,
        def __init__(self, backbone, feat_dim, *, epochs, iters_per_epoch, batch_size,
                     config): ...           # encoders; ``monitors`` it logs

plus its tests and an experiment YAML.

Examples:
    >>> from adasim_ray.methods import METHODS
    >>> {"dino", "simsiam"} <= set(METHODS)
    True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from torch import nn

__all__ = ["METHODS", "MethodSpec", "build_registered", "method_spec", "register_method"]

M = TypeVar("M", bound=type)


@dataclass(frozen=True)
class MethodSpec:
    """A registered method.

    Attributes:
        name: the ``method:`` value and the name of its YAML section.
        config: its config section, a frozen dataclass whose fields all have defaults.
        build: ``build(backbone, feat_dim, *, epochs, iters_per_epoch, batch_size, config)``
            returns the method module (usually the class itself).
    """

    name: str
    config: type
    build: Callable[..., nn.Module]


#: name -> spec, in registration order (the order of the sections in a dumped config).
METHODS: dict[str, MethodSpec] = {}


def register_method(name: str, config: type) -> Callable[[M], M]:
    """Class decorator: register ``cls`` as method ``name`` with its config section.

    Raises:
        ValueError: ``name`` is already taken by another class.
    """

    def decorate(cls: M) -> M:
        known = METHODS.get(name)
        if known is not None and known.build is not cls:
            raise ValueError(f"method {name!r} is already registered ({known.build.__name__})")
        METHODS[name] = MethodSpec(name, config, cls)
        return cls

    return decorate


def method_spec(name: str) -> MethodSpec:
    """The registered method ``name``.

    Raises:
        ValueError: unknown name, naming the registered ones.
    """
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(METHODS)}")
    return METHODS[name]


def build_registered(name: str, backbone: nn.Module, feat_dim: int, config: Any, *,
                     epochs: int, iters_per_epoch: int, batch_size: int) -> nn.Module:
    """Build method ``name`` from an instance of its config section."""
    spec = method_spec(name)
    if not isinstance(config, spec.config):
        raise TypeError(f"method {name!r} needs a {spec.config.__name__}, "
                        f"got {type(config).__name__}")
    return spec.build(backbone, feat_dim, epochs=epochs, iters_per_epoch=iters_per_epoch,
                      batch_size=batch_size, config=config)
