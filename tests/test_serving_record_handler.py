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


@pytest.mark.parametrize("parameters", [{}, {"rag/dev/x": "none"}, {"/rag/dev/x": ""}, "none"])
def test_malformed_properties_fail_cleanly(ssm, parameters):
    request = event("Create")
    request["ResourceProperties"]["Parameters"] = parameters
    status, response = run(request, ssm)
    assert status == "FAILED" and "RequestError" in response["Reason"]


def test_more_than_ten_names_are_deleted_in_batches(ssm):
    names = [f"/rag/dev/p{i:02d}" for i in range(12)]
    with Stubber(ssm) as stub:
        stub.add_response("delete_parameters", {"DeletedParameters": names[:10]}, {"Names": names[:10]})
        stub.add_response("delete_parameters", {"DeletedParameters": names[10:]}, {"Names": names[10:]})
        handler.delete_all(ssm, names)
        stub.assert_no_pending_responses()
