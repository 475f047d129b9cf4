"""Generators for modes rag and prompt: a variant of the Inferentia2 endpoint, or Bedrock's Converse.

Both take a `Prompt` and return the serving contract's `Generation` (text + token counts).
"""

from __future__ import annotations

from shared.endpoint_codec import CONTENT_TYPE, EndpointPayloadError, Generation, decode_chat_response, encode_chat_request

from .prompts import Prompt


def generate_endpoint(client, *, endpoint_name: str, variant: str, served_model: str, prompt: Prompt, max_tokens: int, temperature: float) -> Generation:
    """InvokeEndpoint on one production variant (vLLM Neuronx container, chat-completions body)."""
    response = client.invoke_endpoint(
        EndpointName=endpoint_name,
        TargetVariant=variant,
        ContentType=CONTENT_TYPE,
        Accept=CONTENT_TYPE,
        Body=encode_chat_request(system=prompt.system, user=prompt.user, max_tokens=max_tokens, temperature=temperature, model=served_model),
    )
    return decode_chat_response(response["Body"].read())


def generate_bedrock(client, *, model_id: str, prompt: Prompt, max_tokens: int, temperature: float) -> Generation:
    """Converse with a Bedrock model (a model id, inference profile id or ARN)."""
    response = client.converse(
        modelId=model_id,
        system=[{"text": prompt.system}],
        messages=[{"role": "user", "content": [{"text": prompt.user}]}],
        inferenceConfig={"maxTokens": max_tokens, "temperature": temperature},
    )
    content = ((response.get("output") or {}).get("message") or {}).get("content") or []
    text = "".join(block["text"] for block in content if isinstance(block, dict) and isinstance(block.get("text"), str)).strip()
    if not text:
        # e.g. stopReason content_filtered / guardrail_intervened with no text: not a usable answer
        raise EndpointPayloadError(f"Converse returned no text (stopReason={response.get('stopReason')!r})")
    usage = response.get("usage") or {}
    return Generation(text=text, input_tokens=usage.get("inputTokens"), output_tokens=usage.get("outputTokens"))
