"""Random access by index, as the partner fetch reads: Parquet shards against the image folder
they were made from and against the old in-memory table, side by side in one run.

A data set of ImageNet-like JPEGs (photo-like content, about 500 x 375, quality 90; 64
distinct photos written under ``--images`` file names) is written as a class-sorted folder
and converted by ``launch.py prepare``'s converter (row groups of ``ROWS_PER_GROUP``
images). Each reader then runs in its own process pinned to one core, and fetches random
batches of 64 indices: encoded bytes only ("decode excluded"), then decoded to RGB
("decode included"). Readers:

* ``parquet``: :class:`~adasim_ray.data.ParquetSource` on ``prepare``'s shards: one byte
  range read per image, as the index file lists them;
* ``parquet_row_groups``: the same shards read a row group at a time (the path of shards
  from other tools) through the row-group cache set to ``--cache-mb`` (default 16 MiB: a
  small fraction of the data set, as at ImageNet scale);
* ``folder``: :class:`~adasim_ray.data.FolderSource` on the same images;
* ``in_memory``: the previous Parquet reader: every shard read into one Arrow table per
  process, then a slice per image.

The files are in the page cache (they were just written), so the figures are the readers'
own CPU cost, not a disk's. ``--rows-per-group 1,8,64`` also measures Parquet copies with
other group sizes, read a row group at a time (the measurement behind the default).

    python benchmarks/parquet_access.py [--images 20000] [--seconds 4] [--rounds 3] [--quick]

The last line is one JSON object: ``parquet_images_per_s``, ``folder_images_per_s``,
``in_memory_images_per_s`` (decode included, per core), the same ``..._bytes_per_s``
(decode excluded), ``peak_rss_mb`` (of the Parquet reading process), ``open_s`` per
reader, ``parquet_row_groups_images_per_s``, ``by_rows_per_group`` (the row-group path),
each the median of ``--rounds`` alternating rounds, and ``target_met`` (Parquet at least the
folder's speed, decode included and excluded, and its peak RSS under 1 GB).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
BATCH = 64
RSS_LIMIT_MB = 1024


def write_data_set(root: Path, images: int, classes: int = 100) -> Path:
    """``root/train/cNNN/*.jpg`` (and ``test/``): ``images`` files over ``classes`` classes,
    class-sorted, cycling 64 photo-like JPEGs."""
    from pipeline import photo_like

    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    photos = []
    for _ in range(64):
        width, height = int(rng.integers(440, 501)), int(rng.integers(330, 376))
        path = root / "photo.jpg"
        photo_like(rng, width, height).save(path, quality=90)
        photos.append(path.read_bytes())
    path.unlink()
    for split, count in (("train", images), ("test", classes)):
        for k in range(count):
            target = root / split / f"c{k * classes // count:03d}" / f"{k:06d}.jpg"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(photos[k % len(photos)])
    return root


def read_in_process(kind: str, path: str, seconds: float, cache_mb: int) -> dict:
    """One reader's figures, in this process (pinned to one core by the caller)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from adasim_ray.data.decode import decode_image

    start = time.perf_counter()
    if kind == "in_memory":
        shards = sorted(Path(path, "train").glob("*.parquet"))
        table = pa.concat_tables(pq.read_table(s, columns=["index", "image"]) for s in shards)
        table = table.sort_by("index").combine_chunks()
        images = table.column("image").chunk(0)
        n = len(images)

        def fetch(ids: np.ndarray) -> list[bytes]:
            return [images[int(i)].as_py() for i in ids]
    else:
        from adasim_ray.data import FolderSource, ParquetSource

        source = (FolderSource(path) if kind == "folder" else
                  ParquetSource(path, cache_bytes=cache_mb << 20,
                                byte_ranges=kind == "parquet"))
        n = len(source)

        def fetch(ids: np.ndarray) -> list[bytes]:
            data = source.encoded_many(ids)
            return [d if isinstance(d, bytes) else Path(d).read_bytes() for d in data]
    open_s = time.perf_counter() - start
    rng = np.random.default_rng(1)

    def rate(decode: bool) -> float:
        count, begin = 0, time.perf_counter()
        while time.perf_counter() - begin < seconds:
            for data in fetch(rng.choice(n, BATCH, replace=False)):
                if decode:
                    decode_image(data, "bench")
                count += 1
        return count / (time.perf_counter() - begin)

    bytes_per_s = rate(decode=False)
    images_per_s = rate(decode=True)
    return {"kind": kind, "images": n, "open_s": round(open_s, 3),
            "images_per_s": round(images_per_s, 1), "bytes_per_s": round(bytes_per_s, 1),
            "peak_rss_mb": round(peak_rss_mb(), 1)}


def peak_rss_mb() -> float:
    """This process's peak resident memory: VmHWM (``ru_maxrss`` would also count the
    parent's pages at the fork that started it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_reader(kind: str, path: Path, seconds: float, cache_mb: int) -> dict:
    """:func:`read_in_process` in a fresh process on one core (``taskset``-like affinity)."""
    out = subprocess.run(
        [sys.executable, __file__, "--reader", kind, "--path", str(path),
         "--seconds", str(seconds), "--cache-mb", str(cache_mb)],
        check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def median_of(results: list[dict]) -> dict:
    """Per key the median over rounds (peak memory: the largest)."""
    keys = ("open_s", "images_per_s", "bytes_per_s")
    out = {k: round(statistics.median(r[k] for r in results), 3) for k in keys}
    out["peak_rss_mb"] = max(r["peak_rss_mb"] for r in results)
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--seconds", type=float, default=4.0, help="per reader and pass")
    parser.add_argument("--cache-mb", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows-per-group", default="", help="also measure these, e.g. 1,8,64")
    parser.add_argument("--quick", action="store_true", help="a seconds-long smoke run")
    parser.add_argument("--reader", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.reader:  # the child process of run_reader
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
        result = read_in_process(args.reader, args.path, args.seconds, args.cache_mb)
        print(json.dumps(result))
        return result
    if args.quick:
        args.images, args.seconds, args.rounds = 120, 0.2, 1

    from adasim_ray.data import convert_folder_to_parquet
    from adasim_ray.data.layout import ROWS_PER_GROUP

    groups = sorted({ROWS_PER_GROUP, *(int(g) for g in args.rows_per_group.split(",") if g)})
    with tempfile.TemporaryDirectory(prefix="adasim-parquet-bench-") as tmp:
        print(f"writing {args.images} JPEGs ...", file=sys.stderr, flush=True)
        folder = write_data_set(Path(tmp, "folder"), args.images)
        copies = {}
        for rows in groups:
            copies[rows] = Path(tmp, f"pq{rows}")
            convert_folder_to_parquet(folder, copies[rows], rows_per_group=rows)
        size_mb = sum(f.stat().st_size for f in Path(folder, "train").rglob("*.jpg")) / 2**20
        print(f"{args.images} images, {size_mb:.0f} MiB; row-group cache {args.cache_mb} MiB",
              file=sys.stderr, flush=True)
        readers = [("folder", folder), ("parquet", copies[ROWS_PER_GROUP]),
                   ("parquet_row_groups", copies[ROWS_PER_GROUP]),
                   ("in_memory", copies[ROWS_PER_GROUP])]
        readers += [(f"parquet_row_groups/{rows}", copies[rows]) for rows in groups
                    if rows != ROWS_PER_GROUP]
        runs: dict[str, list[dict]] = {name: [] for name, _ in readers}
        for round_ in range(args.rounds):  # alternating rounds; each figure is a median
            for name, path in readers:
                result = run_reader(name.split("/")[0], path, args.seconds, args.cache_mb)
                runs[name].append(result)
                print(f"round {round_ + 1} {name}: {json.dumps(result)}", file=sys.stderr,
                      flush=True)
        results = {name: median_of(rows) for name, rows in runs.items()}
        by_group = {str(rows): results["parquet_row_groups" if rows == ROWS_PER_GROUP
                                        else f"parquet_row_groups/{rows}"] for rows in groups}
    summary = {
        "images": args.images, "data_mb": round(size_mb, 1), "cache_mb": args.cache_mb,
        "rows_per_group": ROWS_PER_GROUP,
        "parquet_images_per_s": results["parquet"]["images_per_s"],
        "folder_images_per_s": results["folder"]["images_per_s"],
        "in_memory_images_per_s": results["in_memory"]["images_per_s"],
        "parquet_row_groups_images_per_s": results["parquet_row_groups"]["images_per_s"],
        "parquet_bytes_per_s": results["parquet"]["bytes_per_s"],
        "folder_bytes_per_s": results["folder"]["bytes_per_s"],
        "in_memory_bytes_per_s": results["in_memory"]["bytes_per_s"],
        "parquet_row_groups_bytes_per_s": results["parquet_row_groups"]["bytes_per_s"],
        "peak_rss_mb": results["parquet"]["peak_rss_mb"],
        "in_memory_peak_rss_mb": results["in_memory"]["peak_rss_mb"],
        "folder_peak_rss_mb": results["folder"]["peak_rss_mb"],
        "open_s": {k: r["open_s"] for k, r in results.items()},
        "by_rows_per_group": {rows: {k: r[k] for k in ("images_per_s", "bytes_per_s",
                                                         "peak_rss_mb")}
                              for rows, r in by_group.items()},
    }
    summary["target_met"] = bool(
        summary["parquet_images_per_s"] >= summary["folder_images_per_s"]
        and summary["parquet_bytes_per_s"] >= summary["folder_bytes_per_s"]
        and summary["peak_rss_mb"] < RSS_LIMIT_MB)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
