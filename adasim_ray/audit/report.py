"""Read a finished run's window and cache, rank suspects, write CSV files and contact sheets.

``audit_run`` is what ``launch.py audit RUN_DIR`` does: the latest complete checkpoint of the run
gives the cache shards (Z and the window, ``cache_shard_<s>.pt``), the run's ``config.yaml``
gives the data set (its labels, and the images drawn on the sheets). Outputs, in ``output``:

- ``label_suspects.csv`` / ``label_suspects.png``: images whose stable neighbours mostly carry
  another label, most suspect first (each sheet row: the image, then its neighbours; a
  neighbour's caption is green when it shares the image's label, red otherwise);
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

FEATURES = ("cache", "model")
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
    from adasim_ray.train.checkpoint import read_checkpoint

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
    from adasim_ray.train.checkpoint import read_checkpoint

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
    features: str = "cache",
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Rank label suspects (when ``source`` has labels) and duplicates; write the outputs.

    Args:
        cfg: the run's configuration (for the record in the summary).
        source: the run's training images, index for index as the run saw them.
        state: :func:`load_run_state` of the run's checkpoint.
        output: directory for the CSV files and sheets (created).
        top: rows per CSV file.
        sheet: cases drawn per contact sheet.
        features: ``"cache"`` (the run's window and cache, as in Appendix F) or ``"model"``
            (exact features of the un-augmented images, exact neighbours; same K).
        device: where ``"model"`` computes (default: a GPU if there is one).

    Returns:
        A summary: paths written and the number of cases ranked.
    """
    if features not in FEATURES:
        raise ValueError(f"features must be one of {FEATURES}, got {features!r}")
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
        "window_epochs": state.windows[0].epochs_in_window if features == "cache" else 1,
    }
    if source.labels is not None:
        suspects = label_suspects(neighbours, source.labels)
        csv_path = output / "label_suspects.csv"
        _write_suspects_csv(csv_path, suspects, neighbours, source, top)
        png_path = output / "label_suspects.png"
        _suspects_sheet(png_path, suspects, neighbours, source, sheet, features)
        summary["label_suspects"] = {
            "csv": str(csv_path),
            "png": str(png_path),
            "ranked": int(len(suspects.ids)),
            "mostly_other_label": int((suspects.share > 0.5).sum()),
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
    suspects: LabelSuspects,
    neighbours: StableNeighbours,
    source: ImageSource,
    top: int,
) -> None:
    labels = source.labels
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                "rank",
                "index",
                "label",
                "suggested",
                "share",
                "agree",
                "weight",
                "neighbours",
                "neighbour_labels",
            ]  # fmt: skip
        )
        for r in range(min(top, len(suspects.ids))):
            i = int(suspects.ids[r])
            nbrs = [int(j) for j in neighbours.ids[i] if j >= 0]
            writer.writerow(
                [
                    r + 1,
                    i,
                    _name(source, int(suspects.labels[r])),
                    _name(source, int(suspects.suggested[r])),
                    f"{suspects.share[r]:.4f}",
                    f"{suspects.agree[r]:.4f}",
                    f"{suspects.weight[r]:.4f}",
                    " ".join(map(str, nbrs)),
                    " ".join(_name(source, int(labels[j])) for j in nbrs),
                ]
            )


def _write_pairs_csv(path: Path, pairs: DuplicatePairs, source: ImageSource, top: int) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["rank", "index_a", "index_b", "cosine", "score", "label_a", "label_b"])
        for r in range(min(top, len(pairs.a))):
            a, b = int(pairs.a[r]), int(pairs.b[r])
            la = "" if source.labels is None else _name(source, int(source.labels[a]))
            lb = "" if source.labels is None else _name(source, int(source.labels[b]))
            writer.writerow(
                [r + 1, a, b, f"{pairs.cosine[r]:.5f}", f"{pairs.score[r]:.5f}", la, lb]
            )


def _show(ax: Any, image: np.ndarray, title: str, color: str = "black") -> None:
    grey = image.shape[-1] == 1 or bool(
        (image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all()
    )
    if grey:
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(image, interpolation="nearest")
    ax.set_title(title, fontsize=7, color=color)
    ax.set_xticks([])
    ax.set_yticks([])


def _figure(rows: int, cols: int, title: str, lines: int = 1) -> tuple[Any, np.ndarray]:
    """A grid of image cells of ~1 inch, with room for ``lines`` caption lines and a title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = max(rows, 1)
    cell = 1.0  # inches
    caption = 0.05 + 0.15 * lines
    head = 0.3 + caption
    width, height = (cell + 0.12) * cols, (cell + caption) * rows + head
    fig, axes = plt.subplots(rows, cols, figsize=(width, height), squeeze=False)
    fig.subplots_adjust(
        left=0.01, right=0.99, bottom=0.01, top=1 - head / height, wspace=0.12,
        hspace=caption / cell,
    )  # fmt: skip
    fig.suptitle(title, fontsize=9)
    for ax in axes.flat:
        ax.axis("off")
    return fig, axes


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110)
    plt.close(fig)


def _suspects_sheet(
    path: Path,
    suspects: LabelSuspects,
    neighbours: StableNeighbours,
    source: ImageSource,
    count: int,
    features: str,
) -> None:
    count = min(count, len(suspects.ids))
    cols = 1 + min(SHEET_NEIGHBOURS, neighbours.ids.shape[1])
    what = "stable neighbours (Eq. 11 score)" if features == "cache" else "neighbours (cosine)"
    fig, axes = _figure(count, cols, f"likely label errors: image (blue), its {what}", lines=2)
    labels = source.labels
    for r in range(count):
        i = int(suspects.ids[r])
        own = int(labels[i])
        axes[r, 0].axis("on")
        title = (
            f"#{i} label {_name(source, own)}\n"
            f"-> {_name(source, int(suspects.suggested[r]))} ({suspects.share[r]:.0%})"
        )
        _show(axes[r, 0], source.load(i), title, "blue")
        for c, j in enumerate(j for j in neighbours.ids[i][: cols - 1] if j >= 0):
            score = float(neighbours.scores[i][c])
            color = "green" if int(labels[j]) == own else "red"
            axes[r, c + 1].axis("on")
            caption = f"{_name(source, int(labels[j]))} {score:.2f}"
            _show(axes[r, c + 1], source.load(int(j)), caption, color)
    _save(fig, path)


def _pairs_sheet(
    path: Path, pairs: DuplicatePairs, source: ImageSource, count: int, features: str
) -> None:
    count = min(count, len(pairs.a))
    rows = -(-count // PAIRS_PER_ROW)
    what = "cached features" if features == "cache" else "exact features"
    fig, axes = _figure(rows, 2 * PAIRS_PER_ROW, f"likely duplicates: pairs by cosine of {what}")
    for r in range(count):
        row, col = divmod(r, PAIRS_PER_ROW)
        a, b = int(pairs.a[r]), int(pairs.b[r])
        for k, (i, title) in enumerate(((a, f"{r + 1}. #{a}"), (b, f"#{b} {pairs.cosine[r]:.3f}"))):
            ax = axes[row, 2 * col + k]
            ax.axis("on")
            _show(ax, source.load(i), title)
    _save(fig, path)
