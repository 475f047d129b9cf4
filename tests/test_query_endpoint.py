"""The endpoint generators (base, finetuned): availability from one cached DescribeEndpoint plus
the power parameter, a 503 with a how-to for each way of not being available, TargetVariant,
and the cache's TTL at its boundary. Every AWS call goes through botocore's Stubber."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from query import aws_backend
from query.aws_backend import RETRY_ABSENT_S, RETRY_CREATING_S, RETRY_UNKNOWN_S
from tests.test_query_helpers import (  # noqa: F401  (wired is a fixture)
    ENDPOINT,
    call,
    client_error,
    describe_params,
    described,
    endpoint_response,
    make_clients,
    not_found,
    power,
    settings,
    wired,
)

Q = "How do keys rotate?"


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def _generators(clock: Clock, **env):
    s = settings(**env)
    clients, stubs = make_clients(s)
    backend = aws_backend.build(s, clients)
    for generator in backend.generators.values():
        if isinstance(generator, aws_backend.EndpointGenerator):
            generator.state.clock = clock
    return backend.generators, stubs


@pytest.mark.parametrize(
    "answer, role, available, version, reason, retry",
    [
        (described(), "finetuned", True, "7", None, None),
        (described(), "base", True, "3", None, None),
        (described(variants=("finetuned",), config=f"{ENDPOINT}-b0-f7-0123abcd"), "base", False, None, "has no model on stage 'dev' yet: compile the base model", RETRY_ABSENT_S),
        (described(variants=("base",), config=f"{ENDPOINT}-b3-f0-0123abcd"), "finetuned", False, None,
         "has no model on stage 'dev' yet: start a fine-tuning run with scripts/start_training.py --stage dev", RETRY_ABSENT_S),
        (described(status="Updating"), "finetuned", True, "7", None, None),  # the current fleet answers during an update
        (described(status="SystemUpdating"), "finetuned", True, "7", None, None),
        (described(status="RollingBack"), "finetuned", True, "7", None, None),
        (described(status="UpdateRollbackFailed"), "finetuned", True, "7", None, None),
        (described(status="Updating", variants=("finetuned",), pending=("base", "finetuned")), "base", False, None, "is being deployed", RETRY_CREATING_S),
        (described(status="Creating", variants=()), "finetuned", False, None, "is being deployed on endpoint 'ragdev-generator' (status Creating)", RETRY_CREATING_S),
        (described(status="Failed", variants=()), "finetuned", False, None, "is Failed: see its FailureReason", RETRY_CREATING_S),
        (described(status="OutOfService"), "finetuned", False, None, "is OutOfService", RETRY_CREATING_S),
        (described(config="EndpointConfig-legacy"), "finetuned", True, None, None, None),  # a name without versions: no version, still serves
    ],
)
def test_status_from_describe_endpoint(answer, role, available, version, reason, retry):
    generators, stubs = _generators(Clock())
    stubs.control.add_response("describe_endpoint", answer, describe_params())
    with stubs.control, stubs.ssm:
        status = generators[role].status()
    stubs.verify()  # exactly one DescribeEndpoint, no power reading while the endpoint exists
    assert (status.available, status.version) == (available, version)
    assert status.model == f"sagemaker:{ENDPOINT}/{role}" and status.context_tokens == 4096
    assert (reason is None and status.reason is None) or reason in status.reason
    assert status.retry_after_s == retry


@pytest.mark.parametrize(
    "value, fragment, retry",
    [
        ("off", "is switched off on stage 'dev' (its endpoint is off to save cost): switch it on with scripts/endpoint_power.py --stage dev on", RETRY_ABSENT_S),
        ("on", "has no model on stage 'dev' yet", RETRY_ABSENT_S),  # on, yet no endpoint: neither role has a model
        ("sideways", "could not be read (InvalidPowerValue)", RETRY_UNKNOWN_S),
    ],
)
def test_an_absent_endpoint_is_explained_by_the_power_parameter(value, fragment, retry):
    generators, stubs = _generators(Clock())
    not_found(stubs.control)
    power(stubs.ssm, value)
    with stubs.control, stubs.ssm:
        status = generators["finetuned"].status()
        again = generators["base"].status()  # the same reading serves both roles
    stubs.verify()
    assert not status.available and fragment in status.reason and status.retry_after_s == retry
    assert not again.available


def test_a_missing_power_parameter_says_the_stage_is_not_deployed():
    generators, stubs = _generators(Clock())
    not_found(stubs.control)
    stubs.ssm.add_client_error("get_parameter", service_error_code="ParameterNotFound", http_status_code=400)
    with stubs.control, stubs.ssm:
        status = generators["finetuned"].status()
    assert "has no serving record yet (SSM parameter /rag/dev/serving/endpoint is missing): deploy the stage (make deploy STAGE=dev)" in status.reason


def test_an_endpoint_being_deleted_reads_the_power():
    generators, stubs = _generators(Clock())
    stubs.control.add_response("describe_endpoint", described(status="Deleting"), describe_params())
    power(stubs.ssm, "off")
    with stubs.control, stubs.ssm:
        assert "switched off" in generators["finetuned"].status().reason
    generators, stubs = _generators(Clock())
    stubs.control.add_response("describe_endpoint", described(status="Deleting"), describe_params())
    power(stubs.ssm, "on")
    with stubs.control, stubs.ssm:
        status = generators["finetuned"].status()
    assert "is being replaced" in status.reason and status.retry_after_s == RETRY_CREATING_S


def test_config_switches_come_before_any_aws_call():
    generators, stubs = _generators(Clock(), SERVE_BASE="false")
    with stubs.control, stubs.ssm:  # nothing queued: a call would fail
        status = generators["base"].status()
    assert "inference.serve_base is false" in status.reason and status.retry_after_s == RETRY_ABSENT_S
    s = settings(DEFAULT_GENERATOR="bedrock", ENDPOINT_NAME="", ENDPOINT_POWER_PARAMETER="")
    clients, _ = make_clients(s)
    status = aws_backend.build(s, clients).generators["finetuned"].status()
    assert not status.available and "inference.enabled is false" in status.reason


def test_the_state_is_read_once_per_ttl_and_again_at_exactly_the_ttl():
    clock = Clock()
    generators, stubs = _generators(clock)
    stubs.control.add_response("describe_endpoint", described(), describe_params())
    stubs.control.add_response("describe_endpoint", described(variants=("base",)), describe_params())
    with stubs.control:
        assert generators["finetuned"].status().available
        clock.now += 29.999  # the contract's 30 s, written out: a wrong STATE_TTL_S fails here
        assert generators["finetuned"].status().available and generators["base"].status().available  # cached: no call
        clock.now += 0.001  # exactly 30 s: read again
        assert not generators["finetuned"].status().available
    stubs.verify()


def test_a_failed_reading_is_retried_after_the_error_ttl_and_says_so():
    clock = Clock()
    generators, stubs = _generators(clock)
    client_error(stubs.control, "describe_endpoint", "ThrottlingException", 400)
    stubs.control.add_response("describe_endpoint", described(), describe_params())
    with stubs.control:
        status = generators["finetuned"].status()
        assert not status.available and "could not be read (ThrottlingException)" in status.reason and status.retry_after_s == RETRY_UNKNOWN_S
        clock.now += 4.999
        assert not generators["finetuned"].status().available  # still the cached failure
        clock.now += 0.001  # exactly 5 s
        assert generators["finetuned"].status().available
    stubs.verify()


def test_a_named_generator_that_is_not_available_is_503_before_any_paid_call(wired):
    stubs = wired(endpoint=described(variants=("finetuned",), config=f"{ENDPOINT}-b0-f7-0123abcd"))
    status, body, headers = call({"question": Q, "generator": "base"})  # no Retrieve queued: none may happen
    stubs.verify()
    assert status == 503 and body["field"] == "generator" and headers["Retry-After"] == str(RETRY_ABSENT_S)
    assert body["message"].startswith("generator 'base' has no model on stage 'dev' yet: compile the base model for Inferentia2")


def test_auto_falls_back_to_bedrock_while_no_model_is_deployed(wired):
    stubs = wired(endpoint=None, DEFAULT_GENERATOR="auto")
    not_found(stubs.control)
    power(stubs.ssm, "on")
    stubs.runtime.add_response("converse", {"output": {"message": {"role": "assistant", "content": [{"text": "From Bedrock."}]}},
                                            "stopReason": "end_turn", "usage": {"inputTokens": 5, "outputTokens": 2, "totalTokens": 7},
                                            "metrics": {"latencyMs": 1}}, None)
    status, body, _ = call({"question": Q, "mode": "prompt"})
    stubs.verify()
    assert status == 200 and (body["generator"], body["model"], body["model_version"]) == ("bedrock", "amazon.nova-lite-v1:0", None)


@pytest.mark.parametrize("role, variant", [("finetuned", "finetuned"), ("base", "base")])
def test_each_role_is_invoked_on_its_own_variant(wired, role, variant):
    stubs = wired(endpoint=described())
    stubs.sagemaker.add_response(
        "invoke_endpoint", endpoint_response("Yearly."),
        {"EndpointName": ENDPOINT, "TargetVariant": variant, "ContentType": "application/json", "Accept": "application/json", "Body": _Any()},
    )
    status, body, _ = call({"question": Q, "mode": "prompt", "generator": role})
    stubs.verify()
    assert status == 200 and body["generator"] == role and body["model"] == f"sagemaker:{ENDPOINT}/{role}"
    assert body["model_version"] == {"finetuned": "7", "base": "3"}[role]


def test_a_variant_gone_since_the_cached_reading_is_503_with_the_fresh_reason(wired):
    stubs = wired(endpoint=described())
    client_error(stubs.sagemaker, "invoke_endpoint", "ValidationError", 400)  # e.g. the endpoint was switched off meanwhile
    not_found(stubs.control)
    power(stubs.ssm, "off")
    status, body, headers = call({"question": Q, "mode": "prompt"})
    stubs.verify()
    assert status == 503 and "is switched off" in body["message"] and headers["Retry-After"] == str(RETRY_ABSENT_S)


def test_health_reads_the_endpoint_once_for_every_generator(wired):
    stubs = wired(endpoint=None, DEFAULT_GENERATOR="auto")
    not_found(stubs.control)
    power(stubs.ssm, "off")
    status, body, _ = call(method="GET", resource="/health")
    stubs.verify()
    assert status == 200 and body["default_generator"] == "bedrock" and body["default_generator_setting"] == "auto"
    assert [body["generators"][name]["available"] for name in ("finetuned", "base", "bedrock")] == [False, False, True]
    assert all("switched off" in body["generators"][name]["reason"] for name in ("finetuned", "base"))


class _Any:
    def __eq__(self, other):
        return isinstance(json.loads(other), dict)


def test_the_endpoint_state_is_shared_by_both_roles():
    s = settings()
    clients, _ = make_clients(s)
    backend = aws_backend.build(s, clients)
    assert backend.generators["finetuned"].state is backend.generators["base"].state
    assert list(backend.generators) == ["finetuned", "base", "bedrock"]  # the order of `auto`


def test_a_configured_default_that_is_not_available_is_503_and_health_says_none(wired):
    stubs = wired(endpoint=None, DEFAULT_GENERATOR="finetuned")
    not_found(stubs.control)
    power(stubs.ssm, "off")
    assert call(method="GET", resource="/health")[1]["default_generator"] is None
    status, body, _ = call({"question": Q, "mode": "prompt"})  # cached reading: no second DescribeEndpoint
    stubs.verify()
    assert status == 503 and "switched off" in body["message"]


def test_every_how_to_command_in_a_503_is_one_the_operator_scripts_accept():
    """The 503 messages name real commands: each parses with its script's own argument parser."""
    import importlib.util
    import shlex

    from query.aws_backend import HOW_TO_DEPLOY, POWER_ON_COMMAND

    root = Path(__file__).resolve().parents[1]
    commands = [POWER_ON_COMMAND.format(stage="dev"), *(text.format(stage="dev") for text in HOW_TO_DEPLOY.values())]
    checked = 0
    for text in commands:
        words = shlex.split(text.replace("<training data prefix>/", "datasets/v1/"))
        start = next(i for i, word in enumerate(words) if word.startswith("scripts/"))
        end = next((i for i, word in enumerate(words[start:], start) if word.startswith("(")), len(words))
        script, argv = root / words[start], words[start + 1:end]
        spec = importlib.util.spec_from_file_location(f"how_to_{script.stem}", script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.parser().parse_args(argv)  # SystemExit (exit 2) if the command drifted from the script
        checked += 1
    assert checked == 3
