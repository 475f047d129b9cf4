"""Snapshots of every template of every stage: a pull request shows each template change.

Asset hashes (64 hex digits) are masked: they change with any byte of a handler's folder and
are reviewed through the code diff, not the template diff.
"""

from __future__ import annotations

import json
import re

import pytest
from syrupy.extensions.json import JSONSnapshotExtension

from tests.conftest import cdk_json_context

ASSET_HASH = re.compile(r"[0-9a-f]{64}")


def masked(template: dict) -> dict:
    return json.loads(ASSET_HASH.sub("<asset-hash>", json.dumps(template)))


@pytest.fixture
def snapshot_json(snapshot):
    return snapshot.use_extension(JSONSnapshotExtension)


@pytest.mark.parametrize("stage", sorted(cdk_json_context()["stages"]))
def test_templates_match_snapshots(synth, snapshot_json, stage):
    prefix = f"Rag{stage.capitalize()}-"
    names = [name for name in synth.stack_names if name.startswith(prefix)]
    assert names, f"no stacks synthesized for stage {stage}"
    for name in names:
        assert masked(synth.template(name)) == snapshot_json(name=name)


def test_masking_removes_asset_hashes_only():
    template = {"Code": {"S3Key": "0" * 64 + ".zip"}, "Name": "keep-me"}
    assert masked(template) == {"Code": {"S3Key": "<asset-hash>.zip"}, "Name": "keep-me"}
