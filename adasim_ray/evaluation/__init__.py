"""Evaluation protocols of the AdaSim paper on frozen features (Sec. 4.5 and 4.6).

- ``features``: frozen, L2-normalised backbone features and the raw-pixel baseline;
- ``knn``: DINO's weighted k-NN (k = 20, T = 0.07);
- ``linear``: linear probe trained on the train split;
- ``fewshot``: 5-way 5-shot prototypical-network episodes with a 95% interval;
- ``protocol``: all of them on one split, as one JSON-ready dict.
"""

from adasim_ray.evaluation.features import extract_features, raw_pixel_features
from adasim_ray.evaluation.fewshot import few_shot
from adasim_ray.evaluation.knn import knn_classify
from adasim_ray.evaluation.linear import LinearProbe, fit_linear_probe, linear_probe
from adasim_ray.evaluation.protocol import evaluate, evaluate_backbone, evaluate_raw_pixels

__all__ = [
    "LinearProbe",
    "evaluate",
    "evaluate_backbone",
    "evaluate_raw_pixels",
    "extract_features",
    "few_shot",
    "fit_linear_probe",
    "knn_classify",
    "linear_probe",
    "raw_pixel_features",
]
