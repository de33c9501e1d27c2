"""The benchmarks run (smoke test at a small N); their figures are not asserted here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_cache_query_quick_prints_the_json_keys():
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "cache_query.py"), "--quick"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        timeout=600,
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    for key in (
        "query_s",
        "faiss_s",
        "ratio_vs_faiss",
        "matmul_fraction",
        "plan_s",
        "plan_peak_ratio",
        "bytes_per_image",
    ):
        assert key in result and result[key] > 0, key
    assert result["sharded_equals_whole"] is True
    assert result["ids_agree_with_faiss"] > 0.99
