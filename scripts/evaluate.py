#!/usr/bin/env python3
"""Evaluate the platform: run an eval set against a deployed stage or the local server, report, compare.

    python scripts/evaluate.py run --url http://127.0.0.1:8765
    python scripts/evaluate.py run --stage dev --load-corpus
    python scripts/evaluate.py compare build/eval/BASE build/eval/NEW --metric f1 --max-drop 0.02

`python scripts/evaluate.py --help` lists the commands; the project README's evaluation section
explains the metrics and the report. The code is the `evaluation` package.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evaluation.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
