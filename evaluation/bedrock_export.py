"""Export a run's answers for Amazon Bedrock's RAG evaluation jobs ("bring your own inference responses").

One JSON Lines prompt dataset per configuration that retrieves (modes rag and kb: a RAG
evaluation needs retrieved passages; mode prompt has none), at most 1,000 prompts per file (the
job's limit), each line one conversation turn in the documented retrieve-and-generate shape:

    {"conversationTurns": [{
        "prompt": {"content": [{"text": QUESTION}]},
        "referenceResponses": [{"content": [{"text": REFERENCE}]}],
        "output": {"text": ANSWER, "modelIdentifier": MODEL, "knowledgeBaseIdentifier": SOURCE_ID,
                   "retrievedPassages": {"retrievalResults": [
                       {"name": DOCUMENT_ID, "content": {"text": EXCERPT}, "metadata": {"source": URI}}]}}}]}

`knowledgeBaseIdentifier` names the RAG source and must equal the job's `ragSourceIdentifier`
(here the configuration, e.g. `rag-kb-finetuned`). The passages are the cited sources' excerpts
(the API returns those, not every retrieved chunk). Unanswerable questions get the reference "The
sources do not contain the answer." Beside each dataset a `job-<config>.json` holds a
CreateEvaluationJob request with placeholders (role, bucket, evaluator model) to fill in.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Sequence

from .scoring import document_id

MAX_PROMPTS = 1000
UNANSWERABLE_REFERENCE = "The sources do not contain the answer."
DEFAULT_METRICS = ("Builtin.Correctness", "Builtin.Completeness", "Builtin.Helpfulness", "Builtin.LogicalCoherence",
                   "Builtin.Faithfulness")


def source_identifier(config_key: str) -> str:
    return config_key.replace("/", "-").replace("_", "-")


def turn(row: dict[str, Any], source_id: str) -> dict[str, Any]:
    response = row["response"]
    references = row.get("references") or [UNANSWERABLE_REFERENCE]
    output: dict[str, Any] = {
        "text": response.get("answer") or "",
        "knowledgeBaseIdentifier": source_id,
        "retrievedPassages": {
            "retrievalResults": [
                {"name": document_id(c["source"]), "content": {"text": c.get("excerpt") or ""}, "metadata": {"source": c["source"]}}
                for c in response.get("citations") or []
                if isinstance(c.get("source"), str)
            ]
        },
    }
    if response.get("model"):
        output["modelIdentifier"] = str(response["model"])
    return {
        "conversationTurns": [
            {
                "prompt": {"content": [{"text": row["question"]}]},
                "referenceResponses": [{"content": [{"text": reference}]} for reference in references[:1]],
                "output": output,
            }
        ]
    }


def job_request(source_id: str, dataset_uri: str, *, job_name: str, role_arn: str = "arn:aws:iam::<ACCOUNT>:role/<BEDROCK_EVALUATION_ROLE>",
                output_uri: str = "s3://<BUCKET>/bedrock-evaluation/output/",
                evaluator_model: str = "<EVALUATOR_MODEL_ID>", metric_names: Sequence[str] = DEFAULT_METRICS) -> dict[str, Any]:
    """A CreateEvaluationJob request (the shape of the bedrock API model) for one exported dataset."""
    return {
        "jobName": job_name,
        "roleArn": role_arn,
        "applicationType": "RagEvaluation",
        "evaluationConfig": {
            "automated": {
                "datasetMetricConfigs": [
                    {"taskType": "QuestionAndAnswer", "dataset": {"name": source_id, "datasetLocation": {"s3Uri": dataset_uri}},
                     "metricNames": list(metric_names)}
                ],
                "evaluatorModelConfig": {"bedrockEvaluatorModels": [{"modelIdentifier": evaluator_model}]},
            }
        },
        "inferenceConfig": {"ragConfigs": [{"precomputedRagSourceConfig": {"retrieveAndGenerateSourceConfig": {"ragSourceIdentifier": source_id}}}]},
        "outputDataConfig": {"s3Uri": output_uri},
    }


def export(rows: Sequence[dict[str, Any]], out_dir: Path, *, run_name: str, dataset_prefix: str = "s3://<BUCKET>/bedrock-evaluation/input/") -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    by_config: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row["mode"] in ("rag", "kb") and row.get("response") and not row.get("error"):
            by_config.setdefault(row["config"], []).append(row)
    written: list[Path] = []
    for key, members in sorted(by_config.items()):
        source_id = source_identifier(key)
        for part, start in enumerate(range(0, len(members), MAX_PROMPTS)):
            suffix = f"-{part + 1}" if len(members) > MAX_PROMPTS else ""
            dataset = out_dir / f"{source_id}{suffix}.jsonl"
            dataset.write_text("".join(json.dumps(turn(row, source_id), ensure_ascii=False) + "\n"
                                       for row in members[start:start + MAX_PROMPTS]), encoding="utf-8")
            job_name = re.sub(r"[^a-z0-9-]+", "-", f"{run_name}-{source_id}{suffix}".lower()).strip("-")[:63].rstrip("-")
            request = job_request(source_id, dataset_prefix + dataset.name, job_name=job_name)
            job = out_dir / f"job-{source_id}{suffix}.json"
            job.write_text(json.dumps(request, indent=2) + "\n", encoding="utf-8")
            written += [dataset, job]
    return written
