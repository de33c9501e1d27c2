"""The roles of a method's encoders, which ``export --which`` (and the run's evaluation)
name: imported by the command-line parser, so this module imports nothing (no torch).

Every method maps these roles onto its backbones (``SelfDistillationMethod.encoders``):
``teacher`` is the one evaluated, cached and exported by default (DINO's and BYOL's momentum
encoder), ``student`` the one trained by gradient (BYOL's online network); a method with one
backbone (SimSiam) gives it for both.
"""

from __future__ import annotations

__all__ = ["ENCODER_ROLES", "EVALUATED"]

#: The roles ``export --which`` offers, the evaluated one first.
ENCODER_ROLES = ("teacher", "student")
#: The role evaluated by k-NN, cached by AdaSim and exported by default.
EVALUATED = "teacher"
