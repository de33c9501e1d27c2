"""Read a finished run's window and cache, rank suspects, write CSV files and contact sheets.

``audit_run`` is what ``adasim-ray audit RUN_DIR`` does: the latest complete checkpoint of the run
gives the cache shards (Z and the window, ``cache_shard_<s>.pt``), the run's ``config.yaml``
gives the data set (its labels, and the images drawn on the sheets). Outputs, in ``output``:

- ``label_suspects.csv`` / ``label_suspects.png``: images whose given label is likely wrong, most
  suspect first: by confident learning on out-of-sample probabilities of a linear probe
  (:mod:`.confident`, when ``cleanlab`` is installed), else by the votes of their stable
  neighbours. Each row has ``given_label``, ``suggested_label``, ``label_quality`` (the
  probability of the given label, or the neighbour weight share voting for it) and the
  ``method``; each sheet row the image, then its neighbours (a neighbour's caption is green
  when it shares the image's label, red otherwise);
- ``duplicates.csv`` / ``duplicates.png``: pairs of distinct images with near-identical cached
  features, most similar first.

``features="model"`` runs the same analysis on exact features instead: the final teacher
backbone's features of the un-augmented images, with exact neighbours (``scores.exact_window``).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adasim_ray.audit.confident import (
    EXTRA,
    FOLDS,
    METHOD,
    cleanlab_available,
    confident_learning,
    out_of_sample_probabilities,
)
from adasim_ray.audit.scores import (
    DuplicatePairs,
    LabelSuspects,
    StableNeighbours,
    duplicate_pairs,
    exact_window,
    label_suspects,
    stable_neighbours,
)
from adasim_ray.config import PretrainConfig
from adasim_ray.data import ImageSource
from adasim_ray.engine.window import NeighbourWindow
from adasim_ray.figures.grid import figure, save, show

FEATURES = ("cache", "model")
#: ``features="auto"`` takes ``model`` up to this many images, ``cache`` above (exact
#: neighbours cost O(N^2 d): at 200,000 images of d = 384, 1.5e13 multiply-adds).
AUTO_MODEL_IMAGES = 200_000


def choose_features(features: str, num_images: int) -> tuple[str, str]:
    """(``cache`` or ``model``, why) for ``features`` (``auto``, ``cache`` or ``model``).

    ``auto`` takes the one that finds most where it is affordable: measured on planted digits
    (tests/audit/test_audit_run.py), exact features found 17 of 20 flipped labels and 10 of
    10 duplicates where the cache found 2 and 0 (the cache holds augmented views of a short
    run). Above ``AUTO_MODEL_IMAGES`` the cache is used, as exact neighbours cost O(N^2 d).

    Examples:
        >>> choose_features("auto", 6000)[0], choose_features("auto", 1_281_167)[0]
        ('model', 'cache')
    """
    if features in FEATURES:
        return features, "as asked"
    if features != "auto":
        raise ValueError(f"features must be auto or one of {FEATURES}, got {features!r}")
    if num_images <= AUTO_MODEL_IMAGES:
        return "model", (f"auto: {num_images} images, up to {AUTO_MODEL_IMAGES}; exact "
                         "features of the final network find more label errors and "
                         "duplicates than the run's cache of augmented views")
    return "cache", (f"auto: {num_images} images, over {AUTO_MODEL_IMAGES}, where exact "
                     "neighbours cost O(N^2 d); --features model on a GPU finds more")
RANKINGS = ("confident", "neighbours")
NEIGHBOUR_VOTES = "neighbour_votes"


def choose_ranking(ranking: str) -> tuple[str, str]:
    """(``confident`` or ``neighbours``, why) for ``ranking`` (``auto`` or one of them).

    ``auto`` takes confident learning where ``cleanlab`` is installed: on the demo's MNIST with
    30 planted flips, after the demo's recipe, it put 28 in the top 60 against neighbour votes'
    19 (benchmarks/audit_recall.py; docs/benchmarks.md, "Label audit").
    """
    if ranking == "confident" and not cleanlab_available():
        raise ValueError(f"ranking confident needs cleanlab: {EXTRA}")
    if ranking in RANKINGS:
        return ranking, "as asked"
    if ranking != "auto":
        raise ValueError(f"ranking must be auto or one of {RANKINGS}, got {ranking!r}")
    if cleanlab_available():
        return "confident", (f"confident learning (cleanlab) on {FOLDS}-fold out-of-sample "
                             "probabilities of a linear probe")
    return "neighbours", f"neighbour votes: cleanlab is not installed ({EXTRA})"


@dataclass
class RankedLabels:
    """Label suspects in the order written, with what each ranking says about them.

    Attributes:
        ids: (M,) image ids, most suspect first.
        suggested: (M,) the label the ranking would give instead (-1: none).
        quality: (M,) the ranking's confidence in the given label, in [0, 1].
        method: ``confident_learning`` or ``neighbour_votes``.
    """

    ids: np.ndarray
    suggested: np.ndarray
    quality: np.ndarray
    method: str


def rank_labels(
    ranking: str,
    suspects: LabelSuspects,
    rows: torch.Tensor,
    labels: np.ndarray,
    written: torch.Tensor | None = None,
) -> RankedLabels:
    """Rank the labelled images by ``ranking`` (``confident`` or ``neighbours``).

    ``confident`` fits the probes on ``rows`` (the features), the rows ever written only.
    """
    if ranking == "neighbours":
        return RankedLabels(suspects.ids, suspects.suggested, suspects.agree, NEIGHBOUR_VOTES)
    ids = np.arange(len(labels)) if written is None else np.flatnonzero(np.asarray(written))
    probs = out_of_sample_probabilities(rows[torch.from_numpy(ids)], labels[ids],
                                        num_classes=int(labels.max()) + 1)
    issues = confident_learning(probs, labels[ids])
    return RankedLabels(ids[issues.ids], issues.suggested, issues.quality, METHOD)


SHEET_NEIGHBOURS = 8  # neighbours drawn per suspect on the contact sheet
PAIRS_PER_ROW = 4


@dataclass
class RunState:
    """The bootstrapping state of a run's latest checkpoint, all shards joined.

    Attributes:
        checkpoint: the checkpoint directory read.
        epoch: epochs the run had finished when it was written.
        windows: the window shards (ids [0, N) in order).
        rows: (N, d) cache Z.
        written: (N,) bool, rows ever written.
    """

    checkpoint: Path
    epoch: int
    windows: list[NeighbourWindow]
    rows: torch.Tensor
    written: torch.Tensor

    @property
    def num_images(self) -> int:
        return int(self.rows.shape[0])


def load_run_state(checkpoint: Path) -> RunState:
    """The window and cache of every shard of a complete checkpoint directory."""
    from adasim_ray.rundir.checkpoint import read_checkpoint

    meta, _, shard_states = read_checkpoint(checkpoint)
    windows, rows, written = [], [], []
    for state in shard_states:
        w = state["window"]
        window = NeighbourWindow(w["start"], w["stop"], w["window"], w["topk"], w["sim_dtype"])
        window.load_state_dict(w)
        windows.append(window)
        rows.append(state["cache"]["rows"].float())
        written.append(state["cache"]["written"])
    return RunState(
        checkpoint=Path(checkpoint),
        epoch=int(meta["epoch"]),
        windows=windows,
        rows=torch.cat(rows),
        written=torch.cat(written),
    )


def model_features(
    cfg: PretrainConfig,
    source: ImageSource,
    checkpoint: Path,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """(N, d) features of the un-augmented training images by the checkpoint's eval backbone
    (the teacher for DINO), L2-normalised."""
    from adasim_ray.evaluation.features import extract_features
    from adasim_ray.recipe import build_model, make_views
    from adasim_ray.rundir.checkpoint import read_checkpoint

    _, state, _ = read_checkpoint(checkpoint)
    views = make_views(cfg, source)
    model = build_model(cfg, views, len(source))
    model.load_state_dict(state["model"])
    feats, _ = extract_features(model.eval_backbone(), source, views.eval_transform, device=device)
    return torch.as_tensor(feats, dtype=torch.float32, device="cpu")


def audit_run(
    cfg: PretrainConfig,
    source: ImageSource,
    state: RunState,
    output: Path,
    top: int = 50,
    sheet: int = 16,
    features: str = "auto",
    device: str | torch.device | None = None,
    ranking: str = "auto",
) -> dict[str, Any]:
    """Rank label suspects (when ``source`` has labels) and duplicates; write the outputs.

    Args:
        cfg: the run's configuration (for the record in the summary).
        source: the run's training images, index for index as the run saw them.
        state: :func:`load_run_state` of the run's checkpoint.
        output: directory for the CSV files and sheets (created).
        top: rows per CSV file.
        sheet: cases drawn per contact sheet.
        features: ``"cache"`` (the run's window and cache, as in Appendix F), ``"model"``
            (exact features of the un-augmented images, exact neighbours; same K) or
            ``"auto"`` (:func:`choose_features`).
        device: where ``"model"`` computes (default: a GPU if there is one).
        ranking: of the label suspects: ``"confident"`` (confident learning, needs
            ``cleanlab``), ``"neighbours"`` (neighbour votes) or ``"auto"``
            (:func:`choose_ranking`). Duplicates are ranked the same way whatever it says.

    Returns:
        A summary: paths written and the number of cases ranked.
    """
    features, why = choose_features(features, state.num_images)
    ranking, ranking_why = choose_ranking(ranking) if source.labels is not None else ("", "")
    if len(source) != state.num_images:
        raise ValueError(
            f"the data set {cfg.data!r} has {len(source)} images but the run's cache has "
            f"{state.num_images}: it changed since the run"
        )
    output.mkdir(parents=True, exist_ok=True)
    k = state.windows[0].topk
    if features == "cache":
        neighbours = stable_neighbours(state.windows)
        rows, written = state.rows, state.written
    else:
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        rows = model_features(cfg, source, state.checkpoint, device)
        neighbours = stable_neighbours([exact_window(rows, k, device=device)], k=k)
        written = None
    summary: dict[str, Any] = {
        "checkpoint": str(state.checkpoint),
        "epoch": state.epoch,
        "data": cfg.data,
        "num_images": state.num_images,
        "features": features,
        "features_why": why,
        "window_epochs": state.windows[0].epochs_in_window if features == "cache" else 1,
    }
    if source.labels is not None:
        labels = np.asarray(source.labels, dtype=np.int64)
        suspects = label_suspects(neighbours, labels)
        ranked = rank_labels(ranking, suspects, rows, labels, written)
        csv_path = output / "label_suspects.csv"
        _write_suspects_csv(csv_path, ranked, suspects, neighbours, source, top)
        png_path = output / "label_suspects.png"
        _suspects_sheet(png_path, ranked, neighbours, source, sheet, features)
        summary["label_suspects"] = {
            "csv": str(csv_path),
            "png": str(png_path),
            "method": ranked.method,
            "method_why": ranking_why,
            "ranked": int(len(ranked.ids)),
            "mostly_other_label": int((suspects.share > 0.5).sum()),
            "confidently_other_label": int((ranked.quality < 0.5).sum()),
        }
    pairs = duplicate_pairs(neighbours, rows, written)
    csv_path = output / "duplicates.csv"
    _write_pairs_csv(csv_path, pairs, source, top)
    png_path = output / "duplicates.png"
    _pairs_sheet(png_path, pairs, source, sheet, features)
    summary["duplicates"] = {"csv": str(csv_path), "png": str(png_path), "ranked": len(pairs.a)}
    return summary


def _name(source: ImageSource, label: int) -> str:
    if label < 0:
        return ""
    if source.class_names is not None and label < len(source.class_names):
        return source.class_names[label]
    return str(label)


def _write_suspects_csv(
    path: Path,
    ranked: RankedLabels,
    suspects: LabelSuspects,
    neighbours: StableNeighbours,
    source: ImageSource,
    top: int,
) -> None:
    labels = source.labels
    n = len(labels)
    # The neighbour votes of every image, whichever ranking orders the rows.
    share, agree, weight = np.zeros(n), np.zeros(n), np.zeros(n)
    share[suspects.ids], agree[suspects.ids] = suspects.share, suspects.agree
    weight[suspects.ids] = suspects.weight
    where = list(source.location(0)) if len(source) else []
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                "rank",
                "index",
                *where,
                "given_label",
                "suggested_label",
                "label_quality",
                "method",
                "share",
                "agree",
                "weight",
                "neighbours",
                "neighbour_labels",
            ]  # fmt: skip
        )
        for r in range(min(top, len(ranked.ids))):
            i = int(ranked.ids[r])
            nbrs = [int(j) for j in neighbours.ids[i] if j >= 0]
            writer.writerow(
                [
                    r + 1,
                    i,
                    *source.location(i).values(),
                    _name(source, int(labels[i])),
                    _name(source, int(ranked.suggested[r])),
                    f"{ranked.quality[r]:.4f}",
                    ranked.method,
                    f"{share[i]:.4f}",
                    f"{agree[i]:.4f}",
                    f"{weight[i]:.4f}",
                    " ".join(map(str, nbrs)),
                    " ".join(_name(source, int(labels[j])) for j in nbrs),
                ]
            )


def _write_pairs_csv(path: Path, pairs: DuplicatePairs, source: ImageSource, top: int) -> None:
    where = list(source.location(0)) if len(source) else []
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["rank", "index_a", "index_b", *(f"{k}_a" for k in where),
                         *(f"{k}_b" for k in where), "cosine", "score", "label_a", "label_b"])
        for r in range(min(top, len(pairs.a))):
            a, b = int(pairs.a[r]), int(pairs.b[r])
            la = "" if source.labels is None else _name(source, int(source.labels[a]))
            lb = "" if source.labels is None else _name(source, int(source.labels[b]))
            writer.writerow(
                [r + 1, a, b, *source.location(a).values(), *source.location(b).values(),
                 f"{pairs.cosine[r]:.5f}", f"{pairs.score[r]:.5f}", la, lb]
            )


def _suspects_sheet(
    path: Path,
    ranked: RankedLabels,
    neighbours: StableNeighbours,
    source: ImageSource,
    count: int,
    features: str,
) -> None:
    count = min(count, len(ranked.ids))
    cols = 1 + min(SHEET_NEIGHBOURS, neighbours.ids.shape[1])
    what = "stable neighbours (Eq. 11 score)" if features == "cache" else "neighbours (cosine)"
    fig, axes = figure(count, cols, f"likely label errors: image (blue), its {what}", lines=2)
    labels = source.labels
    for r in range(count):
        i = int(ranked.ids[r])
        own = int(labels[i])
        axes[r, 0].axis("on")
        title = (
            f"#{i} label {_name(source, own)} ({ranked.quality[r]:.0%})\n"
            f"-> {_name(source, int(ranked.suggested[r]))}"
        )
        show(axes[r, 0], source.load(i), title, "blue")
        for c, j in enumerate(j for j in neighbours.ids[i][: cols - 1] if j >= 0):
            score = float(neighbours.scores[i][c])
            color = "green" if int(labels[j]) == own else "red"
            axes[r, c + 1].axis("on")
            caption = f"{_name(source, int(labels[j]))} {score:.2f}"
            show(axes[r, c + 1], source.load(int(j)), caption, color)
    save(fig, path)


def _pairs_sheet(
    path: Path, pairs: DuplicatePairs, source: ImageSource, count: int, features: str
) -> None:
    count = min(count, len(pairs.a))
    rows = -(-count // PAIRS_PER_ROW)
    what = "cached features" if features == "cache" else "exact features"
    fig, axes = figure(rows, 2 * PAIRS_PER_ROW, f"likely duplicates: pairs by cosine of {what}")
    for r in range(count):
        row, col = divmod(r, PAIRS_PER_ROW)
        a, b = int(pairs.a[r]), int(pairs.b[r])
        for k, (i, title) in enumerate(((a, f"{r + 1}. #{a}"), (b, f"#{b} {pairs.cosine[r]:.3f}"))):
            ax = axes[row, 2 * col + k]
            ax.axis("on")
            show(ax, source.load(i), title)
    save(fig, path)
