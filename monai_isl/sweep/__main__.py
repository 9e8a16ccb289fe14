"""``python -m monai_isl.sweep RUN.json``: one sweep run, in the process the sweep started for it."""

from __future__ import annotations

import sys

from .worker import main

if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m monai_isl.sweep RUN.json (one run of a sweep; start a sweep with monai_isl sweep)")
    main(sys.argv[1])
