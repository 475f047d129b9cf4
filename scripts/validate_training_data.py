"""Validate fine-tuning data before uploading it: `python scripts/validate_training_data.py FILE_OR_DIR...`.

Prints `file:line: problem` for every bad record and exits 1 if there is any; the rules are those
of model_artifacts/training/data_format.py, the same module the training job validates with.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "model_artifacts" / "training"))

import data_format  # noqa: E402

if __name__ == "__main__":
    sys.exit(data_format.main())
