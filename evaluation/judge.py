"""Optional LLM-as-judge (off by default): faithfulness and correctness from a Bedrock model.

The judge must come from another model family than every generator it judges (a model grading
its own family's answers is biased towards them): `check_family` refuses e.g. an Amazon Nova
judge for answers of Amazon Nova. Scores are 0..1, asked through Bedrock's Converse API with
temperature 0, and parsed from the first JSON object of the reply. They are a model's opinion and
are labelled as such in every report.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable

REGION_PREFIXES = ("us-gov.", "us.", "eu.", "apac.", "jp.", "au.", "ca.", "global.")
SYSTEM = (
    "You grade answers of a question-answering system. Reply with one JSON object and nothing else: "
    '{"faithfulness": <0..1>, "correctness": <0..1>}. faithfulness: the share of the answer\'s claims that the '
    "excerpts support (1 when the answer makes no claim, e.g. says it does not know). correctness: how well the "
    "answer agrees with the reference answers (when there is no reference, the question is unanswerable and "
    "correctness is 1 only if the answer says it does not know)."
)
_JSON = re.compile(r"\{[^{}]*\}")


class JudgeError(Exception):
    """A judge that cannot be used: one line for people."""


def family(model: str) -> str | None:
    """The provider family of a model id ('amazon', 'anthropic', 'meta', ...); None for non-Bedrock models."""
    if not model or model.startswith("local:"):
        return None
    lowered = model.lower()
    if lowered.startswith("sagemaker:"):
        return "qwen" if "qwen" in lowered else "llama" if "llama" in lowered else None
    if lowered.startswith("arn:"):
        lowered = lowered.rsplit("/", 1)[-1]
    for prefix in REGION_PREFIXES:
        if lowered.startswith(prefix):
            lowered = lowered[len(prefix):]
            break
    provider = lowered.split(".", 1)[0]
    return {"meta": "llama"}.get(provider, provider)


def check_family(judge_model: str, generator_models: Iterable[str]) -> None:
    judge_family = family(judge_model)
    if judge_family is None:
        raise JudgeError(f"--judge {judge_model!r}: give a Bedrock model id such as anthropic.claude-3-haiku-20240307-v1:0")
    for model in generator_models:
        if family(model) == judge_family:
            raise JudgeError(f"--judge {judge_model!r} is of the {judge_family} family, like the generator {model!r}: "
                             "pick a judge from another family")


def prompt(question: str, references: list[str], answer: str, excerpts: list[str]) -> str:
    refs = "\n".join(f"- {r}" for r in references) or "(none: the question is unanswerable)"
    sources = "\n".join(f"[{i}] {e}" for i, e in enumerate(excerpts, start=1)) or "(no excerpts)"
    return f"Question: {question}\n\nReference answers:\n{refs}\n\nExcerpts the answer cites:\n{sources}\n\nAnswer to grade:\n{answer}"


def parse(text: str) -> dict[str, float]:
    for match in _JSON.finditer(text or ""):
        try:
            data = json.loads(match.group(0))
        except ValueError:
            continue
        scores = {}
        for key in ("faithfulness", "correctness"):
            value = data.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                scores[key] = min(1.0, max(0.0, float(value)))
        if len(scores) == 2:
            return scores
    raise ValueError("the judge's reply has no JSON object with faithfulness and correctness")


class Judge:
    def __init__(self, client, model_id: str, *, max_tokens: int = 200):
        self.client, self.model_id, self.max_tokens = client, model_id, max_tokens

    def grade(self, row: dict[str, Any]) -> dict[str, Any]:
        response = row.get("response") or {}
        excerpts = [c.get("excerpt") or "" for c in response.get("citations") or []]
        reply = self.client.converse(
            modelId=self.model_id,
            system=[{"text": SYSTEM}],
            messages=[{"role": "user", "content": [{"text": prompt(row["question"], row.get("references") or [], response.get("answer") or "", excerpts)}]}],
            inferenceConfig={"maxTokens": self.max_tokens, "temperature": 0.0},
        )
        blocks = ((reply.get("output") or {}).get("message") or {}).get("content") or []
        text = "".join(block.get("text", "") for block in blocks)
        scores = parse(text)
        usage = reply.get("usage") or {}
        return {**scores, "model": self.model_id, "input_tokens": usage.get("inputTokens"), "output_tokens": usage.get("outputTokens")}
