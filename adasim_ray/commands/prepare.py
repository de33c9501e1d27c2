"""``adasim-ray prepare``: an image folder packed into Parquet shards."""

from __future__ import annotations

import argparse
import json

from adasim_ray.data import convert_folder_to_parquet


def cmd_prepare(args: argparse.Namespace) -> int:
    summary = convert_folder_to_parquet(
        args.folder,
        args.out_dir,
        rows_per_shard=args.rows_per_shard,
        rows_per_group=args.rows_per_group,
        skip_corrupt=args.skip_corrupt,
        labels=args.labels != "none",
    )
    print(json.dumps(summary))
    return 0
