"""lambda/serving_record: create the record's parameters if missing, never overwrite, delete by stage policy.

SSM is botocore's Stubber (every request checked against the service model); the response to
CloudFormation's pre-signed URL is captured instead of sent.
"""

from __future__ import annotations

import json

import botocore.session
import pytest
from botocore.stub import Stubber

from serving_record import handler

PARAMETERS = {"/rag/dev/serving/base": "none", "/rag/dev/serving/finetuned": "none", "/rag/dev/serving/endpoint": "on"}


def event(request_type: str, *, retain: str = "false", **extra) -> dict:
    return {
        "RequestType": request_type, "ResponseURL": "https://cloudformation-custom-resource-response.example/abc?sig=1",
        "StackId": "arn:aws:cloudformation:us-east-1:111122223333:stack/RagDev-Training/uuid", "RequestId": "req-1",
        "LogicalResourceId": "ServingRecordParameters", "ResourceType": "Custom::ServingRecord",
        "ResourceProperties": {"ServiceToken": "arn:aws:lambda:...", "Parameters": dict(PARAMETERS), "RetainOnDelete": retain}, **extra,
    }


_CORE = botocore.session.get_session()  # one botocore session: its loader caches the service model


@pytest.fixture
def ssm():
    return _CORE.create_client("ssm", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")


def put(name: str) -> dict:
    return {"Name": name, "Value": PARAMETERS[name], "Type": "String", "Overwrite": False, "Tier": "Standard", "Description": handler.DESCRIPTION}


def run(request: dict, ssm) -> tuple[str, dict]:
    sent = []
    status = handler.run(request, ssm, send=sent.append)
    (response,) = sent
    assert response.get_method() == "PUT" and response.full_url == request["ResponseURL"]
    return status, json.loads(response.data)


@pytest.mark.parametrize("request_type", ["Create", "Update"])
def test_missing_parameters_are_created_and_existing_ones_are_left_alone(ssm, request_type):
    with Stubber(ssm) as stub:
        stub.add_response("put_parameter", {"Version": 1, "Tier": "Standard"}, put("/rag/dev/serving/base"))
        stub.add_client_error("put_parameter", "ParameterAlreadyExists", "exists", expected_params=put("/rag/dev/serving/endpoint"))
        stub.add_client_error("put_parameter", "ParameterAlreadyExists", "exists", expected_params=put("/rag/dev/serving/finetuned"))
        status, response = run(event(request_type, PhysicalResourceId="/rag/dev/serving/") if request_type == "Update" else event(request_type), ssm)
        stub.assert_no_pending_responses()
    assert status == "SUCCESS"
    assert response["Status"] == "SUCCESS" and response["Data"] == {"Created": "/rag/dev/serving/base"}
    assert response["PhysicalResourceId"] == "/rag/dev/serving/"
    assert (response["StackId"], response["RequestId"], response["LogicalResourceId"]) == ("arn:aws:cloudformation:us-east-1:111122223333:stack/RagDev-Training/uuid", "req-1", "ServingRecordParameters")


def test_delete_removes_the_record_of_a_stage_that_does_not_retain_data(ssm):
    with Stubber(ssm) as stub:
        stub.add_response("delete_parameters", {"DeletedParameters": sorted(PARAMETERS)}, {"Names": sorted(PARAMETERS)})
        status, response = run(event("Delete", PhysicalResourceId="/rag/dev/serving/"), ssm)
        stub.assert_no_pending_responses()
    assert status == "SUCCESS" and response["Status"] == "SUCCESS"


def test_delete_keeps_the_record_of_a_stage_that_retains_data(ssm):
    with Stubber(ssm) as stub:  # no call expected
        status, _ = run(event("Delete", retain="true", PhysicalResourceId="/rag/dev/serving/"), ssm)
        stub.assert_no_pending_responses()
    assert status == "SUCCESS"


def test_any_failure_is_reported_to_cloudformation_instead_of_hanging_the_stack(ssm):
    with Stubber(ssm) as stub:
        stub.add_client_error("put_parameter", "AccessDeniedException", "not allowed", expected_params=put("/rag/dev/serving/base"))
        status, response = run(event("Create"), ssm)
    assert status == "FAILED" and response["Status"] == "FAILED" and "not allowed" in response["Reason"]


@pytest.mark.parametrize("parameters, reason", [
    ({}, "RequestError: Parameters must be a non-empty object {name: initial value}"),
    ("none", "RequestError: Parameters must be a non-empty object {name: initial value}"),
    ({"rag/dev/x": "none"}, "RequestError: parameter 'rag/dev/x': the name must start with '/' and the initial value be a non-empty string"),
    ({"/rag/dev/x": ""}, "RequestError: parameter '/rag/dev/x': the name must start with '/'"),
])
def test_malformed_properties_fail_with_a_reason_and_an_id_for_the_delete_that_follows(ssm, parameters, reason):
    request = event("Create")
    request["ResourceProperties"]["Parameters"] = parameters
    status, response = run(request, ssm)  # the Stubber has no answer: no SSM call may be made
    assert status == "FAILED" and response["Status"] == "FAILED" and response["Reason"].startswith(reason)
    expected_id = "/rag/dev/" if parameters == {"/rag/dev/x": ""} else "serving-record"
    assert response["PhysicalResourceId"] == expected_id  # never a letter of a string, never empty


def test_a_request_without_properties_or_of_an_unknown_type_fails_with_its_reason(ssm):
    request = event("Create")
    del request["ResourceProperties"]
    status, response = run(request, ssm)
    assert status == "FAILED" and response["Reason"].startswith("RequestError: Parameters must be a non-empty object")
    assert response["PhysicalResourceId"] == "serving-record"
    status, response = run(event("Rename", PhysicalResourceId="/rag/dev/serving/"), ssm)
    assert status == "FAILED" and response["Reason"] == "RequestError: unknown RequestType 'Rename'"


def test_an_update_keeps_the_id_cloudformation_has_and_reports_every_parameter_it_created(ssm):
    with Stubber(ssm) as stub:
        for name in sorted(PARAMETERS):  # all three were deleted by hand: each comes back
            stub.add_response("put_parameter", {"Version": 1, "Tier": "Standard"}, put(name))
        status, response = run(event("Update", PhysicalResourceId="serving-record-v1"), ssm)
        stub.assert_no_pending_responses()
    assert status == "SUCCESS" and response["Reason"] == "ok" and response["PhysicalResourceId"] == "serving-record-v1"
    assert response["Data"] == {"Created": ",".join(sorted(PARAMETERS))}


def test_a_long_failure_reason_is_cut_to_1000_characters(ssm):
    with Stubber(ssm) as stub:
        stub.add_client_error("put_parameter", "InternalServerError", "x" * 3000, expected_params=put("/rag/dev/serving/base"))
        status, response = run(event("Create"), ssm)
    assert status == "FAILED" and len(response["Reason"]) == 1000 and response["Reason"].startswith("InternalServerError: An error occurred")


@pytest.mark.parametrize("retain, deleted", [(None, True), ("false", True), ("True", False), ("true", False)])
def test_delete_removes_the_record_unless_the_stage_retains_data(ssm, retain, deleted):
    request = event("Delete", PhysicalResourceId="/rag/dev/serving/")
    if retain is None:
        del request["ResourceProperties"]["RetainOnDelete"]
    else:
        request["ResourceProperties"]["RetainOnDelete"] = retain
    with Stubber(ssm) as stub:
        if deleted:
            stub.add_response("delete_parameters", {"DeletedParameters": sorted(PARAMETERS)}, {"Names": sorted(PARAMETERS)})
        status, response = run(request, ssm)
        stub.assert_no_pending_responses()
    assert status == "SUCCESS" and response["Data"] == {}


class _ResponseUrl:
    """A local stand-in for CloudFormation's pre-signed S3 URL: records each PUT, or never answers."""

    def __init__(self, answer: bool = True):
        import http.server
        import threading

        self.requests: list[dict] = []
        self.release = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_PUT(self):
                outer.requests.append({"path": self.path, "headers": dict(self.headers),
                                       "body": json.loads(self.rfile.read(int(self.headers["Content-Length"])))})
                if answer:
                    self.send_response(200)
                    self.end_headers()
                else:
                    outer.release.wait(5)

            def log_message(self, *args):
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.handle_request, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/stack/req?X-Amz-Signature=abc"

    def close(self):
        self.release.set()
        self.thread.join(5)
        self.server.server_close()


def test_the_response_is_put_to_the_url_as_its_signature_expects():
    url = _ResponseUrl()
    handler.respond({**event("Create"), "ResponseURL": url.url}, "SUCCESS", "ok", {"Created": ""}, send=handler._send)
    url.close()
    (request,) = url.requests
    assert request["path"] == "/stack/req?X-Amz-Signature=abc"
    assert request["headers"]["Content-Type"] == ""  # signed without one: urllib's form type would break the signature
    assert int(request["headers"]["Content-Length"]) == len(json.dumps(request["body"]))
    assert request["body"]["Status"] == "SUCCESS" and request["body"]["PhysicalResourceId"] == "/rag/dev/serving/"


def test_a_response_url_that_never_answers_times_out(monkeypatch):
    import time

    monkeypatch.setattr(handler, "RESPONSE_TIMEOUT_S", 0.3)
    url = _ResponseUrl(answer=False)
    started = time.monotonic()
    with pytest.raises(OSError):  # TimeoutError, or URLError wrapping it
        handler.respond({**event("Create"), "ResponseURL": url.url}, "SUCCESS", "ok", {}, send=handler._send)
    assert time.monotonic() - started < 1.5
    url.close()


def test_more_than_ten_names_are_deleted_in_batches(ssm):
    names = [f"/rag/dev/p{i:02d}" for i in range(12)]
    with Stubber(ssm) as stub:
        stub.add_response("delete_parameters", {"DeletedParameters": names[:10]}, {"Names": names[:10]})
        stub.add_response("delete_parameters", {"DeletedParameters": names[10:]}, {"Names": names[10:]})
        handler.delete_all(ssm, names)
        stub.assert_no_pending_responses()
