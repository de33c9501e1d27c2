"""``adasim-ray`` (the installed command; ``python launch.py`` in a checkout): the command line
of adasim-ray.

    adasim-ray pretrain [--config YAML | --preset NAME] [--data SPEC] [--epochs N]
                        [--output DIR] [--set key=value ...] [--name NAME]
                        [--resume RUN_DIR [--force]]
    adasim-ray eval (--checkpoint CKPT | --random-init BACKBONE | --raw-pixels) --data SPEC
                    [--linear-protocol probe|dino] [--json]
    adasim-ray prepare FOLDER OUT_DIR [--rows-per-shard N] [--skip-corrupt]
    adasim-ray export RUN_DIR --output DIR [--which teacher|student]
    adasim-ray check | sweep | report | audit | visualize ...   (see each one's --help)

This module only parses. The work of each sub-command is a function of a module of
``adasim_ray/commands/``, named here as ``module:function`` and imported when that command
runs: ``--help`` and a mistyped option answer without loading torch or Ray.

Every bad input ends in one line on stderr naming the problem, and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from typing import Any

from adasim_ray.commands.args import add_config_and_data, add_set_argument
from adasim_ray.data.layout import ROWS_PER_GROUP
from adasim_ray.errors import AdasimError, RunStoppedError, UserError
from adasim_ray.methods.roles import ENCODER_ROLES, EVALUATED
from adasim_ray.presets import default_config_path
from adasim_ray.resources.cluster_yaml import BOOTSTRAP_CONFIG

__all__ = ["PROG", "UserError", "build_parser", "default_config_path", "main"]

#: The installed console script (``[project.scripts]``), the name help and messages use.
PROG = "adasim-ray"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--debug", action="store_true",
                        help="print the traceback under an error's one line (anywhere on the "
                             "command line; also ADASIM_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_pretrain, _add_eval, _add_prepare, _add_export, _add_audit, _add_check,
                _add_sweep, _add_visualize):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # --debug anywhere on the line (or ADASIM_DEBUG=1): the traceback under a one-line error.
    debug = "--debug" in argv or os.environ.get("ADASIM_DEBUG", "") not in ("", "0")
    args = build_parser().parse_args([a for a in argv if a != "--debug"])
    if debug:  # seen by the Ray processes this starts (adasim_ray.train.hooks)
        os.environ["ADASIM_DEBUG"] = "1"
    module, _, function = args.handler.partition(":")
    try:
        return int(getattr(importlib.import_module(module), function)(args))
    except AdasimError as err:  # UserError, ConfigError, DataError, CheckpointError, ...
        if debug:
            traceback.print_exception(err)
        print(f"error: {err}", file=sys.stderr)
        return 3 if isinstance(err, RunStoppedError) else 2
    except KeyboardInterrupt:
        print(f"interrupted: resume with `{PROG} pretrain --resume RUN_DIR`", file=sys.stderr)
        return 130


def _add_pretrain(sub: Any) -> None:
    p = sub.add_parser("pretrain", help="pretrain with Ray Train (default: the MNIST demo)")
    add_config_and_data(p)
    p.add_argument("--epochs", type=int, help="number of epochs")
    p.add_argument("--output", default="runs", help="where run directories go (default: runs)")
    add_set_argument(p, "adasim.tau=0.3")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    p.add_argument(
        "--name", default=os.environ.get("ADASIM_RUN_NAME") or None,
        help="the run's name (also ADASIM_RUN_NAME): its directory is OUTPUT/NAME (or "
             "ray.storage_path/NAME); the run starts there, or resumes its checkpoint, or says "
             "it is finished. The same command line, run again after any failure (a "
             "scheduler's requeue), continues the run")
    p.add_argument(
        "--force",
        action="store_true",
        help="resume even if key settings differ from the checkpoint's",
    )
    p.add_argument(
        "--baselines",
        action="store_true",
        help="also print the k-NN of the random-init network and of raw pixels",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON last")
    p.set_defaults(handler="adasim_ray.commands.pretrain:cmd_pretrain")


def _add_eval(sub: Any) -> None:
    e = sub.add_parser("eval", help="k-NN, linear probe and few-shot evaluation")
    which = e.add_mutually_exclusive_group(required=True)
    which.add_argument("--checkpoint", help="a run directory or checkpoint directory")
    which.add_argument("--random-init", metavar="BACKBONE", help="a randomly initialised backbone")
    which.add_argument("--raw-pixels", action="store_true", help="flattened pixels as features")
    e.add_argument("--data", required=True, help="data set spec (train and test splits)")
    e.add_argument("--max-train", type=int,
                   help="use this many train images (a class-stratified random sample)")
    e.add_argument("--max-test", type=int,
                   help="use this many test images (a class-stratified random sample)")
    e.add_argument("--subset-seed", type=int, default=0,
                   help="seed of the --max-train / --max-test samples (default 0, as a run's "
                        "subset_seed)")
    e.add_argument("--no-linear", action="store_true", help="skip the linear evaluation")
    e.add_argument("--linear-protocol", choices=("probe", "dino"), default="probe",
                   help="probe (default): L-BFGS logistic regression on centre-crop features, "
                        "seconds on a CPU; dino: DINO's eval_linear, SGD on frozen features of "
                        "random resized crops and flips with a sweep of base lrs (what the "
                        "paper's linear numbers use; hours at ImageNet scale)")
    e.add_argument("--linear-epochs", type=int, default=100,
                   help="epochs of --linear-protocol dino (default 100, DINO's)")
    e.add_argument("--linear-lrs", default="1e-4,3e-4,1e-3,3e-3,1e-2,3e-2,0.1",
                   help="base lrs (per 256 images) that --linear-protocol dino trains side by "
                        "side, the best reported (default %(default)s)")
    e.add_argument("--linear-batch-size", type=int, default=256,
                   help="images per step of --linear-protocol dino (default 256)")
    e.add_argument("--linear-blocks", type=int,
                   help="a ViT's last blocks whose [CLS] tokens --linear-protocol dino "
                        "concatenates (default DINO's: 4 below width 768, else 1 with the "
                        "patch tokens' mean)")
    e.add_argument("--no-fewshot", action="store_true", help="skip the few-shot evaluation")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--device", help="where features, k-NN and the probe run: cuda, cuda:1, cpu "
                   "(default: cuda when there is a GPU, else cpu)")
    e.add_argument("--json", action="store_true", help="last line: one JSON object")
    e.set_defaults(handler="adasim_ray.commands.evaluate:cmd_eval")


def _add_prepare(sub: Any) -> None:
    r = sub.add_parser("prepare", help="convert an image folder to Parquet shards")
    r.add_argument("folder", help="image folder (class sub-folders or loose images; train/ and "
                   "test/ or one split)")
    r.add_argument("out_dir", help="output directory (must be empty or absent)")
    r.add_argument("--rows-per-shard", type=int, default=1000, help="images per shard file")
    r.add_argument("--rows-per-group", type=int, default=ROWS_PER_GROUP,
                   help="images per row group, the unit of a random read (default "
                        f"{ROWS_PER_GROUP}: benchmarks/parquet_access.py measures it)")
    r.add_argument("--skip-corrupt", action="store_true", help="skip unreadable images (counted)")
    r.add_argument("--labels", choices=("auto", "none"), default="auto",
                   help="auto: class sub-folders are labels, loose images unlabelled (default); "
                        "none: sub-folders are not classes, every image below is unlabelled "
                        "(as data_labels: none)")
    r.set_defaults(handler="adasim_ray.commands.prepare:cmd_prepare")


def _add_check(sub: Any) -> None:
    p = sub.add_parser(
        "check",
        help="validate a config, its data, storage and cluster resources, without training",
        description="Check a run before it starts: the config, the data set and its size N, "
        "the memory of the cache and the window per shard, the cluster's resources and the "
        "storage. Exit code 0 when all is well, 2 with one `error:` line per problem.",
    )
    add_config_and_data(p)
    add_set_argument(p, "ray.num_workers=8")
    p.add_argument(
        "--output",
        default="runs",
        help="where run directories go when ray.storage_path is unset (default: runs)",
    )
    p.add_argument(
        "--cluster",
        metavar="CLUSTER_YAML",
        help="judge the resources against this `ray up` YAML at its max_workers "
        f"(default: {BOOTSTRAP_CONFIG} when it exists, i.e. on a `ray up` head node)",
    )
    p.add_argument("--num-images", type=int, metavar="N",
                   help="plan for N training images without opening the data set (one not "
                        "reachable from here, e.g. ImageNet-21k's 14197122 in a bucket)")
    p.add_argument("--shard-budget-gb", type=float, default=16.0,
                   help="the most state one cache shard should hold; check recommends the "
                        "shard count that keeps every shard within it (default 16)")
    p.add_argument("--json", action="store_true", help="print every figure as JSON last")
    p.set_defaults(handler="adasim_ray.commands.check:run_check")


def _add_sweep(sub: Any) -> None:
    s = sub.add_parser(
        "sweep",
        help="Ray Tune sweep (grid or Optuna, optional ASHA) of pretraining runs",
        description="Ray Tune sweeps of tau, w, K (Table 4): each trial a full Ray "
        "pretraining run, the table in SWEEP_DIR/results.md.",
    )
    s.add_argument("--config", help="sweep YAML (e.g. experiments/mnist_ablation.yaml)")
    s.add_argument("--output", default="sweeps", help="where sweep directories go (sweeps)")
    s.add_argument("--max-trials", type=int, help="run at most this many trials")
    add_set_argument(s, "epochs=2", what="a field of the base pretraining config")
    s.add_argument("--resume", metavar="SWEEP_DIR", help="restore an interrupted sweep")
    s.add_argument("--log-every", type=int, default=50, help="steps between progress lines")
    s.set_defaults(handler="adasim_ray.commands.sweep:cmd_sweep")

    r = sub.add_parser("report", help="the results table of a sweep directory")
    r.add_argument("sweep_dir", metavar="SWEEP_DIR")
    r.add_argument("--json", action="store_true", help="print the summary as JSON last")
    r.set_defaults(handler="adasim_ray.commands.sweep:cmd_report")


def _add_export(sub: Any) -> None:
    p = sub.add_parser(
        "export",
        help="write a run's pretrained backbone as backbone.safetensors + config.json",
        description=(
            "Take the backbone of RUN_DIR's newest complete checkpoint and write it to DIR: "
            "backbone.safetensors (the weights) and config.json (backbone, kwargs, image_size, "
            "in_chans, mean, std, feat_dim, run_name, epoch). adasim_ray.load_backbone(DIR) or "
            "torch.hub.load(REPO, 'adasim_backbone', path=DIR, source='local') rebuilds it; "
            "for a plain timm name, timm.create_model(name, num_classes=0, pretrained=True, "
            "pretrained_cfg_overlay=dict(file=DIR/backbone.safetensors)) loads it too."
        ),
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a pretraining run directory")
    p.add_argument("--output", required=True, metavar="DIR", help="where to write the two files")
    p.add_argument("--which", choices=ENCODER_ROLES, default=EVALUATED,
                   help=f"the backbone to export: {EVALUATED} (default: the one evaluated, a "
                   "momentum encoder's EMA) or the one trained by gradient; a method with one "
                   "backbone gives it for both")
    p.set_defaults(handler="adasim_ray.commands.export:cmd_export")


def _add_audit(sub: Any) -> None:
    p = sub.add_parser(
        "audit",
        help="rank likely label errors and duplicates from a run's final window and cache",
        description=(
            "Read RUN_DIR's latest checkpoint (cache and neighbour window) and write "
            "label_suspects.csv/.png (images whose given label is likely wrong: confident "
            "learning on out-of-sample probabilities of a linear probe, or neighbour votes) and "
            "duplicates.csv/.png (pairs with near-identical cached features). Works best on a "
            "run whose features are good (long runs, a window of several epochs, K >= 5)."
        ),
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a pretraining run directory")
    p.add_argument("--top", type=int, default=50, help="rows per CSV file (default 50)")
    p.add_argument(
        "--sheet", type=int, default=16, help="cases drawn per PNG contact sheet (default 16)"
    )
    p.add_argument(
        "--features",
        choices=("auto", "cache", "model"),
        default="auto",
        help="auto (default): model up to 200,000 images, cache above; "
        "model: exact features of the un-augmented images by the final network and exact "
        "neighbours (found most on planted digits: 17/20 flipped labels and 10/10 duplicates "
        "against the cache's 2 and 0; O(N^2 d), use a GPU for ImageNet); cache: the run's "
        "final window and cache (the paper's Appendix F)",
    )
    p.add_argument(
        "--ranking",
        choices=("auto", "confident", "neighbours"),
        default="auto",
        help="of the label suspects. auto (default): confident where cleanlab is installed "
        "(pip install 'adasim-ray[audit]'), else neighbours; confident: confident learning on "
        "5-fold out-of-sample probabilities of a linear probe on the features (separates "
        "flipped labels from natural confusions: see docs/benchmarks.md, Label audit); "
        "neighbours: the share of the stable neighbours' weight voting for another label",
    )
    p.add_argument("--output", help="where to write (default: RUN_DIR/audit)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON last")
    p.set_defaults(handler="adasim_ray.commands.audit:cmd_audit")


def _add_visualize(sub: Any) -> None:
    p = sub.add_parser(
        "visualize",
        help="draw the paper's Fig. 3 curves or Fig. 1 supports from run directories",
    )
    kinds = p.add_subparsers(dest="picture", required=True, metavar="PICTURE")
    m = kinds.add_parser(
        "metrics",
        help="Fig. 3: bootstrapping ratio, NN and 2-NN top-1, k-NN over epochs, a line per run",
    )
    m.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    m.add_argument("--output", required=True, help="PNG file to write")
    m.add_argument("--title", help="figure title")
    m.set_defaults(handler="adasim_ray.commands.visualize:cmd_metrics")
    n = kinds.add_parser(
        "neighbours",
        help="Fig. 1: query images, their support and each member's sampling probability",
    )
    n.add_argument("run_dir", metavar="RUN_DIR")
    n.add_argument("--output", required=True, help="PNG file to write")
    n.add_argument("--queries", type=int, default=6,
                   help="queries drawn, those most likely to get another image (default 6)")
    n.add_argument("--ids", help="comma-separated image ids to draw instead")
    n.set_defaults(handler="adasim_ray.commands.visualize:cmd_neighbours")
