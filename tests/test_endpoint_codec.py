"""The endpoint body format (lambda/shared/endpoint_codec.py) against sample container payloads.

The samples have the shape vLLM's OpenAI server (inside the Hugging Face vLLM Neuronx container)
returns from SageMaker's /invocations route.
"""

import json

import pytest

from shared.endpoint_codec import (
    EndpointPayloadError,
    Generation,
    decode_chat_response,
    encode_chat_request,
)

# A chat.completion answer as vLLM 0.11 serialises it (fields it always sends included).
CHAT_COMPLETION = {
    "id": "chatcmpl-5c1f0c3e9b8a4b7f",
    "object": "chat.completion",
    "created": 1760000000,
    "model": "rag-generator",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Paris is the capital [1].", "refusal": None,
                        "annotations": None, "audio": None, "function_call": None, "tool_calls": [],
                        "reasoning_content": None},
            "logprobs": None,
            "finish_reason": "stop",
            "stop_reason": None,
        }
    ],
    "service_tier": None,
    "system_fingerprint": None,
    "usage": {"prompt_tokens": 412, "total_tokens": 421, "completion_tokens": 9, "prompt_tokens_details": None},
    "prompt_logprobs": None,
    "kv_transfer_params": None,
}


def _body(obj) -> bytes:
    return json.dumps(obj).encode()


def test_request_is_an_openai_chat_completions_body():
    body = json.loads(encode_chat_request(system="Answer from the sources.", user="Capital of France?",
                                          max_tokens=256, temperature=0.2, model="rag-generator"))
    assert body["messages"] == [
        {"role": "system", "content": "Answer from the sources."},
        {"role": "user", "content": "Capital of France?"},
    ]
    assert body["max_tokens"] == 256
    assert body["temperature"] == 0.2
    assert body["model"] == "rag-generator"
    assert body["stream"] is False
    # Qwen3 templates think unless told not to; other templates ignore the variable.
    assert body["chat_template_kwargs"] == {"enable_thinking": False}
    # vLLM routes /invocations by shape: `prompt` would make it a completions request.
    assert "prompt" not in body and "inputs" not in body


def test_request_omits_empty_model_and_empty_system():
    body = json.loads(encode_chat_request(system="  ", user="hi", max_tokens=1, temperature=0, model=""))
    assert "model" not in body
    assert body["messages"] == [{"role": "user", "content": "hi"}]
    assert body["temperature"] == 0.0


def test_request_keeps_unicode_readable_and_is_utf8():
    raw = encode_chat_request(system="", user="Qu'est-ce que l'été ? 東京", max_tokens=5, temperature=0.5, model="m")
    assert "été ? 東京".encode() in raw


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"user": ""}, "user message"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"temperature": 2.5}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
    ],
)
def test_request_rejects_bad_arguments(kwargs, fragment):
    args = {"system": "s", "user": "u", "max_tokens": 10, "temperature": 0.1, "model": "m"} | kwargs
    with pytest.raises(ValueError, match=fragment):
        encode_chat_request(**args)


def test_decodes_chat_completion_with_usage():
    assert decode_chat_response(_body(CHAT_COMPLETION)) == Generation(
        text="Paris is the capital [1].", input_tokens=412, output_tokens=9)


def test_decodes_without_usage_and_strips_a_think_block():
    answer = json.loads(json.dumps(CHAT_COMPLETION))
    answer["choices"][0]["message"]["content"] = "<think>\nThe sources say Paris.\n</think>\n\nParis."
    del answer["usage"]
    assert decode_chat_response(_body(answer)) == Generation(text="Paris.", input_tokens=None, output_tokens=None)


def test_decodes_a_completions_style_answer():
    answer = {"object": "text_completion", "choices": [{"index": 0, "text": " Paris.", "finish_reason": "length"}],
              "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}
    assert decode_chat_response(_body(answer)) == Generation(text="Paris.", input_tokens=3, output_tokens=2)


@pytest.mark.parametrize(
    "body, fragment",
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (_body([{"generated_text": "TGI format"}]), "JSON list"),
        (_body({"object": "error", "message": "The model `x` does not exist.", "type": "NotFoundError", "code": 404}),
         "does not exist"),
        (_body({"error": {"message": "max_tokens too large", "type": "BadRequestError", "code": 400}}), "max_tokens too large"),
        (_body({"choices": []}), "no choices"),
        (_body({"choices": [{"message": {"role": "assistant", "content": None, "tool_calls": [{}]}}]}), "no text"),
    ],
)
def test_decode_rejects_what_is_not_an_answer(body, fragment):
    with pytest.raises(EndpointPayloadError, match=fragment):
        decode_chat_response(body)


def test_bad_counts_become_none():
    answer = json.loads(json.dumps(CHAT_COMPLETION))
    answer["usage"] = {"prompt_tokens": "412", "completion_tokens": True}
    generation = decode_chat_response(_body(answer))
    assert (generation.input_tokens, generation.output_tokens) == (None, None)


def test_round_trip_with_a_fake_container():
    """A tiny stand-in for vLLM's /invocations dispatch: chat bodies need `messages`."""
    request = json.loads(encode_chat_request(system="s", user="q", max_tokens=8, temperature=0.0, model="rag-generator"))
    assert isinstance(request["messages"], list) and request["model"] == "rag-generator"
    reply = {"object": "chat.completion", "model": request["model"],
             "choices": [{"index": 0, "message": {"role": "assistant", "content": "a"}, "finish_reason": "stop"}],
             "usage": {"prompt_tokens": 7, "completion_tokens": 1, "total_tokens": 8}}
    assert decode_chat_response(_body(reply)).text == "a"
