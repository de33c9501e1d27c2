#!/usr/bin/env python
"""adasim-ray command line: `python launch.py pretrain|eval|prepare ...` (see --help)."""

import sys

from adasim_ray.cli import main

if __name__ == "__main__":
    sys.exit(main())
