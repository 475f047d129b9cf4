"""Known compliance findings awaiting the lead's triage (see README "Compliance oracles").

Each entry is a finding that other branches' stacks still have, triaged (fix or acknowledge, with
the reason and file) in the triage document the lead applies after merging. The oracle tests
fail on any finding NOT listed here, so nothing new slips in while the list shrinks; an entry
that no longer occurs fails too (remove it). When the list is empty, delete this file and
the xfail marks on the two zero-count tests.
"""

from __future__ import annotations

import json
from pathlib import Path

BASELINE = Path(__file__).with_name("compliance_baseline.json")
TRIAGE = "the compliance triage (plan/compliance-triage.md, applied by the lead after merging)"


def load() -> dict[str, list[list[str]]]:
    return json.loads(BASELINE.read_text()) if BASELINE.exists() else {"checkov": [], "nist": []}
