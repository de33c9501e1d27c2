"""adasim-ray: AdaSim (adaptive similarity bootstrapping for self-distillation) on Ray."""

__version__ = "0.1.0"
