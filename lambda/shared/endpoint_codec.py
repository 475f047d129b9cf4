"""The HTTP body format of the Inferentia2 endpoint (Hugging Face vLLM Neuronx container).

This is the runtime half of the serving contract (`stacks/serving_contract.py` is the deploy half;
the query Lambda cannot import `stacks/`, so the body format lives here, in plain Python).

What the container speaks (checked against the container's sources, not guessed):
- Its entry point turns every `SM_ON_<X>` environment variable into `optimum-cli neuron serve
  --<x>`, which starts vLLM's OpenAI-compatible server on port 8080.
- SageMaker's `/invocations` route of that server picks the handler from the JSON body's shape,
  chat completions first: a body with `messages` is an OpenAI chat-completions request (the
  model's own chat template is applied), a body with `prompt` a completions request.
- `model` may be omitted; if given it must equal the served model name (`SM_ON_SERVED_MODEL_NAME`),
  otherwise vLLM answers 404 "The model `x` does not exist.".
- The answer is an OpenAI `chat.completion` object: `choices[0].message.content` and
  `usage.prompt_tokens` / `usage.completion_tokens`. Errors are `{"object": "error", "message",
  "type", "code"}` (older vLLM) or `{"error": {"message", "type", "code"}}` (newer vLLM); SageMaker
  normally surfaces a non-2xx answer as a ModelError before this module sees it.

Qwen3 chat templates "think" by default; the request turns that off through vLLM's
`chat_template_kwargs` (templates that do not use the variable ignore it), and the decoder still
drops a leading `<think>...</think>` block should one arrive.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

CONTENT_TYPE = "application/json"
ACCEPT = "application/json"

_THINK_BLOCK = re.compile(r"^\s*<think>.*?</think>\s*", re.DOTALL)


class EndpointPayloadError(ValueError):
    """The endpoint's body is malformed or not a chat/completions answer."""


@dataclass(frozen=True)
class Generation:
    """One generated answer and, when the container reports them, its token counts."""

    text: str
    input_tokens: int | None
    output_tokens: int | None


def encode_chat_request(*, system: str, user: str, max_tokens: int, temperature: float, model: str) -> bytes:
    """The `/invocations` body for one system + user turn (OpenAI chat-completions format).

    `model` is the served model name from the serving contract; an empty string leaves it out,
    which vLLM accepts as "the one served model".
    """
    if not isinstance(user, str) or not user.strip():
        raise ValueError("user message must be a non-empty string")
    if not isinstance(system, str):
        raise ValueError("system message must be a string")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ValueError(f"max_tokens must be a positive integer, got {max_tokens!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or not 0.0 <= temperature <= 2.0:
        raise ValueError(f"temperature must be a number in 0.0..2.0, got {temperature!r}")
    messages = []
    if system.strip():
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": user})
    body: dict[str, Any] = {
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": float(temperature),
        "stream": False,
        "chat_template_kwargs": {"enable_thinking": False},
    }
    if model:
        body["model"] = model
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def decode_chat_response(body: bytes) -> Generation:
    """Reads the container's answer; raises EndpointPayloadError on anything else."""
    try:
        payload = json.loads(body)  # str, or bytes in UTF-8 (json detects the encoding)
    except (UnicodeDecodeError, json.JSONDecodeError, TypeError) as error:
        raise EndpointPayloadError(f"endpoint body is not JSON: {error}") from None
    if not isinstance(payload, dict):
        raise EndpointPayloadError(f"endpoint body is a JSON {type(payload).__name__}, expected an object")
    error_message = _error_message(payload)
    if error_message is not None:
        raise EndpointPayloadError(f"endpoint returned an error: {error_message}")
    choices = payload.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise EndpointPayloadError("endpoint body has no choices")
    choice = choices[0]
    message = choice.get("message")
    if isinstance(message, dict):
        text = message.get("content")
    else:
        text = choice.get("text")  # a completions-style answer
    if not isinstance(text, str):
        raise EndpointPayloadError("endpoint body has no text in choices[0] (message.content or text)")
    text = _THINK_BLOCK.sub("", text).strip()  # anchored at the start: one block at most
    usage = payload.get("usage") if isinstance(payload.get("usage"), dict) else {}
    return Generation(
        text=text,
        input_tokens=_count(usage.get("prompt_tokens")),
        output_tokens=_count(usage.get("completion_tokens")),
    )


def _error_message(payload: dict[str, Any]) -> str | None:
    if payload.get("object") == "error":
        return str(payload.get("message") or payload.get("type") or "unknown error")
    error = payload.get("error")
    if isinstance(error, dict):
        return str(error.get("message") or error.get("type") or "unknown error")
    if isinstance(error, str) and error:
        return error
    return None


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
